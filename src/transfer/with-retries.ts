import {type MsrError, isMsrError} from '../errors.js'
import type {EventSink} from '../events.js'
import {sleep} from './rate-limiter.js'
import {type RetryPolicy, nextDelayMs} from './retry-policy.js'

/**
 * Retries an idempotent call (a listing, a revision lookup) on retryable errors with the shared
 * backoff policy. Body transfers have their own rule (RangeFetcher: a retry that brought bytes is
 * progress), built on the same policy.
 */
export async function withRetries<T>(fn: () => Promise<T>, policy: RetryPolicy, signal: AbortSignal | undefined, emit?: EventSink, giveUpNow?: (error: MsrError) => boolean): Promise<T> {
  for (let attempt = 1; ; attempt++) {
    try {
      return await fn()
    } catch (error) {
      if (signal?.aborted || !isMsrError(error) || !error.retryable || attempt > policy.maxRetries || giveUpNow?.(error)) throw error
      const delayMs = nextDelayMs(attempt, policy, error.retryAfterMs)
      emit?.({type: 'retry', path: '', attempt, maxRetries: policy.maxRetries, delayMs, reason: error.message, code: error.code})
      await sleep(delayMs, signal)
    }
  }
}
