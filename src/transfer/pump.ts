import type {Readable} from 'node:stream'

/** Returned by a pump's `take` to stop reading (the rest of the body is not wanted). */
export const STOP = Symbol('stop')

/**
 * Feeds a stream's chunks to `take`, in order, from 'data' events. `take` works synchronously and
 * returns nothing to go on, a promise to pause the stream until it settles (back-pressure: the
 * disk or the rate limit), or STOP. Resolves 'end' at the end of the stream, 'stopped' on STOP;
 * rejects with the stream's error, with what `take` threw, or when the stream closed early.
 *
 * Measured on a 1 GiB loopback body: 'data' events cost about half the CPU of `for await`, which
 * makes a promise and an iterator step per 64 KiB read.
 */
export function pumpStream(body: Readable, take: (data: Buffer) => void | Promise<void> | typeof STOP): Promise<'end' | 'stopped'> {
  return new Promise((resolve, reject) => {
    let settled = false
    let busy = false
    let ended = false
    const backlog: Buffer[] = []
    const finish = (outcome: 'end' | 'stopped' | Error) => {
      if (settled) return
      settled = true
      body.off('data', onData)
      body.off('end', onEnd)
      body.off('error', onError)
      body.off('close', onClose)
      if (outcome instanceof Error) reject(outcome)
      else resolve(outcome)
    }
    const feed = (data: Buffer): boolean => {
      let result: void | Promise<void> | typeof STOP
      try {
        result = take(data)
      } catch (error) {
        finish(error as Error)
        return false
      }
      if (result === STOP) {
        finish('stopped')
        return false
      }
      if (result) {
        busy = true
        body.pause()
        result.then(
          () => {
            busy = false
            while (!busy && !settled && backlog.length > 0) feed(backlog.shift()!)
            if (busy || settled) return
            if (ended) finish('end')
            else body.resume()
          },
          (error: Error) => finish(error),
        )
        return false
      }
      return true
    }
    const onData = (data: Buffer) => {
      if (settled) return
      // A paused stream may still deliver what it had buffered: keep it, in order.
      if (busy) backlog.push(data)
      else feed(data)
    }
    const onEnd = () => {
      ended = true
      if (!busy) finish('end')
    }
    const onError = (error: Error) => finish(error)
    const onClose = () => {
      if (!ended) finish(Object.assign(new Error('The connection closed before the body ended.'), {code: 'ERR_STREAM_PREMATURE_CLOSE'}))
    }
    body.on('data', onData)
    body.on('end', onEnd)
    body.on('error', onError)
    body.on('close', onClose)
  })
}
