import type net from 'node:net'

/**
 * The link model behind test/support/relay.ts: one `Lane` per direction of each connection, and an
 * optional `SharedLink` (one bottleneck for several lanes). Times are performance.now() ms.
 */

/** Pieces of a rate-limited stream are at most this big, so delivery is smooth, not bursty. */
const SHAPED_PIECE_BYTES = 16 * 1024

interface Piece {
  /** When the piece may enter the shared link (after the lane's own link). */
  readyAt: number
  buf: Buffer
}

/**
 * A bottleneck of `bytesPerSec` shared by many lanes, served round robin one piece at a time, so
 * connections share it about fairly (as TCP flows converge to) and more connections never add
 * capacity. A transmission is committed only when its start time has come, so every lane that has
 * data by then competes for it.
 */
export class SharedLink {
  private freeAt = 0
  private readonly rotation: Lane[] = []
  private timer: NodeJS.Timeout | undefined

  constructor(readonly bytesPerSec: number) {}

  /** Bytes one lane may hold waiting for this link before its source is paused. */
  waitingLimitBytes(maxQueueMs: number): number {
    return Math.max(SHAPED_PIECE_BYTES * 2, (maxQueueMs * this.bytesPerSec) / 1000 / Math.max(1, this.rotation.length))
  }

  enqueue(lane: Lane): void {
    if (!this.rotation.includes(lane)) this.rotation.push(lane)
    if (!this.timer) this.run()
  }

  remove(lane: Lane): void {
    const i = this.rotation.indexOf(lane)
    if (i >= 0) this.rotation.splice(i, 1)
  }

  private run(): void {
    this.timer = undefined
    const now = performance.now()
    for (let i = this.rotation.length - 1; i >= 0; i--) if (!this.rotation[i].waitingHead()) this.rotation.splice(i, 1)
    while (this.rotation.length > 0) {
      let earliest = Infinity
      for (const lane of this.rotation) earliest = Math.min(earliest, lane.waitingHead()?.readyAt ?? Infinity)
      const start = Math.max(this.freeAt, earliest)
      if (start > now) {
        this.timer = setTimeout(() => this.run(), Math.max(1, Math.ceil(start - now)))
        return
      }
      const i = this.rotation.findIndex((lane) => (lane.waitingHead()?.readyAt ?? Infinity) <= start)
      const [lane] = this.rotation.splice(i, 1)
      const piece = lane.takeWaiting()
      this.freeAt = start + (piece.buf.length * 1000) / this.bytesPerSec
      lane.transmitted(piece.buf, this.freeAt)
      if (lane.waitingHead()) this.rotation.push(lane)
    }
  }
}

export interface LaneOptions {
  /** One-way propagation delay. */
  delayMs: number
  /** Nothing leaves before this time (the handshake). */
  gateAt: number
  /** This lane's own link rate. */
  bytesPerSec?: number
  shared?: SharedLink
  maxPendingBytes: number
  maxQueueMs: number
  /** Hands a piece over; returns false when the connection was dropped meanwhile. */
  deliver: (buf: Buffer) => boolean
}

/** One direction of one connection: pieces in order, each delivered to `dst` when it arrives. */
export class Lane {
  private readonly inFlight: Array<{due: number; buf: Buffer}> = []
  private inFlightHead = 0
  private readonly waiting: Piece[] = []
  private waitingHeadIndex = 0
  private waitingBytes = 0
  private pendingBytes = 0
  /** When this lane's own link is free again. */
  private ownFreeAt = 0
  private timer: NodeJS.Timeout | undefined
  private srcEnded = false
  private closed = false

  constructor(
    private readonly src: net.Socket,
    private readonly dst: net.Socket,
    private readonly o: LaneOptions,
  ) {
    src.on('data', (buf: Buffer) => this.push(buf))
    src.on('end', () => {
      this.srcEnded = true
      this.flush()
    })
    dst.on('drain', () => this.maybeResume())
  }

  waitingHead(): Piece | undefined {
    return this.waiting[this.waitingHeadIndex]
  }

  takeWaiting(): Piece {
    const piece = this.waiting[this.waitingHeadIndex++]
    this.waitingBytes -= piece.buf.length
    if (this.waitingHeadIndex === this.waiting.length) {
      this.waiting.length = 0
      this.waitingHeadIndex = 0
    }
    return piece
  }

  /** The shared link sent `buf`, finishing at `sentAt`. */
  transmitted(buf: Buffer, sentAt: number): void {
    if (this.closed) return
    this.inFlight.push({due: sentAt + this.o.delayMs, buf})
    this.maybeResume()
    this.schedule()
  }

  private push(buf: Buffer): void {
    if (this.closed) return
    const now = performance.now()
    const {bytesPerSec, shared} = this.o
    const step = bytesPerSec || shared ? SHAPED_PIECE_BYTES : buf.length
    for (let i = 0; i < buf.length; i += step) {
      const piece = buf.subarray(i, Math.min(i + step, buf.length))
      let leaves = Math.max(now, this.o.gateAt)
      if (bytesPerSec) {
        leaves = Math.max(leaves, this.ownFreeAt) + (piece.length * 1000) / bytesPerSec
        this.ownFreeAt = leaves
      }
      if (shared) {
        this.waiting.push({readyAt: leaves, buf: piece})
        this.waitingBytes += piece.length
      } else {
        this.inFlight.push({due: leaves + this.o.delayMs, buf: piece})
      }
    }
    this.pendingBytes += buf.length
    // Bounded like a TCP window: a fast source waits for the link instead of filling our memory.
    if (this.overLimit(1)) this.src.pause()
    if (shared) shared.enqueue(this)
    this.schedule()
  }

  private overLimit(fraction: number): boolean {
    const o = this.o
    if (this.pendingBytes + this.dst.writableLength > o.maxPendingBytes * fraction) return true
    if (o.bytesPerSec && this.ownFreeAt - performance.now() > o.maxQueueMs * fraction) return true
    return o.shared !== undefined && this.waitingBytes > o.shared.waitingLimitBytes(o.maxQueueMs) * fraction
  }

  private schedule(): void {
    if (this.timer || this.closed) return
    if (this.inFlightHead >= this.inFlight.length) {
      if (this.srcEnded && this.waitingBytes === 0) this.dst.end()
      return
    }
    const wait = this.inFlight[this.inFlightHead].due - performance.now()
    if (wait <= 0) {
      this.flush()
      return
    }
    this.timer = setTimeout(() => {
      this.timer = undefined
      this.flush()
    }, Math.ceil(wait))
  }

  private flush(): void {
    const now = performance.now()
    while (!this.closed && this.inFlightHead < this.inFlight.length && this.inFlight[this.inFlightHead].due <= now + 0.5) {
      const {buf} = this.inFlight[this.inFlightHead++]
      this.pendingBytes -= buf.length
      if (!this.o.deliver(buf)) return
    }
    if (this.inFlightHead > 1024 && this.inFlightHead * 2 > this.inFlight.length) {
      this.inFlight.splice(0, this.inFlightHead)
      this.inFlightHead = 0
    }
    this.maybeResume()
    this.schedule()
  }

  private maybeResume(): void {
    if (!this.closed && this.src.isPaused() && !this.overLimit(0.5)) this.src.resume()
  }

  close(): void {
    this.closed = true
    if (this.timer) clearTimeout(this.timer)
    this.timer = undefined
    this.o.shared?.remove(this)
    this.inFlight.length = 0
    this.waiting.length = 0
  }
}
