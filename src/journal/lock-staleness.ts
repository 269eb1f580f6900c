/**
 * When a model lock counts as left by a dead holder. Pure: the caller brings what it read and the
 * times; no clock is read here.
 *
 * A holder rewrites its heartbeat every `beatMs`; each rewrite changes the heartbeat's content (a
 * counter: the "fingerprint") and its mtime, which the filesystem sets (on NFS the server). A lock
 * is stale when both hold:
 * - its heartbeat is older than `staleMs` by the filesystem's clock (heartbeat mtime compared with
 *   a probe file's mtime: never Date.now() against a remote mtime, which is off by the skew
 *   between hosts), and
 * - this process saw the same fingerprint for at least `confirmMs` (longer than a beat plus the
 *   attribute cache of a network mount): a live holder whose mtime reads old through a cache, or
 *   was set back by hand, still changes its counter, and is never taken over.
 * And whatever the clocks say, a fingerprint unchanged for `staleMs + confirmMs` of this process's
 * own monotonic time is stale: a heartbeat stamped in the future (a lying server, a hand-set mtime)
 * never makes anyone wait forever.
 */
export interface LockTiming {
  staleMs: number
  beatMs: number
  confirmMs: number
}

/** 10 s: four or five missed heartbeats, far beyond a GC pause or a slow NFS write. */
export const DEFAULT_STALE_MS = 10_000
/** The FUSE attribute timeout (1 s) with room to spare. */
const CACHE_ALLOWANCE_MS = 1500

export function lockTiming(staleMs: number = DEFAULT_STALE_MS): LockTiming {
  const beatMs = Math.min(2000, Math.max(200, Math.floor(staleMs / 5)))
  return {staleMs, beatMs, confirmMs: beatMs + CACHE_ALLOWANCE_MS}
}

/**
 * `fresh`: leave it. `suspect`: old by the filesystem's clock, not yet confirmed (keep looking,
 * even past --lock-wait, until confirmed or refreshed). `stale`: take it over.
 */
export type LockVerdict = 'fresh' | 'suspect' | 'stale'

export class StalenessJudge {
  private seen?: {fingerprint: string; sinceMs: number}

  constructor(private readonly timing: LockTiming) {}

  /**
   * @param fingerprint what the holder last wrote (changes on every heartbeat)
   * @param heartbeatAgeMs heartbeat age by the filesystem's clock; undefined when it cannot be read
   * @param nowMs this process's monotonic clock
   */
  observe(fingerprint: string, heartbeatAgeMs: number | undefined, nowMs: number): LockVerdict {
    if (this.seen?.fingerprint !== fingerprint) this.seen = {fingerprint, sinceMs: nowMs}
    const unchangedMs = nowMs - this.seen.sinceMs
    if (unchangedMs >= this.timing.staleMs + this.timing.confirmMs) return 'stale'
    if (heartbeatAgeMs !== undefined && heartbeatAgeMs > this.timing.staleMs) {
      return unchangedMs >= this.timing.confirmMs ? 'stale' : 'suspect'
    }
    return 'fresh'
  }
}

/** MS_RESUME_LOCK_STALE_MS (tests, or a slow filesystem) or the default; junk is ignored. */
export function staleMsFromEnv(env: NodeJS.ProcessEnv = process.env): number {
  const raw = env.MS_RESUME_LOCK_STALE_MS
  const n = Number(raw)
  return raw && Number.isSafeInteger(n) && n >= 1000 && n <= 3_600_000 ? n : DEFAULT_STALE_MS
}
