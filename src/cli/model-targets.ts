import path from 'node:path'

import {MsrError} from '../errors.js'
import {defaultCacheRoot, STATE_DIR_NAME} from '../store/layout.js'
import {type ModelDirs, findModelDirs} from '../store/find-models.js'
import {locationFrom} from './flags.js'

export interface Targets {
  models: ModelDirs[]
  /** Where we looked, for a "nothing found in …" line. */
  searched: string
}

/**
 * The models status and clean act on: the one named (placed by the location flags as pull places
 * it), the one in --local-dir, or every model with ms-resume state in --cache-dir or the cache.
 */
export async function targetsFrom(model: string | undefined, flags: {'local-dir'?: string; 'cache-dir'?: string}): Promise<Targets> {
  if (model) {
    const loc = locationFrom(model, flags)
    return {models: [{modelDir: loc.modelDir, stateDir: loc.stateDir, dirId: model}], searched: loc.modelDir}
  }
  if (flags['local-dir'] && flags['cache-dir']) {
    throw new MsrError('E_USAGE', '--local-dir and --cache-dir cannot be used together.', {hint: 'Pick one of them.'})
  }
  if (flags['local-dir']) {
    const modelDir = path.resolve(flags['local-dir'])
    return {models: [{modelDir, stateDir: path.join(modelDir, STATE_DIR_NAME), dirId: path.basename(modelDir)}], searched: modelDir}
  }
  const root = flags['cache-dir'] ? path.resolve(flags['cache-dir']) : path.join(defaultCacheRoot(), 'models')
  return {models: await findModelDirs(root), searched: root}
}
