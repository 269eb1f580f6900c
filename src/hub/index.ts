import {DEFAULT_RETRY_POLICY, type RetryPolicy} from '../transfer/retry-policy.js'
import {FailoverHub} from './failover-hub.js'
import {resolveEndpoints, resolveToken} from './modelscope/endpoint.js'
import {ModelScopeHub} from './modelscope/modelscope-hub.js'
import type {Hub} from './types.js'

export interface HubOptions {
  /** One endpoint, or several in order of preference (`--endpoint` repeated). */
  endpoint?: string | string[]
  token?: string
  timeoutMs: number
  maxRetryAfterMs: number
  /** With several endpoints: the listing's retries on each before the next (the file downloads have their own). */
  policy?: RetryPolicy
  /** With several endpoints: the longest wait for a first reply from an endpoint that has not answered yet. */
  connectTimeoutMs?: number
}

/** The one place that picks a hub implementation. */
export function createHub(opts: HubOptions): Hub {
  const token = resolveToken(opts.token)
  const at = (endpoint: string, timeoutMs: number) => new ModelScopeHub({endpoint, token, timeoutMs, maxRetryAfterMs: opts.maxRetryAfterMs})
  const endpoints = resolveEndpoints(opts.endpoint)
  if (endpoints.length === 1) return at(endpoints[0], opts.timeoutMs)
  const firstContactMs = Math.min(opts.timeoutMs, opts.connectTimeoutMs ?? opts.timeoutMs)
  return new FailoverHub(endpoints.map((e) => ({hub: at(e, opts.timeoutMs), firstContact: at(e, firstContactMs)})), opts.policy ?? DEFAULT_RETRY_POLICY)
}
