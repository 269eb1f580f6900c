import {chunkBounds} from '../integrity/chunks.js'
import type {Segment} from './segment-planner.js'

/** Whole chunks taken out of an assembler: `length` bytes of `buffer`, from chunk `first`. */
export interface Block {
  first: number
  buffer: Buffer
  length: number
}

/**
 * One connection's receive buffer. Body bytes are copied in at once (the reader reuses its
 * memory), gathered into a block of whole chunks from chunk `first`, and handed over a block at a
 * time (one write and one hash job per block, not per chunk). The chunk being filled is always
 * the segment's `next`; its bytes so far (`fill`) survive a dropped connection, so the retry asks
 * for the exact next byte, and a checkpoint can make them durable.
 */
export class BlockAssembler {
  private buffer: Buffer
  private first: number
  /** Bytes of whole chunks in the buffer. */
  private wholeBytes = 0
  /** Bytes of chunk `seg.next` received so far (in the buffer after the whole chunks). */
  fill = 0
  private since: number

  constructor(
    private readonly seg: Segment,
    private readonly chunkSizeBytes: number,
    private readonly sizeBytes: number,
    private readonly takeBuffer: () => Buffer,
  ) {
    this.buffer = takeBuffer()
    this.first = seg.next
    this.since = performance.now()
  }

  /** Absolute offset of the next byte this connection needs. */
  get position(): number {
    return this.seg.next * this.chunkSizeBytes + this.fill
  }

  /** End (exclusive) of what this connection still needs. */
  get endBytes(): number {
    return Math.min(this.sizeBytes, this.seg.end * this.chunkSizeBytes)
  }

  get hasWholeChunks(): boolean {
    return this.wholeBytes > 0
  }

  /** Bytes of the chunk being filled, known good (a resume): they go first. */
  prefill(data: Uint8Array): void {
    if (this.wholeBytes !== 0 || this.fill !== 0) throw new Error('internal: prefill of a used assembler')
    this.buffer.set(data, 0)
    this.fill = data.byteLength
  }

  /**
   * Copies data[from...] up to the end of the chunk being filled; returns where it stopped. When
   * the chunk completes, `seg.next` moves on.
   */
  copy(data: Buffer, from: number): {off: number; chunkDone: boolean} {
    const {start, end} = chunkBounds(this.seg.next, this.sizeBytes, this.chunkSizeBytes)
    const n = Math.min(end - start - this.fill, data.length - from)
    data.copy(this.buffer, this.wholeBytes + this.fill, from, from + n)
    this.fill += n
    if (this.fill < end - start) return {off: from + n, chunkDone: false}
    this.seg.next++
    this.wholeBytes += this.fill
    this.fill = 0
    return {off: from + n, chunkDone: true}
  }

  /**
   * After a chunk completed: hand over when the block is full, at the end of the segment (another
   * connection may take what follows), or on a slow link (whole chunks never wait long in memory:
   * a kill must not lose them).
   */
  due(maxAgeMs: number): boolean {
    return this.wholeBytes + this.chunkSizeBytes > this.buffer.length || this.seg.next >= this.seg.end || performance.now() - this.since >= maxAgeMs
  }

  /** Takes the whole chunks out; the bytes of the chunk being filled move to a fresh buffer. */
  handOver(): Block | undefined {
    if (this.wholeBytes === 0) return undefined
    const block = {first: this.first, buffer: this.buffer, length: this.wholeBytes}
    this.buffer = this.takeBuffer()
    if (this.fill > 0) block.buffer.copy(this.buffer, 0, this.wholeBytes, this.wholeBytes + this.fill)
    this.first = this.seg.next
    this.wholeBytes = 0
    this.since = performance.now()
    return block
  }

  /** A copy of the bytes of the chunk being filled (none when it has none). */
  partial(): {index: number; data: Buffer} | undefined {
    if (this.fill === 0 || this.seg.next >= this.seg.end) return undefined
    return {index: this.seg.next, data: Buffer.from(this.buffer.subarray(this.wholeBytes, this.wholeBytes + this.fill))}
  }

  /** The buffer, when nothing in it is still wanted (no whole chunks). */
  release(): Buffer | undefined {
    if (this.wholeBytes > 0) return undefined
    const buffer = this.buffer
    this.fill = 0
    return buffer
  }
}
