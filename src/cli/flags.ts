import * as Flags from '@oclif/core/flags'

import {knobs} from '../config.js'
import {MsrError} from '../errors.js'
import {createHub} from '../hub/index.js'
import type {Hub} from '../hub/types.js'
import {CHECK_LEVELS, type CheckLevel} from '../integrity/check.js'
import {type ModelLocation, type RepoKind, resolveLocation} from '../store/layout.js'
import {DEFAULT_RETRY_POLICY, type RetryPolicy} from '../transfer/retry-policy.js'

/** Where a model lives: shared by pull, verify, manifest, status and clean. */
export const locationFlags = {
  'local-dir': Flags.string({description: 'Put files straight into DIR/<path> (state in DIR/.ms-resume).', helpValue: 'DIR'}),
  'cache-dir': Flags.string({description: 'Use DIR/<owner>/<name> like the official client\'s --cache_dir.', helpValue: 'DIR'}),
}

/** A dataset instead of a model, its id as the flag's value (as the official CLI's `--dataset`). */
export const datasetFlag = {
  dataset: Flags.string({description: 'Act on this dataset (OWNER/NAME) instead of a model, as the official CLI\'s --dataset; it lives in <cache>/datasets/<owner>/<name with . as ___>.', helpValue: 'OWNER/NAME'}),
}

/** What a command acts on: a model or a dataset, by id. */
export interface RepoRef {
  id: string
  kind: RepoKind
}

/** The model argument or --dataset (never both); undefined when neither is given. */
export function repoFrom(model: string | undefined, dataset: string | undefined): RepoRef | undefined {
  if (model !== undefined && dataset !== undefined) {
    throw new MsrError('E_USAGE', `Give a model id or --dataset, not both (got ${JSON.stringify(model)} and --dataset ${JSON.stringify(dataset)}).`, {
      hint: 'A model: ms-resume COMMAND OWNER/NAME. A dataset: ms-resume COMMAND --dataset OWNER/NAME.',
    })
  }
  if (dataset !== undefined) return {id: dataset, kind: 'dataset'}
  return model === undefined ? undefined : {id: model, kind: 'model'}
}

/** Talking to the hub. */
export const hubFlags = {
  endpoint: Flags.string({
    description: 'Hub base URL [env: MODELSCOPE_ENDPOINT, or MODELSCOPE_DOMAIN as a host] (default https://www.modelscope.cn). Repeat it for fallbacks, in order: a dead endpoint hands over to the next.',
    helpValue: 'URL', multiple: true, multipleNonGreedy: true,
  }),
  token: Flags.string({description: 'Access token for private models [env: MODELSCOPE_API_TOKEN]. Sent only to the endpoints named (never to a CDN they redirect to), never stored or printed.', helpValue: 'TOKEN'}),
  revision: Flags.string({description: 'Branch or tag.', default: 'master'}),
  timeout: Flags.integer({description: 'Idle-read timeout in seconds: a connection that sends nothing for this long is retried.', default: 30, min: 1}),
  retries: Flags.integer({description: 'Retries of a failing transfer without progress (progress resets the count).', default: DEFAULT_RETRY_POLICY.maxRetries, min: 0}),
}

export function locationFrom(modelId: string, flags: {'local-dir'?: string; 'cache-dir'?: string}, repoKind: RepoKind = 'model'): ModelLocation {
  return resolveLocation(modelId, {localDir: flags['local-dir'], cacheDir: flags['cache-dir'], repoKind})
}

export function hubFrom(flags: {endpoint?: string[]; token?: string; timeout: number; retries: number}, repoKind: RepoKind = 'model'): Hub {
  const policy = retryPolicyFrom(flags)
  return createHub({
    endpoint: flags.endpoint, token: flags.token, timeoutMs: flags.timeout * 1000, maxRetryAfterMs: policy.maxRetryAfterMs,
    policy, connectTimeoutMs: knobs.connectTimeoutMs, repoKind,
  })
}

export function retryPolicyFrom(flags: {retries: number}): RetryPolicy {
  // MS_RESUME_RETRY_BASE_MS shortens backoff in tests; it is not for everyday use.
  const base = knobs.retryBaseMs
  return {...DEFAULT_RETRY_POLICY, maxRetries: flags.retries, ...(base === undefined ? {} : {baseDelayMs: base, maxDelayMs: Math.max(base, 1) * 8})}
}

export function checkLevelFrom(flag: string | undefined): CheckLevel {
  if (flag) {
    if (!(CHECK_LEVELS as readonly string[]).includes(flag)) throw new MsrError('E_USAGE', `Unknown check level ${JSON.stringify(flag)}.`, {hint: `Use one of ${CHECK_LEVELS.join(', ')}.`})
    return flag as CheckLevel
  }
  // As for the official client: this variable asks for a full hash of files already present.
  return /^(1|true|yes|on)$/i.test(process.env.MODELSCOPE_ENABLE_DEFAULT_HASH_VALIDATION ?? '') ? 'full' : 'size'
}
