import {MsrError} from '../errors.js'

/** One token bucket shared by every connection of a run: `--max-speed` caps the sum. */
export class RateLimiter {
  private tokens: number
  private last = performance.now()
  private queue: Promise<void> = Promise.resolve()

  constructor(readonly bytesPerSec: number, readonly burstBytes = Math.max(64 * 1024, Math.floor(bytesPerSec / 10))) {
    this.tokens = 0
  }

  /** Resolves when `bytes` may pass; callers are served in order. */
  consume(bytes: number, signal?: AbortSignal): Promise<void> {
    const turn = this.queue.then(() => this.wait(bytes, signal))
    this.queue = turn.catch(() => {})
    return turn
  }

  private async wait(bytes: number, signal?: AbortSignal): Promise<void> {
    this.refill()
    this.tokens -= bytes
    if (this.tokens >= 0) return
    const ms = (-this.tokens / this.bytesPerSec) * 1000
    await sleep(ms, signal)
  }

  private refill(): void {
    const now = performance.now()
    this.tokens = Math.min(this.burstBytes, this.tokens + ((now - this.last) / 1000) * this.bytesPerSec)
    this.last = now
  }
}

export function sleep(ms: number, signal?: AbortSignal): Promise<void> {
  return new Promise((resolve, reject) => {
    if (signal?.aborted) return reject(abortError(signal))
    const timer = setTimeout(() => {
      signal?.removeEventListener('abort', onAbort)
      resolve()
    }, ms)
    const onAbort = () => {
      clearTimeout(timer)
      reject(abortError(signal!))
    }
    signal?.addEventListener('abort', onAbort, {once: true})
  })
}

export function abortError(signal: AbortSignal): Error {
  const reason = signal.reason
  if (reason instanceof Error) return reason
  return new MsrError('E_INTERRUPTED', 'Interrupted.', {hint: 'Run the same command again to resume.'})
}

const UNITS: Record<string, number> = {'': 1, B: 1, K: 1024, KB: 1024, KIB: 1024, M: 1024 ** 2, MB: 1024 ** 2, MIB: 1024 ** 2, G: 1024 ** 3, GB: 1024 ** 3, GIB: 1024 ** 3}

/** Parses `5M`, `500K`, `1.5MiB`, `1048576` (bytes per second; binary units). */
export function parseRate(value: string): number {
  const m = /^\s*(\d+(?:\.\d+)?)\s*([a-z]*)(?:\/s)?\s*$/i.exec(value ?? '')
  const unit = m ? UNITS[m[2].toUpperCase()] : undefined
  if (!m || unit === undefined || Number(m[1]) <= 0) {
    throw new MsrError('E_USAGE', `Not a rate: ${JSON.stringify(value)}.`, {hint: 'Use a number of bytes per second with an optional K, M or G suffix, e.g. 5M.'})
  }
  return Math.floor(Number(m[1]) * unit)
}
