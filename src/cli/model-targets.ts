import path from 'node:path'

import {MsrError} from '../errors.js'
import {defaultCacheRoot, kindDir, STATE_DIR_NAME} from '../store/layout.js'
import {type ModelDirs, findModelDirs} from '../store/find-models.js'
import {type RepoRef, locationFrom} from './flags.js'

export interface Targets {
  models: ModelDirs[]
  /** Where we looked, for a "nothing found in …" line. */
  searched: string
}

/**
 * The models status and clean act on: the one named (a model id or --dataset, placed by the
 * location flags as pull places it), the one in --local-dir, or every model and dataset with
 * ms-resume state in --cache-dir or the cache (its `models/` and `datasets/`).
 */
export async function targetsFrom(repo: RepoRef | undefined, flags: {'local-dir'?: string; 'cache-dir'?: string}): Promise<Targets> {
  if (repo) {
    const loc = locationFrom(repo.id, flags, repo.kind)
    return {models: [{modelDir: loc.modelDir, stateDir: loc.stateDir, dirId: repo.id, repoKind: repo.kind}], searched: loc.modelDir}
  }
  if (flags['local-dir'] && flags['cache-dir']) {
    throw new MsrError('E_USAGE', '--local-dir and --cache-dir cannot be used together.', {hint: 'Pick one of them.'})
  }
  if (flags['local-dir']) {
    const modelDir = path.resolve(flags['local-dir'])
    return {models: [{modelDir, stateDir: path.join(modelDir, STATE_DIR_NAME), dirId: path.basename(modelDir)}], searched: modelDir}
  }
  if (flags['cache-dir']) {
    const root = path.resolve(flags['cache-dir'])
    return {models: await findModelDirs(root), searched: root}
  }
  const root = defaultCacheRoot()
  const models = await findModelDirs(path.join(root, kindDir('model')), 'model')
  const datasets = await findModelDirs(path.join(root, kindDir('dataset')), 'dataset')
  return {models: [...models, ...datasets], searched: root}
}
