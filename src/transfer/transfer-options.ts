import type {MsrError} from '../errors.js'
import type {EventSink} from '../events.js'
import type {Hub} from '../hub/types.js'
import type {CheckLevel} from '../integrity/check.js'
import type {Journal} from '../journal/journal.js'
import type {RateLimiter} from './rate-limiter.js'
import type {RetryPolicy} from './retry-policy.js'

export interface TransferOptions {
  hub: Hub
  modelId: string
  revision: string
  journal: Journal
  emit: EventSink
  signal: AbortSignal
  policy: RetryPolicy
  /** Parallel ranged connections for this file (the most, when adaptive). */
  connections: number
  /** Start with one connection and add more (up to `connections`) while each one is slow. */
  adaptiveConnections?: boolean
  limiter?: RateLimiter
  /** No body byte for this long (our own waits excluded): reconnect. */
  idleTimeoutMs: number
  /** Less than this many bytes/s over one idle-timeout window: reconnect. */
  minBytesPerSec: number
  checkpointIntervalMs: number
  checkpointBytes: number
  /** `pull --check`: at `fast`/`full` a resume reads back every chunk its saved hash state covers. */
  check?: CheckLevel
  /**
   * Asked when the server names the file by another strong ETag than before: true when the hub's
   * listing still gives the same sha256 and size (a mirror or CDN with its own ETags: keep the
   * partial, the final SHA-256 decides); false when the file really changed.
   */
  listingUnchanged?: () => Promise<boolean>
  /**
   * Asked when a request failed before any reply (refused, TLS, no answer in time), with the count
   * of attempts without progress: true stops this file's download at once instead of spending the
   * retries (another endpoint is named: failover is quicker than backoff on a dead one).
   */
  giveUpNow?: (error: MsrError, failuresWithoutProgress: number) => boolean
}
