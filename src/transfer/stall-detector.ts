/**
 * Decides that a connection is dead: no body byte for `idleMs`, or less than `minBytesPerSec` over a
 * window of `idleMs`. Only time in which the network owes us bytes counts: while we hold the
 * connection ourselves (a rate-limiter or disk wait, which can be far longer than --timeout) the
 * clock stops. Counting those waits killed healthy connections mid-body, and the late steps of
 * the killed reader then corrupted the retry (issue 10).
 */
export type Stall = {kind: 'idle'; idleMs: number} | {kind: 'slow'; bytesPerSec: number}

export class StallDetector {
  private timer: NodeJS.Timeout | undefined
  private holds = 0
  private stopped = false
  /** Active (not held) time and bytes in the current speed window. */
  private windowActiveMs = 0
  private windowBytes = 0
  private activeSince: number

  constructor(
    private readonly opts: {idleMs: number; minBytesPerSec: number; now?: () => number},
    private readonly onStall: (stall: Stall) => void,
  ) {
    this.activeSince = this.now()
    this.arm()
  }

  private now(): number {
    return this.opts.now ? this.opts.now() : performance.now()
  }

  /** Body bytes arrived. */
  received(bytes: number): void {
    if (this.stopped) return
    this.windowBytes += bytes
    if (this.holds > 0) return
    const now = this.now()
    const active = this.windowActiveMs + (now - this.activeSince)
    if (active >= this.opts.idleMs) {
      const bytesPerSec = this.windowBytes / (active / 1000)
      if (bytesPerSec < this.opts.minBytesPerSec) return this.fire({kind: 'slow', bytesPerSec})
      this.windowBytes = 0
      this.windowActiveMs = 0
      this.activeSince = now
    }
    // refresh(), not a new timer: this runs for every socket read (16,000 times per GiB).
    if (this.timer) this.timer.refresh()
    else this.arm()
  }

  /** We stop reading for our own reasons (until release()): the clocks stop. */
  hold(): void {
    if (this.stopped) return
    if (this.holds++ === 0) {
      this.windowActiveMs += this.now() - this.activeSince
      this.clear()
    }
  }

  release(): void {
    if (this.stopped || this.holds === 0) return
    if (--this.holds === 0) {
      this.activeSince = this.now()
      this.arm()
    }
  }

  stop(): void {
    this.stopped = true
    this.clear()
  }

  private fire(stall: Stall): void {
    this.stop()
    this.onStall(stall)
  }

  private arm(): void {
    this.clear()
    this.timer = setTimeout(() => this.fire({kind: 'idle', idleMs: this.opts.idleMs}), this.opts.idleMs)
  }

  private clear(): void {
    if (this.timer) clearTimeout(this.timer)
    this.timer = undefined
  }
}
