/** Something with a deadline (performance.now() time) and what happens when it passes. */
export interface Deadlined {
  deadline: number
  expire(): void
}

/** A watch is looked at this often at most; a tenth of the shortest timeout when that is shorter. */
const CHECK_MS = 250

/**
 * Deadlines of many things in flight, enforced by one interval instead of a timer each (a timer per
 * request or per small file was an allocation and two timer-list updates, which cost more than the
 * file's hash). An expired item is taken out, then told. A deadline fires up to one check late,
 * never early. The interval runs only while something is watched, and holds nothing open.
 */
export class DeadlineWatch<T extends Deadlined> {
  private readonly items = new Set<T>()
  private timer: {handle: NodeJS.Timeout; everyMs: number} | undefined

  /** Watches `item` (its deadline already set); `timeoutMs` sets how often to look. */
  add(item: T, timeoutMs: number): void {
    this.items.add(item)
    const everyMs = Math.max(1, Math.min(CHECK_MS, Math.floor(timeoutMs / 10)))
    if (this.timer && this.timer.everyMs <= everyMs) return
    clearInterval(this.timer?.handle)
    this.timer = {handle: setInterval(() => this.check(), everyMs).unref(), everyMs}
  }

  delete(item: T): void {
    this.items.delete(item)
  }

  private check(): void {
    const now = performance.now()
    for (const item of this.items) {
      if (now < item.deadline) continue
      this.items.delete(item)
      item.expire()
    }
    if (this.items.size === 0) {
      clearInterval(this.timer?.handle)
      this.timer = undefined
    }
  }
}
