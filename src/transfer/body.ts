/** Returned by a body consumer's `take` to stop reading (the rest of the body is not wanted). */
export const STOP = Symbol('stop')

/**
 * What a consumer does with one piece of a body. It must copy what it keeps before it returns: the
 * reader may hand the same memory out again. It returns nothing to go on, a promise to pause the
 * body until it settles (back-pressure: the disk or the rate limit; the promise itself must not
 * read `data`), or STOP.
 */
export type Take = (data: Buffer) => void | Promise<void> | typeof STOP

export interface Body {
  /**
   * Feeds the body to `take`, in order. Resolves 'end' when the body is complete, 'stopped' on STOP;
   * rejects with the transport's error or what `take` threw. It settles only after the promise
   * `take` last returned settled: nothing the consumer started is still running afterwards.
   */
  pump(take: Take): Promise<'end' | 'stopped'>
  /** Ends the exchange (closing the connection unless the body was complete). */
  destroy(error?: Error): void
  readonly ended: boolean
}
