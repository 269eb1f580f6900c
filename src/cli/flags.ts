import * as Flags from '@oclif/core/flags'

import {knobs} from '../config.js'
import {MsrError} from '../errors.js'
import {createHub} from '../hub/index.js'
import type {Hub} from '../hub/types.js'
import {CHECK_LEVELS, type CheckLevel} from '../integrity/check.js'
import {type ModelLocation, resolveLocation} from '../store/layout.js'
import {DEFAULT_RETRY_POLICY, type RetryPolicy} from '../transfer/retry-policy.js'

/** Where a model lives: shared by pull, verify, manifest, status and clean. */
export const locationFlags = {
  'local-dir': Flags.string({description: 'Put files straight into DIR/<path> (state in DIR/.ms-resume).', helpValue: 'DIR'}),
  'cache-dir': Flags.string({description: 'Use DIR/<owner>/<name> like the official client\'s --cache_dir.', helpValue: 'DIR'}),
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

export function locationFrom(modelId: string, flags: {'local-dir'?: string; 'cache-dir'?: string}): ModelLocation {
  return resolveLocation(modelId, {localDir: flags['local-dir'], cacheDir: flags['cache-dir']})
}

export function hubFrom(flags: {endpoint?: string[]; token?: string; timeout: number; retries: number}): Hub {
  const policy = retryPolicyFrom(flags)
  return createHub({
    endpoint: flags.endpoint, token: flags.token, timeoutMs: flags.timeout * 1000, maxRetryAfterMs: policy.maxRetryAfterMs,
    policy, connectTimeoutMs: knobs.connectTimeoutMs,
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
