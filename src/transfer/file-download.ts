import {setMaxListeners} from 'node:events'
import type {FileHandle} from 'node:fs/promises'

import {MsrError} from '../errors.js'
import {loadXxh64} from '../integrity/chunks.js'
import {createResumableSha256} from '../integrity/sha256.js'
import type {FileRecord} from '../journal/schema.js'
import {BlockAssembler} from './block-assembler.js'
import {CheckpointClock, type DurableView, checkpoint} from './checkpointer.js'
import {ChunkStore} from './chunk-store.js'
import {ConnectionScheduler} from './connection-scheduler.js'
import {OrderedHasher} from './ordered-hasher.js'
import {prefixBytes} from './partial-chunks.js'
import {RangeFetcher} from './range-fetcher.js'
import {abortError} from './rate-limiter.js'
import {reconcileWithDisk} from './resume.js'
import {type Segment, missingRuns, pieceChunksFor, splitAt} from './segment-planner.js'
import type {TransferOptions} from './transfer-options.js'

export type {TransferOptions} from './transfer-options.js'


/**
 * Fills the missing bytes of one partial file from the hub: segments over connections
 * (ConnectionScheduler), each fetched by the RangeFetcher into a BlockAssembler, stored by the
 * ChunkStore (written, hashed in file order), and made durable by checkpoints (data fsync, then
 * journal) that cover bytes, not only whole chunks: a kill loses at most the bytes since the last one.
 */
export class ChunkedDownload {
  private receivedBytes = 0
  private readonly abort = new AbortController()
  private readonly store: ChunkStore
  private readonly fetcher: RangeFetcher
  private scheduler: ConnectionScheduler | undefined
  /** The assembler of each segment being fetched (its partial chunk survives reconnects). */
  private readonly assemblers = new Map<Segment, BlockAssembler>()
  private coveredCheck: Promise<number[]> = Promise.resolve([])
  /** Exists while run() runs. */
  private checkpoints: CheckpointClock | undefined

  private constructor(
    private readonly record: FileRecord,
    private readonly fh: FileHandle,
    private readonly hash: OrderedHasher,
    private readonly opts: TransferOptions,
    private readonly xxh: (data: Uint8Array) => string,
    /** Verified first bytes of chunks that a checkpoint left unfinished. */
    private readonly prefills: Map<number, Buffer>,
    partialPath: string | undefined,
  ) {
    // One listener per connection and per retry wait: up to 32 connections is normal, not a leak.
    setMaxListeners(0, this.abort.signal)
    this.store = new ChunkStore({
      record, fh, partialPath, hash, xxh, emit: opts.emit,
      receivedBytes: () => this.receivedBytes,
      onWritten: (length) => this.checkpoints?.written(length),
    })
    this.fetcher = new RangeFetcher({
      ...opts, record, signal: this.abort.signal,
      onHead: () => this.scheduler?.headArrived(),
      onBytes: (bytes) => {
        this.receivedBytes += bytes
      },
      handOver: (asm) => this.handOver(asm),
      failed: () => this.store.failed,
    })
  }

  /**
   * Reconciles the journal with the partial on disk and returns a download ready to continue:
   * claims past the end of the file are forgotten, the last kept chunk and every partial chunk are
   * checked against their xxh64, bytes the journal does not vouch for are cut off, and the saved
   * hash state is loaded, or the prefix re-hashed from disk when it cannot be.
   */
  static async prepare(record: FileRecord, fh: FileHandle, opts: TransferOptions, adoptUnknown = false, partialPath?: string): Promise<ChunkedDownload> {
    const xxh = await loadXxh64()
    const {prefills, hasher} = await reconcileWithDisk(record, fh, opts.emit, adoptUnknown, xxh)
    const hash = new OrderedHasher(hasher, record.chunkSizeBytes)
    const download = new ChunkedDownload(record, fh, hash, opts, xxh, prefills, partialPath)
    if (opts.check === 'fast' || opts.check === 'full') download.coveredCheck = download.store.readBack.alteredChunks(Math.min(record.chunks.length, hash.nextChunk))
    await download.store.drain()
    return download
  }

  /** Bytes already durable on disk (whole chunks and partial ones; not necessarily contiguous). */
  get resumedBytes(): number {
    let bytes = this.store.doneBytes
    for (const data of this.prefills.values()) bytes += data.length
    return bytes
  }

  /** Downloads every missing byte; resolves when the file is complete on disk and fully hashed. */
  async run(): Promise<{receivedBytes: number}> {
    const onAbort = () => this.abort.abort(this.opts.signal.reason)
    if (this.opts.signal.aborted) onAbort()
    this.opts.signal.addEventListener('abort', onAbort, {once: true})
    await this.store.writer.open()
    const checkpoints = new CheckpointClock({intervalMs: this.opts.checkpointIntervalMs, bytes: this.opts.checkpointBytes, path: this.record.path}, (withPartials) => this.checkpoint(withPartials))
    this.checkpoints = checkpoints
    try {
      // A chunk that fails its read-back check is cleared and fetched again in another round.
      for (let round = 0; ; round++) {
        if (round > 4) throw new MsrError('E_LOCAL', `Chunks of ${this.record.path} keep failing their read-back check.`, {path: this.record.path, hint: 'The disk may be failing; check it, then run again.'})
        if (!this.store.complete) {
          const results = await this.runRound()
          await this.store.settle()
          const failed = results.find((r) => r.status === 'rejected') as PromiseRejectedResult | undefined
          if (failed) throw failed.reason
        }
        await this.settleCoveredCheck()
        await this.store.drain()
        checkpoints.throwError()
        if (this.store.complete) break
      }
      return {receivedBytes: this.receivedBytes}
    } catch (error) {
      this.abort.abort(error)
      // Leave the journal pointing at everything that is durable, on failure and on Ctrl-C.
      checkpoints.stop()
      await checkpoints.now().catch(() => {})
      throw this.opts.signal.aborted ? abortError(this.opts.signal) : error
    } finally {
      checkpoints.stop()
      this.opts.signal.removeEventListener('abort', onAbort)
      await checkpoints.settled()
      await this.store.settle().catch(() => {})
      await this.store.writer.close()
    }
  }

  private runRound(): Promise<PromiseSettledResult<void>[]> {
    const {record} = this
    this.scheduler = new ConnectionScheduler({
      runs: splitAt(missingRuns(this.store.done), this.prefills),
      connections: this.opts.connections,
      adaptive: Boolean(this.opts.adaptiveConnections),
      pieceChunks: pieceChunksFor(record.chunks.length, record.chunkSizeBytes),
      signal: this.abort.signal,
      receivedBytes: () => this.receivedBytes,
      fetch: (seg) => this.fetchSegment(seg),
      connectionsChanged: (running) => this.store.connections(running),
    })
    return this.scheduler.run()
  }

  /** One segment through its own assembler, which starts from a kept partial chunk if there is one. */
  private async fetchSegment(seg: Segment): Promise<void> {
    const asm = new BlockAssembler(seg, this.record.chunkSizeBytes, this.record.size, () => this.store.writer.takeBuffer())
    const known = this.prefills.get(seg.next)
    if (known) {
      asm.prefill(known)
      this.prefills.delete(seg.next)
    }
    this.assemblers.set(seg, asm)
    try {
      await this.fetcher.fetch(seg, asm)
    } finally {
      // Whole chunks already received are kept: hand them over even when the segment failed.
      if (!this.store.failed) void this.handOver(asm)?.catch(() => {})
    }
    // A failed segment keeps its assembler: the last checkpoint makes its partial chunk durable.
    this.assemblers.delete(seg)
    const spare = asm.release()
    if (spare) this.store.writer.giveBack(spare)
  }

  /** Hands the assembler's whole chunks over; a promise when the caller must wait for room. */
  private handOver(asm: BlockAssembler): Promise<void> | undefined {
    const block = asm.handOver()
    return block ? this.store.add(block) : undefined
  }

  /** Waits for the background check of the chunks a restored hash state covers; acts on its verdict. */
  private async settleCoveredCheck(): Promise<void> {
    const altered = await this.coveredCheck
    this.coveredCheck = Promise.resolve([])
    if (altered.length === 0) return
    for (const i of altered) this.store.forget(i, `chunk ${i} of the partial of ${this.record.path} changed on disk; fetching it again`)
    // The restored state hashed the old bytes: start over, the drain re-reads from disk.
    await this.hash.reset(await createResumableSha256())
    delete this.record.sha256State
    this.opts.emit({type: 'rehash', path: this.record.path, bytes: this.store.writtenPrefixBytes(), reason: 'partial changed on disk'})
  }

  /**
   * Data first, journal second: whole chunks in hand are handed over, the bytes of every chunk
   * being filled are written, all of it is fsynced, and only then does the journal claim it.
   */
  private async checkpoint(withPartialChunks: boolean): Promise<void> {
    const {store} = this
    const chunk = this.record.chunkSizeBytes
    const partials: Array<{index: number; data: Buffer; written: Promise<void>}> = []
    for (const asm of withPartialChunks ? this.assemblers.values() : []) {
      if (asm.hasWholeChunks && !store.failed) void this.handOver(asm)?.catch(() => {})
      const partial = asm.partial()
      if (partial) partials.push({...partial, written: store.writer.write(partial.data, partial.index * chunk, false)})
    }
    await store.written()
    const kept: DurableView['partials'] = []
    for (const p of partials) {
      try {
        await p.written
      } catch (error) {
        store.noteWriteError(error)
        continue
      }
      if (store.done[p.index] === null) kept.push({index: p.index, data: p.data, xxh64: this.xxh(p.data)})
    }
    // Partial chunks kept from the last run whose connection has not started yet: still claimed.
    for (const [index, data] of this.prefills) kept.push({index, data, xxh64: this.xxh(data)})
    const snapshot = [...store.done]
    // The state at the byte-exact end of the durable prefix when a partial chunk ends it.
    const prefixEnd = kept.find((p) => p.index * chunk === prefixBytes(snapshot, new Map(), this.record.size, chunk))
    const state = (prefixEnd && (await this.hash.stateThrough(prefixEnd.index, prefixEnd.data))) || this.hash.durableState
    await checkpoint(this.fh, this.opts.journal, this.record, {chunks: snapshot, partials: withPartialChunks ? kept : undefined, state})
  }

  /** Final digest over the whole file (every chunk must be hashed). */
  async digestHex(): Promise<string> {
    await this.hash.settled()
    this.hash.throwIfFailed(this.record.path)
    if (this.hash.nextChunk !== this.store.done.length) throw new Error(`internal: ${this.record.path} not fully hashed`)
    return this.hash.digestHex()
  }

  /** xxh64 of every chunk, for the journal and the manifest. */
  chunkSums(): string[] {
    return this.store.done.map((c) => c ?? '')
  }
}
