import type {FileHandle} from 'node:fs/promises'

import type {EventSink} from '../events.js'
import {fsFailure} from '../fs/fs-errors.js'
import {chunkBounds, xxh64PiecesAsync} from '../integrity/chunks.js'
import {type FileRecord, durableBytes} from '../journal/schema.js'
import type {Block} from './block-assembler.js'
import type {OrderedHasher} from './ordered-hasher.js'
import {PartialWriter} from './partial-writer.js'
import {ReadBack} from './read-back.js'

/** Received chunks travel in blocks of this many bytes (whole chunks): one write, one hash job. */
const BLOCK_BYTES = 4 * 1024 * 1024
/**
 * From this many connections, blocks of SMALL_BLOCK_BYTES: each connection holds a block while it
 * fills and each may hand one over past the in-flight bound, so 8 connections peaked at 145-155 MiB
 * with 4 MiB blocks and 143-148 with 2 MiB (123-129 with 1 MiB). Connections that many are slow
 * ones, where a write and a hash job per MiB cost nothing; one fast connection keeps 4 MiB (2 MiB
 * cost it ~0.1 s of kernel time per GiB: twice the writes).
 */
const SMALL_BLOCKS_FROM_CONNECTIONS = 6
const SMALL_BLOCK_BYTES = 1024 * 1024
/** Blocks being hashed or written per file: overlap with bounded memory. */
const MAX_BLOCKS_IN_FLIGHT = 4

export interface ChunkStoreOptions {
  record: FileRecord
  fh: FileHandle
  partialPath: string | undefined
  hash: OrderedHasher
  xxh: (data: Uint8Array) => string
  emit: EventSink
  /** Body bytes received so far (for progress events). */
  receivedBytes(): number
  /** A block was written and hashed (a checkpoint may be due). */
  onWritten(length: number): void
}

/**
 * The partial file's chunk table: whole chunks are written by the PartialWriter and hashed in file
 * order by the OrderedHasher (chunks finished out of order are read back from disk when the hash
 * reaches them). A chunk counts as done only when its write completed.
 */
export class ChunkStore {
  /** xxh64 of every chunk written (durable or not yet); null = missing. */
  readonly done: Array<string | null>
  private doneByteCount: number
  /** Chunks [0, prefixChunks) are all written: the scan for the written prefix only moves on. */
  private prefixChunks = 0
  private readonly writes = new Set<Promise<void>>()
  private writeError: unknown
  readonly writer: PartialWriter
  readonly readBack: ReadBack

  constructor(private readonly o: ChunkStoreOptions) {
    const {record} = o
    this.done = [...record.chunks]
    this.doneByteCount = durableBytes(record)
    const chunk = record.chunkSizeBytes
    this.readBack = new ReadBack(o.fh, record, this.done, o.hash, o.xxh, (i, message) => this.forget(i, message), () => this.throwHashError())
    this.writer = new PartialWriter(o.fh, o.partialPath, record.size, this.blockBytesFor(1))
  }

  /** Connections filling blocks now: new blocks are sized for the most so far (see SMALL_BLOCKS_FROM_CONNECTIONS). */
  connections(n: number): void {
    this.writer.shrink(this.blockBytesFor(n))
  }

  private blockBytesFor(connections: number): number {
    const {size, chunkSizeBytes: chunk} = this.o.record
    const bytes = connections >= SMALL_BLOCKS_FROM_CONNECTIONS ? SMALL_BLOCK_BYTES : BLOCK_BYTES
    return Math.max(1, Math.min(Math.max(1, Math.floor(bytes / chunk)) * chunk, size))
  }

  get doneBytes(): number {
    return this.doneByteCount
  }

  get complete(): boolean {
    return !this.done.includes(null)
  }

  /** A write failed: the download must stop (a disk error is never retried as a network one). */
  get failed(): boolean {
    return this.writeError !== undefined
  }

  throwIfFailed(): void {
    if (this.writeError) throw this.writeError
  }

  noteWriteError(error: unknown): void {
    this.writeError ??= fsFailure(error, 'writing the partial file', this.o.record.path)
  }

  /**
   * Received whole chunks: hashed at once when they are next in file order (from memory, no
   * read-back), and written without waiting, so the socket keeps flowing while the disk works.
   * Returns a promise when MAX_BLOCKS_IN_FLIGHT blocks are in hand (the caller pauses its body).
   */
  add({first, buffer, length}: Block): Promise<void> | undefined {
    this.throwIfFailed()
    const {hash, record} = this.o
    const data = buffer.subarray(0, length)
    const chunk = record.chunkSizeBytes
    const inOrder = first === hash.nextChunk
    // A block ahead of the hash only gets its xxh64s; it is read back and checked when the hash gets there.
    const hashed = inOrder ? hash.feed(first, data) : xxh64PiecesAsync(data, chunk)
    const written = this.writer.write(data, first * chunk, inOrder)
    const write = Promise.all([hashed, written]).then(
      ([sums]) => {
        for (let k = 0; k < sums.length; k++) this.done[first + k] = sums[k]
        hash.promote(this.writtenPrefixBytes())
        this.doneByteCount += length
        this.writer.giveBack(buffer)
        this.o.emit({type: 'progress', path: record.path, bytesDone: this.doneByteCount, size: record.size, receivedBytes: this.o.receivedBytes()})
        if (hash.nextChunk < this.done.length && this.done[hash.nextChunk] !== null) void this.drain()
        this.o.onWritten(length)
      },
      (error) => this.noteWriteError(error),
    )
    this.writes.add(write)
    void write.finally(() => this.writes.delete(write))
    return this.writes.size >= MAX_BLOCKS_IN_FLIGHT ? this.roomForBlocks() : undefined
  }

  private async roomForBlocks(): Promise<void> {
    while (this.writes.size >= MAX_BLOCKS_IN_FLIGHT) await Promise.race(this.writes)
    this.throwIfFailed()
  }

  /** Resolves when every write started so far has finished (successfully or not). */
  async settle(): Promise<void> {
    while (this.writes.size > 0) await Promise.allSettled([...this.writes])
    this.throwIfFailed()
  }

  /** Resolves when the writes started before this call have finished (a checkpoint's snapshot). */
  async written(): Promise<void> {
    await Promise.allSettled([...this.writes])
  }

  /** Bytes of the written prefix (whole chunks from the start). */
  writtenPrefixBytes(): number {
    // Per block: a scan from chunk 0 each time was quadratic in the chunks of a large file.
    while (this.prefixChunks < this.done.length && this.done[this.prefixChunks] !== null) this.prefixChunks++
    return Math.min(this.o.record.size, this.prefixChunks * this.o.record.chunkSizeBytes)
  }

  /** Hashes chunks that were finished out of order, reading them back (and checking them) from disk. */
  drain(): Promise<void> {
    return this.readBack.drain()
  }

  /** The chunk is not what was written: it is fetched again. */
  forget(i: number, message: string): void {
    const {record} = this.o
    const b = chunkBounds(i, record.size, record.chunkSizeBytes)
    this.done[i] = null
    this.prefixChunks = Math.min(this.prefixChunks, i)
    this.doneByteCount -= b.end - b.start
    record.chunks[i] = null
    this.o.emit({type: 'warning', path: record.path, message})
  }

  throwHashError(): void {
    this.o.hash.throwIfFailed(this.o.record.path)
  }
}
