/** Retry timing, pure: exponential backoff with full jitter, capped, and Retry-After honoured within a cap. */

export interface RetryPolicy {
  /** Attempts without progress before giving up; progress resets the count. */
  maxRetries: number
  baseDelayMs: number
  maxDelayMs: number
  /** The longest a server's Retry-After may make us wait for one attempt. */
  maxRetryAfterMs: number
}

export const DEFAULT_RETRY_POLICY: RetryPolicy = {
  maxRetries: 5,
  baseDelayMs: 500,
  maxDelayMs: 30_000,
  maxRetryAfterMs: 120_000,
}

/** Delay before retry number `attempt` (1-based). `random` is injectable for tests. */
export function backoffDelayMs(attempt: number, policy: RetryPolicy, random: () => number = Math.random): number {
  const ceiling = Math.min(policy.maxDelayMs, policy.baseDelayMs * 2 ** Math.max(0, attempt - 1))
  // Half fixed, half jitter: spreads clients that failed together without collapsing to zero.
  return Math.round(ceiling / 2 + random() * (ceiling / 2))
}

/**
 * Retry-After is seconds or an HTTP date. Junk is ignored (undefined), the past means now, and a
 * huge value is capped so a confused server cannot park the download for days.
 */
export function parseRetryAfterMs(value: string | undefined, nowMs: number, capMs: number): number | undefined {
  if (typeof value !== 'string') return undefined
  const trimmed = value.trim()
  if (trimmed === '') return undefined
  let ms: number
  if (/^\d+$/.test(trimmed)) {
    ms = Number(trimmed) * 1000
  } else {
    const at = Date.parse(trimmed)
    if (Number.isNaN(at) || !/[a-z]/i.test(trimmed)) return undefined
    ms = at - nowMs
  }
  if (!Number.isFinite(ms)) return undefined
  return Math.min(Math.max(0, ms), capMs)
}

/** Delay for the next attempt: the server's word when it gave one, our backoff otherwise. */
export function nextDelayMs(attempt: number, policy: RetryPolicy, retryAfterMs?: number, random?: () => number): number {
  if (retryAfterMs !== undefined) return Math.min(retryAfterMs, policy.maxRetryAfterMs)
  return backoffDelayMs(attempt, policy, random)
}
