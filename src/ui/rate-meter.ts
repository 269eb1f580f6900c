/**
 * Speed over a sliding window. A mean since the start would hide a link that just died (and an
 * ETA computed from it would promise minutes while nothing arrives); the last second alone jitters.
 */
export class RateMeter {
  private samples: Array<{atMs: number; bytes: number}> = []
  private totalBytes = 0
  private firstAtMs: number | undefined

  constructor(private readonly windowMs = 5000) {}

  add(bytes: number, nowMs: number): void {
    if (bytes <= 0) return
    this.totalBytes += bytes
    this.firstAtMs ??= nowMs
    this.samples.push({atMs: nowMs, bytes})
    this.prune(nowMs)
  }

  /** Bytes per second over the window (0 when nothing arrived in it). */
  bytesPerSec(nowMs: number): number {
    this.prune(nowMs)
    if (this.samples.length === 0) return 0
    const bytes = this.samples.reduce((n, s) => n + s.bytes, 0)
    // A window that has only just started is measured over its real length, at least 1 s.
    const spanMs = Math.max(1000, Math.min(this.windowMs, nowMs - this.samples[0].atMs))
    return (bytes * 1000) / spanMs
  }

  /** Measured for a second at least: before that an ETA is noise (a 52-byte file says "180 h"). */
  warm(nowMs: number): boolean {
    return this.firstAtMs !== undefined && nowMs - this.firstAtMs >= 1000
  }

  get total(): number {
    return this.totalBytes
  }

  private prune(nowMs: number): void {
    while (this.samples.length > 0 && nowMs - this.samples[0].atMs > this.windowMs) this.samples.shift()
  }
}

/** Milliseconds until `remainingBytes` are in at `bytesPerSec`; undefined when unknown. */
export function etaMs(remainingBytes: number, bytesPerSec: number): number | undefined {
  if (remainingBytes <= 0) return 0
  if (!(bytesPerSec > 0)) return undefined
  return (remainingBytes / bytesPerSec) * 1000
}
