import type {FileHandle} from 'node:fs/promises'

import {fsFailure} from '../fs/fs-errors.js'
import type {SavedSha256State} from '../integrity/sha256.js'
import {crashPoint} from '../fs/crash-points.js'
import type {Journal} from '../journal/journal.js'
import type {FileRecord} from '../journal/schema.js'
import {prefixBytes} from './partial-chunks.js'

/** What a checkpoint may claim: every byte of it is written (not yet fsynced). */
export interface DurableView {
  chunks: ReadonlyArray<string | null>
  /**
   * First bytes of chunks being filled, with their xxh64; undefined when this checkpoint did not
   * write them (a fast link): the claims of the last one that did stay (those bytes are on disk).
   */
  partials: Array<{index: number; data: Buffer; xxh64: string}> | undefined
  /** A hash state whose bytes are all written. */
  state: SavedSha256State | undefined
}

/**
 * Data first, journal second: the partial is fsynced, and only then does the journal claim what
 * the view holds. A kill between the two loses the claim, never the truth.
 */
export async function checkpoint(fh: FileHandle, journal: Journal, record: FileRecord, view: DurableView): Promise<void> {
  await fh.datasync()
  crashPoint('after-data-fsync')
  for (let i = 0; i < view.chunks.length; i++) if (view.chunks[i] !== null) record.chunks[i] = view.chunks[i]
  const claims = view.partials ? view.partials.map(({index, data, xxh64}) => ({index, bytes: data.length, xxh64})) : record.partialChunks ?? []
  record.partialChunks = claims.filter((p) => record.chunks[p.index] === null)
  const reach = prefixBytes(record.chunks, new Map(record.partialChunks.map((p) => [p.index, {length: p.bytes}])), record.size, record.chunkSizeBytes)
  if (view.state && view.state.offsetBytes <= reach) record.sha256State = view.state
  if (record.status === 'pending') record.status = 'partial'
  await journal.flush()
}

/**
 * When to checkpoint: after `bytes` more bytes are written, or `intervalMs` after the last one
 * (the timer: on a slow link no chunk may complete for many seconds). One at a time; a failure is
 * kept for the download to throw.
 */
export class CheckpointClock {
  private lastAt = performance.now()
  private bytesSince = 0
  private running: Promise<void> | undefined
  private error: unknown
  private readonly ticker: NodeJS.Timeout

  constructor(
    private readonly o: {intervalMs: number; bytes: number; path: string},
    /** Takes one; `byTime`: a checkpoint due by time (slow link) also writes the chunks being filled. */
    private readonly take: (byTime: boolean) => Promise<void>,
  ) {
    this.ticker = setInterval(() => this.maybe(true), Math.max(50, o.intervalMs / 4))
  }

  /** Bytes were written. */
  written(bytes: number): void {
    this.bytesSince += bytes
    this.maybe(false)
  }

  /**
   * `byTimer`: called by the timer, not right after a block was handed over. A checkpoint due by
   * time is taken only then: after a hand-over the chunk being filled is nearly empty, and a slow
   * link's checkpoints would then rarely keep the bytes of a half-received chunk.
   */
  private maybe(byTimer: boolean): void {
    const dueByTime = byTimer && performance.now() - this.lastAt >= this.o.intervalMs
    if ((!dueByTime && this.bytesSince < this.o.bytes) || this.running) return
    // The bytes of chunks still being filled are worth a write only on a slow link (due by time: less
    // than `bytes` a second). Due by bytes, they are under a MiB of several MiB a second, and
    // writing, hashing and copying them at every checkpoint cost a fast link 0.3 s per GiB.
    this.running = this.run(dueByTime)
      .catch((error) => {
        this.error = fsFailure(error, 'saving a checkpoint', this.o.path)
      })
      .finally(() => {
        this.running = undefined
      })
  }

  /** Takes a checkpoint now, after the running one (if any); stop() first, or the timer may start another. */
  async now(): Promise<void> {
    await this.settled()
    await this.run(true)
  }

  private async run(withPartialChunks: boolean): Promise<void> {
    this.lastAt = performance.now()
    this.bytesSince = 0
    await this.take(withPartialChunks)
  }

  /** Resolves when no checkpoint runs; never rejects. */
  async settled(): Promise<void> {
    await this.running?.catch(() => {})
  }

  throwError(): void {
    const error = this.error
    this.error = undefined
    if (error) throw error
  }

  stop(): void {
    clearInterval(this.ticker)
  }
}
