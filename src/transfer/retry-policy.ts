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

const DAY = '(?:Mon|Tue|Wed|Thu|Fri|Sat|Sun)'
const LONG_DAY = '(?:Monday|Tuesday|Wednesday|Thursday|Friday|Saturday|Sunday)'
const MONTH = '(?:Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|Sep|Oct|Nov|Dec)'
const TIME = '\\d{2}:\\d{2}:\\d{2}'
/** RFC 9110 §5.6.7: IMF-fixdate, obsolete RFC 850 date, asctime. */
const HTTP_DATE = new RegExp(
  `^(?:${DAY}, \\d{2} ${MONTH} \\d{4} ${TIME} GMT|${LONG_DAY}, \\d{2}-${MONTH}-\\d{2} ${TIME} GMT|${DAY} ${MONTH} [ \\d]\\d ${TIME} \\d{4})$`,
)

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
    // Too many digits for a double is still "very long": capped below, not ignored.
    ms = Number(trimmed) * 1000
  } else {
    // Only the three HTTP-date forms: V8's Date.parse takes junk like "soon 12" as a year in the
    // past, which would turn a garbled header into "retry at once" instead of our backoff.
    if (!HTTP_DATE.test(trimmed)) return undefined
    const at = Date.parse(trimmed)
    if (Number.isNaN(at)) return undefined
    ms = at - nowMs
  }
  if (Number.isNaN(ms)) return undefined
  return Math.min(Math.max(0, ms), capMs)
}

/** Delay for the next attempt: the server's word when it gave one, our backoff otherwise. */
export function nextDelayMs(attempt: number, policy: RetryPolicy, retryAfterMs?: number, random?: () => number): number {
  if (retryAfterMs !== undefined) return Math.min(retryAfterMs, policy.maxRetryAfterMs)
  return backoffDelayMs(attempt, policy, random)
}
