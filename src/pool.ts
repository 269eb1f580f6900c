import {setMaxListeners} from 'node:events'

export interface Lane {
  /** 0 .. limit-1: which of the pool's lanes runs this item (a worker thread per lane, ...). */
  index: number
  /** Aborted when the caller's signal is, or when another item failed: stop promptly. */
  signal: AbortSignal
}

/**
 * Runs `fn` over `items` (with each item's position in them) with at most `limit` in flight, results in input order. The first
 * rejection stops handing out items, aborts the lanes' signal and is what the pool rejects with,
 * once every item in flight has settled (none is left running behind the caller's back).
 */
export async function runPool<T, R>(items: readonly T[], limit: number, signal: AbortSignal, fn: (item: T, lane: Lane, position: number) => Promise<R>): Promise<R[]> {
  const results: R[] = new Array(items.length)
  const stop = new AbortController()
  setMaxListeners(0, stop.signal)
  const onAbort = () => stop.abort(signal.reason)
  if (signal.aborted) onAbort()
  signal.addEventListener('abort', onAbort, {once: true})
  let next = 0
  let failure: {error: unknown} | undefined
  const lane = async (index: number) => {
    while (next < items.length && !stop.signal.aborted) {
      const i = next++
      try {
        results[i] = await fn(items[i], {index, signal: stop.signal}, i)
      } catch (error) {
        failure ??= {error}
        stop.abort(error)
      }
    }
  }
  try {
    await Promise.all(Array.from({length: Math.max(1, Math.min(limit, items.length))}, (_, index) => lane(index)))
  } finally {
    signal.removeEventListener('abort', onAbort)
  }
  if (failure) throw failure.error
  return results
}
