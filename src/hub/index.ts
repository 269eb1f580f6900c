import {resolveEndpoint, resolveToken} from './modelscope/endpoint.js'
import {ModelScopeHub} from './modelscope/modelscope-hub.js'
import type {RetryPolicy} from '../transfer/retry-policy.js'
import type {Hub, RepoKind} from './types.js'

/** The one place that picks a hub implementation. */
export function createHub(opts: {endpoint?: string; token?: string; timeoutMs: number; maxRetryAfterMs: number; repoKind?: RepoKind; policy?: RetryPolicy}): Hub {
  return new ModelScopeHub({
    endpoint: resolveEndpoint(opts.endpoint),
    token: resolveToken(opts.token),
    timeoutMs: opts.timeoutMs,
    maxRetryAfterMs: opts.maxRetryAfterMs,
    repoKind: opts.repoKind ?? 'model',
    policy: opts.policy,
  })
}
