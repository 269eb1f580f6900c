import {MsrError, isMsrError} from '../errors.js'
import type {BlockAssembler} from './block-assembler.js'
import {type Body, STOP} from './body.js'
import type {RateLimiter} from './rate-limiter.js'
import type {Segment} from './segment-planner.js'
import {type Stall, StallDetector} from './stall-detector.js'

export interface SegmentReadOptions {
  /** Repo path, for messages. */
  path: string
  seg: Segment
  asm: BlockAssembler
  /** Leading body bytes to discard (a 200 to a Range request: skip to the offset). */
  skipBytes: number
  idleTimeoutMs: number
  minBytesPerSec: number
  limiter?: RateLimiter
  signal: AbortSignal
  /** Body bytes this segment kept (new bytes: progress). */
  onBytes(bytes: number): void
  /** Hands the assembler's whole chunks over; a promise when the block queue is full. */
  handOver(asm: BlockAssembler): Promise<void> | undefined
  /** Whole blocks are waiting behind a disk error: do not pretend the segment ended well. */
  failed(): boolean
}

/** A block holding whole chunks is handed over after this long, full or not. */
const BLOCK_MAX_AGE_MS = 200

/**
 * Reads one reply body into a segment's assembler. Every byte is copied before `take` returns;
 * waits (rate limit, room for blocks) pause the body and stop the stall clock. Settles only after
 * the last step it started settled (Body.pump guarantees it), so nothing of this reply touches the
 * assembler once a retry starts.
 */
export async function readSegmentBody(body: Body, o: SegmentReadOptions): Promise<void> {
  const {seg, asm} = o
  let skip = o.skipBytes
  let stalled: MsrError | undefined
  const stall = new StallDetector({idleMs: o.idleTimeoutMs, minBytesPerSec: o.minBytesPerSec}, (s: Stall) => {
    stalled = s.kind === 'idle'
      ? new MsrError('E_TIMEOUT', `No data for ${Math.round(s.idleMs / 1000)} s on ${o.path}.`, {path: o.path, retryable: true})
      : new MsrError('E_TIMEOUT', `${o.path} is arriving at ${Math.round(s.bytesPerSec)} B/s, below the minimum of ${o.minBytesPerSec} B/s.`, {path: o.path, retryable: true})
    body.destroy(stalled)
  })
  const held = (wait: Promise<unknown>): Promise<void> => {
    stall.hold()
    return wait.then(() => {}).finally(() => stall.release())
  }
  const take = (data: Buffer): void | Promise<void> | typeof STOP => {
    // Bytes past what this segment needs (a longer body, a tail another connection took over).
    if (seg.next >= seg.end) return STOP
    stall.received(data.length)
    let off = 0
    if (skip > 0) {
      off = Math.min(skip, data.length)
      skip -= off
    }
    const from = off
    let room: Promise<void> | undefined
    while (off < data.length && seg.next < seg.end) {
      const step = asm.copy(data, off)
      off = step.off
      if (step.chunkDone && asm.due(BLOCK_MAX_AGE_MS)) room = o.handOver(asm) ?? room
    }
    if (off === from) return room ? held(room) : undefined
    o.onBytes(off - from)
    const limit = o.limiter?.consume(off - from, o.signal)
    const wait = room && limit ? Promise.all([room, limit]) : room ?? limit
    return wait ? held(wait) : undefined
  }
  try {
    const outcome = await body.pump(take)
    if (stalled) throw stalled
    if (outcome === 'end' && seg.next < seg.end) throw new MsrError('E_NETWORK', `Connection closed early while downloading ${o.path}.`, {path: o.path, retryable: true})
  } catch (error) {
    if (stalled) throw stalled
    // Everything this segment needed had arrived; what failed was only the wait for the end.
    if (seg.next >= seg.end && !o.signal.aborted && !o.failed()) return
    if (isMsrError(error) || o.signal.aborted) throw error
    throw new MsrError('E_NETWORK', `Connection lost while downloading ${o.path}: ${(error as Error).message}.`, {path: o.path, retryable: true, cause: error})
  } finally {
    stall.stop()
    if (!body.ended) body.destroy()
  }
}
