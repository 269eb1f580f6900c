import {type Body, STOP, type Take} from './body.js'

/** How a feed steers its source (a socket, an undici request). */
export interface FeedSource {
  /** Stop delivering pieces until resume(). Pieces that still arrive are copied and queued. */
  pause(): void
  resume(): void
  /** The body is not wanted (STOP, destroy, the consumer failed) before its end. */
  abort(reason: Error): void
}

/**
 * Turns pieces pushed by a transport into a Body the consumer pumps: pieces are handed to `take`
 * in order; a promise from `take` pauses the source until it settles; pieces that arrive while the
 * consumer waits (or before it pumps) are copied and queued, never dropped and never handed over
 * out of order. The pump settles only once the consumer is idle (not inside `take`, no wait of its
 * pending), so nothing it started runs after the pump settled.
 */
export class BodyFeed {
  private take: Take | undefined
  private settle: ((outcome: 'end' | 'stopped' | Error) => void) | undefined
  private busy: Promise<void> | undefined
  private readonly queued: Buffer[] = []
  private complete = false
  private failure: Error | undefined
  private finished: 'end' | 'stopped' | Error | undefined
  private inTake = false
  private settled = false
  readonly body: Body

  /**
   * `settleAtEnd: 'now'`: the pump resolves as soon as the body ended. By default ('next-turn') it
   * resolves on the next turn of the event loop, for undici (see settleWhenIdle).
   */
  constructor(private readonly source: FeedSource, private readonly settleAtEnd: 'now' | 'next-turn' = 'next-turn') {
    const feed = this
    this.body = {
      pump(fn) {
        return new Promise((resolve, reject) => {
          if (feed.take) throw new Error('body pumped twice')
          feed.take = fn
          feed.settle = (outcome) => (outcome instanceof Error ? reject(outcome) : resolve(outcome))
          if (feed.finished !== undefined) return feed.settleWhenIdle()
          if (feed.flush()) feed.afterFlush()
        })
      },
      destroy(error?: Error) {
        feed.finish(error ?? 'stopped')
      },
      get ended() {
        return feed.complete && feed.finished === 'end'
      },
    }
  }

  /** Whether pieces are wanted now (pumped, not waiting, nothing queued, not finished). */
  get flowing(): boolean {
    return this.take !== undefined && !this.busy && this.queued.length === 0 && this.finished === undefined
  }

  get done(): boolean {
    return this.finished !== undefined
  }

  /**
   * A piece of the body. `mayKeep`: the source never reuses this memory (it may then be queued
   * without a copy). While the consumer is flowing the piece is handed over at once (it copies).
   * `last`: nothing follows (end() comes next), so the source is not paused to wait for the consumer.
   */
  data(chunk: Buffer, mayKeep = false, last = false): void {
    // An empty piece (undici sends one on every resume) would only pause again, forever.
    if (this.finished !== undefined || chunk.length === 0) return
    if (this.flowing) {
      this.queued.push(chunk)
      this.flush()
      return
    }
    this.queued.push(mayKeep ? chunk : Buffer.from(chunk))
    if (!last) this.source.pause()
  }

  /** The body is complete. */
  end(): void {
    this.complete = true
    if (this.take && !this.busy && this.queued.length === 0) this.finish('end')
  }

  /** The transport failed after the head. */
  error(error: Error): void {
    this.failure = error
    if (this.take && !this.busy && this.queued.length === 0) this.finish(error)
  }

  /** Ends the exchange from outside (abort signal). */
  abort(reason: Error): void {
    this.finish(reason)
  }

  private settleWhenIdle(): void {
    if (this.settled || this.finished === undefined || this.busy || this.inTake || !this.settle) return
    this.settled = true
    const outcome = this.finished
    const settle = this.settle
    // undici marks the connection free only after its end callback returns: a request made as soon
    // as the body ended would open another connection (a TCP and TLS handshake per piece). The
    // onread reader puts the connection back before it ends the body.
    if (outcome === 'end' && this.settleAtEnd === 'next-turn') setImmediate(() => settle(outcome))
    else settle(outcome)
  }

  private finish(outcome: 'end' | 'stopped' | Error): void {
    if (this.finished !== undefined) return
    this.finished = outcome
    if (outcome !== 'end' && !this.complete) this.source.abort(outcome instanceof Error ? outcome : new Error('body not wanted'))
    this.settleWhenIdle()
  }

  /** Hands queued pieces to the consumer until it asks to wait; true when all were taken. */
  private flush(): boolean {
    while (this.queued.length > 0 && this.finished === undefined) {
      if (this.busy) return false
      const data = this.queued.shift()!
      let result: ReturnType<Take>
      this.inTake = true
      try {
        result = this.take!(data)
      } catch (error) {
        this.inTake = false
        this.finish(error as Error)
        return false
      }
      this.inTake = false
      if (result === STOP) {
        this.finish('stopped')
        return false
      }
      if (result) {
        const wait: Promise<void> = result.then(
          () => {
            if (this.busy !== wait) return
            this.busy = undefined
            if (this.finished !== undefined) return this.settleWhenIdle()
            if (this.flush()) this.afterFlush()
          },
          (error: Error) => {
            this.busy = undefined
            this.finish(error)
            this.settleWhenIdle()
          },
        )
        this.busy = wait
        this.source.pause()
        return false
      }
      // Finished while the consumer ran (an abort from inside `take`): settle now it returned.
      if (this.finished !== undefined) this.settleWhenIdle()
    }
    return this.finished === undefined
  }

  private afterFlush(): void {
    if (this.failure) this.finish(this.failure)
    else if (this.complete) this.finish('end')
    else this.source.resume()
  }
}
