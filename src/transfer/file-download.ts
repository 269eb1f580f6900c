import {setMaxListeners} from 'node:events'
import type {FileHandle} from 'node:fs/promises'

import {MsrError, isMsrError} from '../errors.js'
import {fsFailure} from '../fs/fs-errors.js'
import type {EventSink} from '../events.js'
import type {Hub} from '../hub/types.js'
import type {CheckLevel} from '../integrity/check.js'
import {chunkBounds, loadXxh64, xxh64PiecesAsync} from '../integrity/chunks.js'
import {createResumableSha256} from '../integrity/sha256.js'
import type {Journal} from '../journal/journal.js'
import {type FileRecord, durableBytes} from '../journal/schema.js'
import {type Block, BlockAssembler} from './block-assembler.js'
import {type DurableView, checkpoint} from './checkpointer.js'
import {judgeRangeReply, rangeHeader, strongEtag} from './content-range.js'
import {openBody} from './http-body.js'
import {OrderedHasher} from './ordered-hasher.js'
import {PartialWriter} from './partial-writer.js'
import {type RateLimiter, abortError, sleep} from './rate-limiter.js'
import {type RetryPolicy, nextDelayMs} from './retry-policy.js'
import {type Segment, addConnection, connectionsToAdd, missingRuns, pieceChunksFor, planSegments, splitAt, takeOver} from './segment-planner.js'
import {ReadBack} from './read-back.js'
import {readSegmentBody} from './segment-reader.js'
import {prefixBytes} from './partial-chunks.js'
import {reconcileWithDisk} from './resume.js'

export interface TransferOptions {
  hub: Hub
  modelId: string
  revision: string
  journal: Journal
  emit: EventSink
  signal: AbortSignal
  policy: RetryPolicy
  /** Parallel ranged connections for this file (the most, when adaptive). */
  connections: number
  /** Start with one connection and add more (up to `connections`) while each one is slow. */
  adaptiveConnections?: boolean
  limiter?: RateLimiter
  /** No body byte for this long (our own waits excluded): reconnect. */
  idleTimeoutMs: number
  /** Less than this many bytes/s over one idle-timeout window: reconnect. */
  minBytesPerSec: number
  checkpointIntervalMs: number
  checkpointBytes: number
  /** `pull --check`: at `fast`/`full` a resume reads back every chunk its saved hash state covers. */
  check?: CheckLevel
  /**
   * Asked when the server names the file by another strong ETag than before: true when the hub's
   * listing still gives the same sha256 and size (a mirror or CDN with its own ETags: keep the
   * partial, the final SHA-256 decides); false when the file really changed.
   */
  listingUnchanged?: () => Promise<boolean>
}

/** Automatic connections: the rate per connection is measured over this window (see connectionsToAdd). */
const ADAPTIVE_INTERVAL_MS = 50
const ADAPTIVE_WINDOW_MS = 150
/** The first reply's head took this long (several round trips): a long link, see runWorkers. */
const LONG_LINK_HEAD_MS = 250
/** Received chunks travel in blocks of this many bytes (whole chunks): one write, one hash job. */
const BLOCK_BYTES = 4 * 1024 * 1024
/** Blocks being hashed or written per file: overlap with bounded memory. */
const MAX_BLOCKS_IN_FLIGHT = 4

/**
 * Fills the missing bytes of one partial file from the hub: segments over connections
 * (segment-planner), each received into a BlockAssembler, written by the PartialWriter, hashed in
 * file order by the OrderedHasher (chunks finished out of order are read back from disk when the
 * hash reaches them), and made durable by checkpoints (data fsync, then journal) that cover bytes,
 * not only whole chunks: a kill loses at most the bytes since the last checkpoint.
 */
export class ChunkedDownload {
  /** xxh64 of every chunk written (durable or not yet); null = missing. */
  private readonly done: Array<string | null>
  private doneByteCount: number
  private receivedBytes = 0
  private failuresWithoutProgress = 0
  private readonly abort = new AbortController()
  private active: Segment[] = []
  /** Missing chunks no connection has taken yet. */
  private unassigned: Segment[] = []
  /** Largest piece a connection takes, in chunks. */
  private pieceChunks = 1
  /** Connections (workers) running now. */
  private connectionCount = 0
  /** When the first reply's head of this round arrived. */
  private firstHeadAt: number | undefined
  /** Where the hub last redirected this file's download (a signed CDN URL), for the next pieces. */
  private resolvedUrl: string | undefined
  /** The assembler of each segment being fetched (its partial chunk survives reconnects). */
  private readonly assemblers = new Map<Segment, BlockAssembler>()
  private readonly writes = new Set<Promise<void>>()
  private writeError: unknown
  private checkpointing: Promise<void> | undefined
  private checkpointError: unknown
  private lastCheckpointAt = performance.now()
  private bytesSinceCheckpoint = 0
  private readonly readBack: ReadBack
  private coveredCheck: Promise<number[]> = Promise.resolve([])
  private readonly writer: PartialWriter

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
    this.done = [...record.chunks]
    this.doneByteCount = durableBytes(record)
    const chunk = record.chunkSizeBytes
    this.readBack = new ReadBack(fh, record, this.done, hash, xxh, (i, message) => this.forgetChunk(i, message), () => this.throwHashError())
    this.writer = new PartialWriter(fh, partialPath, record.size, Math.max(1, Math.min(Math.max(1, Math.floor(BLOCK_BYTES / chunk)) * chunk, record.size)))
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
    if (opts.check === 'fast' || opts.check === 'full') download.coveredCheck = download.readBack.alteredChunks(Math.min(record.chunks.length, hash.nextChunk))
    await download.drain()
    return download
  }

  /** Bytes already durable on disk (whole chunks and partial ones; not necessarily contiguous). */
  get resumedBytes(): number {
    let bytes = this.doneByteCount
    for (const data of this.prefills.values()) bytes += data.length
    return bytes
  }

  /** Downloads every missing byte; resolves when the file is complete on disk and fully hashed. */
  async run(): Promise<{receivedBytes: number}> {
    const onAbort = () => this.abort.abort(this.opts.signal.reason)
    if (this.opts.signal.aborted) onAbort()
    this.opts.signal.addEventListener('abort', onAbort, {once: true})
    // Checkpoints by time too: on a slow link no chunk may complete for many seconds.
    const ticker = setInterval(() => this.maybeCheckpoint(true), Math.max(50, this.opts.checkpointIntervalMs / 4))
    await this.writer.open()
    try {
      // A chunk that fails its read-back check is cleared and fetched again in another round.
      for (let round = 0; ; round++) {
        if (round > 4) throw new MsrError('E_LOCAL', `Chunks of ${this.record.path} keep failing their read-back check.`, {path: this.record.path, hint: 'The disk may be failing; check it, then run again.'})
        if (this.done.includes(null)) {
          const results = await this.runWorkers()
          await this.settleWrites()
          const failed = results.find((r) => r.status === 'rejected') as PromiseRejectedResult | undefined
          if (failed) throw failed.reason
        }
        await this.settleCoveredCheck()
        await this.drain()
        this.throwCheckpointError()
        if (!this.done.includes(null)) break
      }
      return {receivedBytes: this.receivedBytes}
    } catch (error) {
      this.abort.abort(error)
      // Leave the journal pointing at everything that is durable, on failure and on Ctrl-C.
      await this.checkpointing?.catch(() => {})
      await this.checkpoint().catch(() => {})
      throw this.opts.signal.aborted ? abortError(this.opts.signal) : error
    } finally {
      clearInterval(ticker)
      this.opts.signal.removeEventListener('abort', onAbort)
      await this.checkpointing?.catch(() => {})
      await this.settleWrites().catch(() => {})
      await this.writer.close()
    }
  }

  /** Runs a connection per planned segment, adding connections while each one is slow (adaptive). */
  private async runWorkers(): Promise<PromiseSettledResult<void>[]> {
    const want = this.opts.adaptiveConnections ? 1 : Math.max(1, this.opts.connections)
    const pieceChunks = pieceChunksFor(this.done.length, this.record.chunkSizeBytes)
    this.pieceChunks = pieceChunks
    const plan = planSegments(splitAt(missingRuns(this.done), this.prefills), want, pieceChunks)
    this.active = plan.active
    this.unassigned = plan.unassigned
    const workers: Promise<void>[] = this.active.map((seg) => this.runSegment(seg))
    let growTimer: NodeJS.Timeout | undefined
    this.firstHeadAt = undefined
    if (this.opts.adaptiveConnections && this.opts.connections > 1) {
      // A long link shows before any byte arrives: the first reply's head takes many round trips
      // (TCP, TLS, the hub's redirect). Then every connection is opened at once, as aria2c does;
      // waiting for a rate measurement cost 1.5 s of 8 connections on a 100 ms link. Otherwise the
      // rate is measured from the first body byte (connect and TLS are not the link's speed).
      const startedAt = performance.now()
      let lastBytes = -1
      let lastAt = 0
      const grow = (perConnection: number) => {
        const add = connectionsToAdd(this.active.length, this.opts.connections, perConnection)
        for (let i = 0; i < add; i++) {
          const seg = addConnection(this.active, this.unassigned, this.opts.connections, pieceChunks)
          if (seg) workers.push(this.runSegment(seg))
        }
      }
      growTimer = setInterval(() => {
        if (this.abort.signal.aborted) return
        const now = performance.now()
        const headMs = (this.firstHeadAt ?? now) - startedAt
        if (lastBytes < 0 && headMs >= LONG_LINK_HEAD_MS) return grow(0)
        if (lastBytes < 0) {
          if (this.receivedBytes > 0) [lastBytes, lastAt] = [this.receivedBytes, now]
          return
        }
        if (now - lastAt < ADAPTIVE_WINDOW_MS) return
        grow((this.receivedBytes - lastBytes) / ((now - lastAt) / 1000) / Math.max(1, this.active.length))
        ;[lastBytes, lastAt] = [this.receivedBytes, now]
      }, ADAPTIVE_INTERVAL_MS)
    }
    try {
      let results: PromiseSettledResult<void>[] = []
      // Workers may be added while we wait: settle until no new one appeared.
      while (results.length < workers.length) results = await Promise.allSettled([...workers])
      return results
    } finally {
      if (growTimer) clearInterval(growTimer)
    }
  }

  /** One connection: fetches its segment, then takes over queued or stolen work until none is left. */
  private async runSegment(first: Segment): Promise<void> {
    this.connectionCount++
    try {
      await this.runSegments(first)
    } finally {
      this.connectionCount--
    }
  }

  private async runSegments(first: Segment): Promise<void> {
    let seg: Segment | undefined = first
    while (seg) {
      const asm = new BlockAssembler(seg, this.record.chunkSizeBytes, this.record.size, () => this.writer.takeBuffer())
      const known = this.prefills.get(seg.next)
      if (known) {
        asm.prefill(known)
        this.prefills.delete(seg.next)
      }
      this.assemblers.set(seg, asm)
      try {
        await this.fetchWithRetries(seg, asm)
      } finally {
        // Whole chunks already received are kept: hand them over even when the segment failed.
        if (!this.writeError) void this.handOver(asm)?.catch(() => {})
      }
      // A failed segment keeps its assembler: the last checkpoint makes its partial chunk durable.
      this.assemblers.delete(seg)
      const spare = asm.release()
      if (spare) this.writer.giveBack(spare)
      this.active = this.active.filter((s) => s !== seg)
      seg = takeOver(this.active, this.unassigned, this.connectionCount, this.pieceChunks)
    }
  }

  private async fetchWithRetries(seg: Segment, asm: BlockAssembler): Promise<void> {
    let retrying = false
    while (seg.next < seg.end) {
      if (this.abort.signal.aborted) throw abortError(this.abort.signal)
      const before = asm.position
      try {
        await this.fetchSegment(seg, asm, retrying)
        retrying = false
      } catch (error) {
        retrying = true
        if (this.abort.signal.aborted) throw abortError(this.abort.signal)
        if (!isMsrError(error) || !error.retryable) throw error
        // Every byte that arrived is kept (the transport delivers in order; the SHA-256 decides):
        // a retry that brought any new byte is progress, and the next request starts after it.
        // A link that drops every 64 KB still finishes, without sending a byte twice.
        const progressed = asm.position > before || seg.next >= seg.end
        if (progressed) this.failuresWithoutProgress = 0
        this.failuresWithoutProgress++
        if (this.failuresWithoutProgress > this.opts.policy.maxRetries) {
          // The last failure's code (E_PROTOCOL, E_TIMEOUT, ...): a misbehaving server is not a bad network.
          throw new MsrError(error.code, `Gave up on ${this.record.path} after ${this.opts.policy.maxRetries} retries without progress: ${error.message}`, {
            path: this.record.path, cause: error, hint: 'Run the same command again; it resumes from the last checkpoint.',
          })
        }
        const delayMs = progressed && error.retryAfterMs === undefined ? 0 : nextDelayMs(this.failuresWithoutProgress, this.opts.policy, error.retryAfterMs)
        this.opts.emit({type: 'retry', path: this.record.path, attempt: this.failuresWithoutProgress, maxRetries: this.opts.policy.maxRetries, delayMs, reason: error.message, code: error.code})
        if (delayMs > 0) await sleep(delayMs, this.abort.signal)
      }
    }
  }

  /** One ranged request for the rest of `seg`, from the exact next byte it needs. */
  private async fetchSegment(seg: Segment, asm: BlockAssembler, retrying: boolean): Promise<void> {
    const {record} = this
    // New pieces go straight to where the hub redirected the last request (one round trip per
    // piece, not two); a retry asks the hub again (the signed URL may have expired, or moved).
    const resolved = retrying ? undefined : this.resolvedUrl
    const start = asm.position
    const end = asm.endBytes
    const request = new AbortController()
    const onAbort = () => request.abort(this.abort.signal.reason)
    this.abort.signal.addEventListener('abort', onAbort, {once: true})
    try {
      // No If-Range: mirrors and CDNs give one file different ETags; the listing's size and the
      // final SHA-256 decide, and a stale validator would turn every resume into a full 200.
      const res = await openBody({
        url: resolved ?? this.opts.hub.fileUrl(this.opts.modelId, this.opts.revision, record.path),
        resolvedUrl: resolved !== undefined,
        headers: {Range: rangeHeader(start, end), 'Accept-Encoding': 'identity'},
        headersFor: (url) => this.opts.hub.headersFor(url),
        signal: request.signal,
        headersTimeoutMs: this.opts.idleTimeoutMs,
        maxRetryAfterMs: this.opts.policy.maxRetryAfterMs,
      })
      this.firstHeadAt ??= performance.now()
      const verdict = judgeRangeReply({
        status: res.status,
        requestedStart: start,
        expectedTotal: record.size,
        contentRange: res.headers['content-range'],
        contentLength: res.headers['content-length'],
        contentEncoding: res.headers['content-encoding'],
        contentType: res.headers['content-type'],
      })
      if (!verdict.ok) {
        res.body.destroy()
        if (verdict.reason === 'changed') throw new MsrError('E_REMOTE_CHANGED', `${record.path} changed on the hub: ${verdict.message}.`, {path: record.path})
        throw new MsrError('E_PROTOCOL', `Bad reply for ${record.path}: ${verdict.message}.`, {path: record.path, retryable: true})
      }
      this.resolvedUrl = res.url.href === this.opts.hub.fileUrl(this.opts.modelId, this.opts.revision, record.path) ? undefined : res.url.href
      const etag = strongEtag(res.headers.etag)
      if (etag && record.etag && etag !== record.etag && this.opts.listingUnchanged && !(await this.opts.listingUnchanged())) {
        res.body.destroy()
        throw new MsrError('E_REMOTE_CHANGED', `${record.path} changed on the hub: the listing no longer gives the sha256 and size this partial was started with.`, {path: record.path})
      }
      if (etag) record.etag = etag
      await readSegmentBody(res.body, {
        path: record.path, seg, asm, skipBytes: verdict.skipBytes,
        idleTimeoutMs: this.opts.idleTimeoutMs, minBytesPerSec: this.opts.minBytesPerSec, limiter: this.opts.limiter, signal: this.abort.signal,
        onBytes: (bytes) => {
          this.receivedBytes += bytes
          this.failuresWithoutProgress = 0
        },
        handOver: (a) => this.handOver(a),
        failed: () => Boolean(this.writeError),
      })
    } finally {
      this.abort.signal.removeEventListener('abort', onAbort)
      request.abort()
    }
  }

  /** Hands the assembler's whole chunks over; a promise when the caller must wait for room. */
  private handOver(asm: BlockAssembler): Promise<void> | undefined {
    const block = asm.handOver()
    return block ? this.completeBlock(block) : undefined
  }

  /**
   * Received whole chunks: hashed at once when they are next in file order (from memory, no
   * read-back), and written without waiting, so the socket keeps flowing while the disk works.
   * A chunk counts as done only when its write completed. Returns a promise when there are
   * MAX_BLOCKS_IN_FLIGHT blocks in hand (the caller pauses its body).
   */
  private completeBlock({first, buffer, length}: Block): Promise<void> | undefined {
    if (this.writeError) throw this.writeError
    const data = buffer.subarray(0, length)
    const chunk = this.record.chunkSizeBytes
    const inOrder = first === this.hash.nextChunk
    // A block ahead of the hash only gets its xxh64s; it is read back and checked when the hash gets there.
    const hashed = inOrder ? this.hash.feed(first, data) : xxh64PiecesAsync(data, chunk)
    const written = this.writer.write(data, first * chunk, inOrder)
    const write = Promise.all([hashed, written]).then(
      ([sums]) => {
        for (let k = 0; k < sums.length; k++) this.done[first + k] = sums[k]
        this.hash.promote(this.writtenPrefixBytes())
        this.doneByteCount += length
        this.writer.giveBack(buffer)
        this.bytesSinceCheckpoint += length
        this.opts.emit({type: 'progress', path: this.record.path, bytesDone: this.doneByteCount, size: this.record.size, receivedBytes: this.receivedBytes})
        if (this.hash.nextChunk < this.done.length && this.done[this.hash.nextChunk] !== null) void this.drain()
        this.maybeCheckpoint(false)
      },
      (error) => {
        this.writeError ??= fsFailure(error, 'writing the partial file', this.record.path)
      },
    )
    this.writes.add(write)
    void write.finally(() => this.writes.delete(write))
    return this.writes.size >= MAX_BLOCKS_IN_FLIGHT ? this.roomForBlocks() : undefined
  }

  private async roomForBlocks(): Promise<void> {
    while (this.writes.size >= MAX_BLOCKS_IN_FLIGHT) await Promise.race(this.writes)
    if (this.writeError) throw this.writeError
  }

  private writtenPrefixBytes(): number {
    let i = 0
    while (i < this.done.length && this.done[i] !== null) i++
    return Math.min(this.record.size, i * this.record.chunkSizeBytes)
  }

  /** Resolves when every write started so far has finished (successfully or not). */
  private async settleWrites(): Promise<void> {
    while (this.writes.size > 0) await Promise.allSettled([...this.writes])
    if (this.writeError) throw this.writeError
  }

  /** Hashes chunks that were finished out of order, reading them back (and checking them) from disk. */
  private drain(): Promise<void> {
    return this.readBack.drain()
  }

  private forgetChunk(i: number, message: string): void {
    const b = chunkBounds(i, this.record.size, this.record.chunkSizeBytes)
    this.done[i] = null
    this.doneByteCount -= b.end - b.start
    this.record.chunks[i] = null
    this.opts.emit({type: 'warning', path: this.record.path, message})
  }

  /** Waits for the background check of the chunks a restored hash state covers; acts on its verdict. */
  private async settleCoveredCheck(): Promise<void> {
    const altered = await this.coveredCheck
    this.coveredCheck = Promise.resolve([])
    if (altered.length === 0) return
    for (const i of altered) this.forgetChunk(i, `chunk ${i} of the partial of ${this.record.path} changed on disk; fetching it again`)
    // The restored state hashed the old bytes: start over, drain() re-reads from disk.
    await this.hash.reset(await createResumableSha256())
    delete this.record.sha256State
    this.opts.emit({type: 'rehash', path: this.record.path, bytes: this.writtenPrefixBytes(), reason: 'partial changed on disk'})
  }

  private throwHashError(): void {
    const error = this.hash.error
    if (error) throw new MsrError('E_LOCAL', `Hashing ${this.record.path} failed: ${(error as Error)?.message ?? String(error)}.`, {path: this.record.path, cause: error})
  }

  /**
   * `byTimer`: called by the timer, not right after a block was handed over. A checkpoint due by
   * time is taken only then: after a hand-over the chunk being filled is nearly empty, and a slow
   * link's checkpoints would then rarely keep the bytes of a half-received chunk.
   */
  private maybeCheckpoint(byTimer: boolean): void {
    const dueByTime = byTimer && performance.now() - this.lastCheckpointAt >= this.opts.checkpointIntervalMs
    if ((!dueByTime && this.bytesSinceCheckpoint < this.opts.checkpointBytes) || this.checkpointing) return
    // The bytes of chunks still being filled are worth a write only on a slow link (due by time: less
    // than checkpointBytes a second). Due by bytes, they are under a MiB of several MiB a second,
    // and writing, hashing and copying them at every checkpoint cost a fast link 0.3 s per GiB.
    this.checkpointing = this.checkpoint(dueByTime)
      .catch((error) => {
        this.checkpointError = fsFailure(error, 'saving a checkpoint', this.record.path)
      })
      .finally(() => {
        this.checkpointing = undefined
      })
  }

  /**
   * Data first, journal second: whole chunks in hand are handed over, the bytes of every chunk
   * being filled are written, all of it is fsynced, and only then does the journal claim it.
   */
  async checkpoint(withPartialChunks = true): Promise<void> {
    this.lastCheckpointAt = performance.now()
    this.bytesSinceCheckpoint = 0
    const partials: Array<{index: number; data: Buffer; written: Promise<void>}> = []
    for (const asm of withPartialChunks ? this.assemblers.values() : []) {
      if (asm.hasWholeChunks && !this.writeError) void this.handOver(asm)?.catch(() => {})
      const partial = asm.partial()
      if (partial) partials.push({...partial, written: this.writer.write(partial.data, partial.index * this.record.chunkSizeBytes, false)})
    }
    await Promise.allSettled([...this.writes])
    const kept: DurableView['partials'] = []
    for (const p of partials) {
      try {
        await p.written
      } catch (error) {
        this.writeError ??= fsFailure(error, 'writing the partial file', this.record.path)
        continue
      }
      if (this.done[p.index] === null) kept.push({index: p.index, data: p.data, xxh64: this.xxh(p.data)})
    }
    // Partial chunks kept from the last run whose connection has not started yet: still claimed.
    for (const [index, data] of this.prefills) kept.push({index, data, xxh64: this.xxh(data)})
    const snapshot = [...this.done]
    // The state at the byte-exact end of the durable prefix when a partial chunk ends it.
    const prefixEnd = kept.find((p) => p.index * this.record.chunkSizeBytes === prefixBytes(snapshot, new Map(), this.record.size, this.record.chunkSizeBytes))
    const state = (prefixEnd && (await this.hash.stateThrough(prefixEnd.index, prefixEnd.data))) || this.hash.durableState
    await checkpoint(this.fh, this.opts.journal, this.record, {chunks: snapshot, partials: withPartialChunks ? kept : undefined, state})
  }

  private throwCheckpointError(): void {
    if (this.checkpointError) {
      const error = this.checkpointError
      this.checkpointError = undefined
      throw error
    }
  }

  /** Final digest over the whole file (every chunk must be hashed). */
  async digestHex(): Promise<string> {
    await this.hash.settled()
    this.throwHashError()
    if (this.hash.nextChunk !== this.done.length) throw new Error(`internal: ${this.record.path} not fully hashed`)
    return this.hash.digestHex()
  }

  /** xxh64 of every chunk, for the journal and the manifest. */
  chunkSums(): string[] {
    return this.done.map((c) => c ?? '')
  }
}
