import type {FileHandle} from 'node:fs/promises'

import {chunkBounds} from '../integrity/chunks.js'
import {chunkSumsOfOpenFile} from '../integrity/check.js'
import type {FileRecord} from '../journal/schema.js'
import {readFully} from '../fs/read-fully.js'
import type {OrderedHasher} from './ordered-hasher.js'

/** Read-back batch for hashing chunks that finished out of order. */
const DRAIN_BATCH_BYTES = 8 * 1024 * 1024

/**
 * The hash's way over chunks it did not see in memory (another connection's pieces, a resume's
 * kept prefix): read back from disk in batches, each chunk checked against its xxh64 first. A chunk
 * that changed on disk is forgotten (`forget`) and fetched again; the hash stops before it.
 */
export class ReadBack {
  private draining: Promise<void> = Promise.resolve()
  private drainActive = false
  /**
   * One batch buffer for every pass (passes never overlap): a fresh 8 MiB per pass was garbage
   * that V8 collects late (its heap is small here), 30-40 MiB of peak RSS with 8 connections.
   */
  private buffer: Buffer | undefined

  constructor(
    private readonly fh: FileHandle,
    private readonly record: FileRecord,
    /** The download's chunk table (shared, not copied): xxh64 of each chunk written, null = missing. */
    private readonly done: Array<string | null>,
    private readonly hash: OrderedHasher,
    private readonly xxh: (data: Uint8Array) => string,
    private readonly forget: (index: number, message: string) => void,
    private readonly checkHash: () => void,
  ) {}

  /** Hashes every written chunk from the hash's next one on; one pass at a time. */
  drain(): Promise<void> {
    if (this.drainActive) return this.draining
    // Set and cleared synchronously with the loop: a chunk completing in between is either hashed
    // in memory or seen by the loop, never left behind.
    this.drainActive = true
    this.draining = (async () => {
      try {
        const chunk = this.record.chunkSizeBytes
        const batchChunks = Math.max(1, Math.floor(DRAIN_BATCH_BYTES / chunk))
        while (this.hash.nextChunk < this.done.length && this.done[this.hash.nextChunk] !== null) {
          const first = this.hash.nextChunk
          let last = first + 1
          while (last < this.done.length && last - first < batchChunks && this.done[last] !== null) last++
          const start = first * chunk
          const end = chunkBounds(last - 1, this.record.size, chunk).end
          const buffer = (this.buffer ??= Buffer.allocUnsafeSlow(Math.min(batchChunks * chunk, this.record.size)))
          const got = await readFully(this.fh, buffer, end - start, start)
          // The loop may have been overtaken (chunks hashed in memory meanwhile): skip ahead.
          const from = this.hash.nextChunk
          if (from >= last) continue
          let verified = from
          let mismatch = false
          for (let i = from; i < last; i++) {
            const b = chunkBounds(i, this.record.size, chunk)
            if (b.end - start > got || this.xxh(buffer.subarray(b.start - start, b.end - start)) !== this.done[i]) {
              this.forget(i, `chunk ${i} of ${this.record.path} changed on disk; fetching it again`)
              mismatch = true
              break
            }
            verified = i + 1
          }
          if (verified > from) {
            // One hashing job for the run; the buffer is reused for the next batch, so wait for it.
            const runEnd = chunkBounds(verified - 1, this.record.size, chunk).end
            await this.hash.feed(from, buffer.subarray(from * chunk - start, runEnd - start)).catch(() => {})
            await this.hash.settled()
            this.checkHash()
          }
          if (mismatch) break
        }
      } finally {
        this.drainActive = false
      }
    })()
    return this.draining
  }

  /** Chunks below `count` whose bytes on disk no longer match their xxh64 (`--check fast|full` on resume). */
  async alteredChunks(count: number): Promise<number[]> {
    if (count === 0) return []
    const sums = await chunkSumsOfOpenFile(this.fh, this.record.size, this.record.chunkSizeBytes, count)
    const altered: number[] = []
    for (let i = 0; i < count; i++) if (this.done[i] !== null && sums[i] !== this.done[i]) altered.push(i)
    return altered
  }
}
