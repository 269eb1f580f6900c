import {setMaxListeners} from 'node:events'
import type {FileHandle} from 'node:fs/promises'

import {MsrError, fromFsError, isMsrError} from '../errors.js'
import type {EventSink} from '../events.js'
import type {Hub} from '../hub/types.js'
import {type CheckLevel, chunkSumsOfOpenFile} from '../integrity/check.js'
import {chunkBounds, loadXxh64, xxh64PiecesAsync} from '../integrity/chunks.js'
import {createResumableSha256, restoreSha256, type ResumableSha256} from '../integrity/sha256.js'
import type {Journal} from '../journal/journal.js'
import {type FileRecord, durableBytes} from '../journal/schema.js'
import {readFully} from '../store/read-fully.js'
import {type Block, BlockAssembler} from './block-assembler.js'
import {type Body, STOP} from './body.js'
import {type DurableView, checkpoint} from './checkpointer.js'
import {judgeRangeReply, rangeHeader, strongEtag} from './content-range.js'
import {openBody} from './http-body.js'
import {OrderedHasher} from './ordered-hasher.js'
import {PartialWriter} from './partial-writer.js'
import {type RateLimiter, abortError, sleep} from './rate-limiter.js'
import {type RetryPolicy, nextDelayMs} from './retry-policy.js'
import {type Segment, addConnection, missingRuns, pieceChunksFor, planSegments, splitAt, takeOver} from './segment-planner.js'
import {type Stall, StallDetector} from './stall-detector.js'
import {partialChunksOnDisk, prefixBytes} from './partial-chunks.js'

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

/** Adaptive connections: checked this often, added while each connection is slower than this. */
const ADAPTIVE_INTERVAL_MS = 1000
const ADAPTIVE_FAST_BYTES_PER_SEC = 32 * 1024 * 1024
/** Read-back batch for hashing chunks that finished out of order. */
const DRAIN_BATCH_BYTES = 8 * 1024 * 1024
/** Received chunks travel in blocks of this many bytes (whole chunks): one write, one hash job. */
const BLOCK_BYTES = 4 * 1024 * 1024
/** A block holding whole chunks is handed over after this long, full or not. */
const BLOCK_MAX_AGE_MS = 200
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
  private queue: Segment[] = []
  /** The assembler of each segment being fetched (its partial chunk survives reconnects). */
  private readonly assemblers = new Map<Segment, BlockAssembler>()
  private readonly writes = new Set<Promise<void>>()
  private writeError: unknown
  private checkpointing: Promise<void> | undefined
  private checkpointError: unknown
  private lastCheckpointAt = performance.now()
  private bytesSinceCheckpoint = 0
  private draining: Promise<void> = Promise.resolve()
  private drainActive = false
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
    const size = (await fh.stat()).size
    if (size > record.size) await fh.truncate(record.size)
    const fileBytes = Math.min(size, record.size)
    const chunks = record.chunks
    const C = record.chunkSizeBytes
    for (let i = 0; i < chunks.length; i++) if (chunks[i] !== null && chunkBounds(i, record.size, C).end > fileBytes) chunks[i] = null
    if (adoptUnknown && fileBytes > 0 && !chunks.some((c) => c !== null)) {
      // The journal was lost: take the whole chunks on disk on trust, the final SHA-256 decides.
      const sums = await chunkSumsOfOpenFile(fh, record.size, C)
      for (let i = 0; i < chunks.length; i++) chunks[i] = sums[i]
    }
    let prefix = 0
    while (prefix < chunks.length && chunks[prefix] !== null) prefix++
    if (prefix > 0 && (await readChunkSum(fh, record, prefix - 1, xxh)) !== chunks[prefix - 1]) {
      // The tail the journal vouches for changed on disk: check every chunk, keep the good ones.
      const sums = await chunkSumsOfOpenFile(fh, record.size, C)
      for (let i = 0; i < chunks.length; i++) if (chunks[i] !== null && sums[i] !== chunks[i]) chunks[i] = null
      opts.emit({type: 'warning', path: record.path, message: `partial of ${record.path} did not match its journal; falling back to the last good chunk`})
    }
    // Chunks a checkpoint caught half-way: their bytes so far, if the disk still has them.
    const prefills = await partialChunksOnDisk(fh, record, fileBytes, xxh)
    record.partialChunks = [...prefills].map(([index, data]) => ({index, bytes: data.length, xxh64: xxh(data)}))
    // Bytes past what the journal vouches for (written after the last checkpoint, or by something
    // else) are never trusted: cut them off, so the partial says no more than the journal.
    let claimedEnd = 0
    for (let i = chunks.length - 1; i >= 0 && claimedEnd === 0; i--) if (chunks[i] !== null) claimedEnd = chunkBounds(i, record.size, C).end
    for (const [index, data] of prefills) claimedEnd = Math.max(claimedEnd, index * C + data.length)
    if (fileBytes > claimedEnd) await fh.truncate(claimedEnd)

    // A restored hash state vouches for the bytes an earlier process hashed off the network. The
    // journal claims only what was fsynced, and the last kept chunk (where a crash on storage that
    // lies about fsync loses data) was checked above: by default the rest is trusted, as a complete
    // file is at `--check size`. At `--check fast|full` every chunk the state covers is read back
    // (alongside the download); a bad one is fetched again and the hash started over.
    const saved = record.sha256State
    const reach = prefixBytes(record.chunks, prefills, record.size, C)
    let hasher: ResumableSha256 | null = null
    if (saved && Number.isSafeInteger(saved.offsetBytes) && saved.offsetBytes >= 0 && saved.offsetBytes <= reach) hasher = await restoreSha256(saved)
    if (!hasher) {
      hasher = await createResumableSha256()
      if (reach > 0) opts.emit({type: 'rehash', path: record.path, bytes: reach, reason: saved ? 'saved hash state unusable' : 'no saved hash state'})
    }
    const hash = new OrderedHasher(hasher, C)
    const download = new ChunkedDownload(record, fh, hash, opts, xxh, prefills, partialPath)
    if (opts.check === 'fast' || opts.check === 'full') download.coveredCheck = download.findAlteredChunks(Math.min(chunks.length, hash.nextChunk))
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
    const ticker = setInterval(() => this.maybeCheckpoint(), Math.max(50, this.opts.checkpointIntervalMs / 2))
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
    const plan = planSegments(splitAt(missingRuns(this.done), this.prefills), want, pieceChunks)
    this.active = plan.active
    this.queue = plan.queue
    const workers: Promise<void>[] = this.active.map((seg) => this.runSegment(seg))
    let grow: NodeJS.Timeout | undefined
    if (this.opts.adaptiveConnections && this.opts.connections > 1) {
      let lastBytes = this.receivedBytes
      let lastAt = performance.now()
      grow = setInterval(() => {
        const now = performance.now()
        const perConnection = (this.receivedBytes - lastBytes) / ((now - lastAt) / 1000) / Math.max(1, this.active.length)
        lastBytes = this.receivedBytes
        lastAt = now
        if (this.active.length >= this.opts.connections || perConnection >= ADAPTIVE_FAST_BYTES_PER_SEC || this.abort.signal.aborted) return
        // Double while slow: 1, 2, 4, 8 connections within a few seconds on a throttled link.
        const add = Math.min(this.opts.connections - this.active.length, Math.max(1, this.active.length))
        for (let i = 0; i < add; i++) {
          const seg = addConnection(this.active, this.queue, pieceChunks)
          if (seg) workers.push(this.runSegment(seg))
        }
      }, ADAPTIVE_INTERVAL_MS)
    }
    try {
      let results: PromiseSettledResult<void>[] = []
      // Workers may be added while we wait: settle until no new one appeared.
      while (results.length < workers.length) results = await Promise.allSettled([...workers])
      return results
    } finally {
      if (grow) clearInterval(grow)
    }
  }

  /** One connection: fetches its segment, then takes over queued or stolen work until none is left. */
  private async runSegment(first: Segment): Promise<void> {
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
      seg = takeOver(this.active, this.queue)
    }
  }

  private async fetchWithRetries(seg: Segment, asm: BlockAssembler): Promise<void> {
    while (seg.next < seg.end) {
      if (this.abort.signal.aborted) throw abortError(this.abort.signal)
      const before = asm.position
      try {
        await this.fetchSegment(seg, asm)
      } catch (error) {
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
  private async fetchSegment(seg: Segment, asm: BlockAssembler): Promise<void> {
    const {record} = this
    const start = asm.position
    const end = asm.endBytes
    const request = new AbortController()
    const onAbort = () => request.abort(this.abort.signal.reason)
    this.abort.signal.addEventListener('abort', onAbort, {once: true})
    try {
      // No If-Range: mirrors and CDNs give one file different ETags; the listing's size and the
      // final SHA-256 decide, and a stale validator would turn every resume into a full 200.
      const res = await openBody({
        url: this.opts.hub.fileUrl(this.opts.modelId, this.opts.revision, record.path),
        headers: {Range: rangeHeader(start, end), 'Accept-Encoding': 'identity'},
        headersFor: (url) => this.opts.hub.headersFor(url),
        signal: request.signal,
        headersTimeoutMs: this.opts.idleTimeoutMs,
        maxRetryAfterMs: this.opts.policy.maxRetryAfterMs,
      })
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
      const etag = strongEtag(res.headers.etag)
      if (etag && record.etag && etag !== record.etag && this.opts.listingUnchanged && !(await this.opts.listingUnchanged())) {
        res.body.destroy()
        throw new MsrError('E_REMOTE_CHANGED', `${record.path} changed on the hub: the listing no longer gives the sha256 and size this partial was started with.`, {path: record.path})
      }
      if (etag) record.etag = etag
      await this.consume(res.body, seg, asm, verdict.skipBytes)
    } finally {
      this.abort.signal.removeEventListener('abort', onAbort)
      request.abort()
    }
  }

  /**
   * Reads the body into the segment's assembler. Every byte is copied before `take` returns;
   * waits (rate limit, room for blocks) pause the body and stop the stall clock. Returns only
   * after the last step it started is over (Body.pump guarantees it).
   */
  private async consume(body: Body, seg: Segment, asm: BlockAssembler, skipBytes: number): Promise<void> {
    const {record} = this
    let skip = skipBytes
    let stalled: MsrError | undefined
    const stall = new StallDetector({idleMs: this.opts.idleTimeoutMs, minBytesPerSec: this.opts.minBytesPerSec}, (s: Stall) => {
      stalled = s.kind === 'idle'
        ? new MsrError('E_TIMEOUT', `No data for ${Math.round(s.idleMs / 1000)} s on ${record.path}.`, {path: record.path, retryable: true})
        : new MsrError('E_TIMEOUT', `${record.path} is arriving at ${Math.round(s.bytesPerSec)} B/s, below the minimum of ${this.opts.minBytesPerSec} B/s.`, {path: record.path, retryable: true})
      body.destroy(stalled)
    })
    const held = (wait: Promise<void>): Promise<void> => {
      stall.hold()
      return wait.finally(() => stall.release())
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
      if (off < data.length) this.failuresWithoutProgress = 0
      let room: Promise<void> | undefined
      const from = off
      while (off < data.length && seg.next < seg.end) {
        const step = asm.copy(data, off)
        off = step.off
        if (step.chunkDone && asm.due(BLOCK_MAX_AGE_MS)) room = this.handOver(asm) ?? room
      }
      this.receivedBytes += off - from
      const limit = off > from ? this.opts.limiter?.consume(off - from, this.abort.signal) : undefined
      const wait = room && limit ? Promise.all([room, limit]).then(() => {}) : room ?? limit
      if (seg.next >= seg.end) return wait ? held(wait).then(() => {}) : undefined
      return wait ? held(wait) : undefined
    }
    try {
      const outcome = await body.pump(take)
      if (stalled) throw stalled
      if (outcome === 'end' && seg.next < seg.end) throw new MsrError('E_NETWORK', `Connection closed early while downloading ${record.path}.`, {path: record.path, retryable: true})
    } catch (error) {
      if (stalled) throw stalled
      // Everything this segment needed had arrived; what failed was only the wait for the end.
      if (seg.next >= seg.end && !this.abort.signal.aborted && !this.writeError) return
      if (isMsrError(error) || this.abort.signal.aborted) throw error
      throw new MsrError('E_NETWORK', `Connection lost while downloading ${record.path}: ${(error as Error).message}.`, {path: record.path, retryable: true, cause: error})
    } finally {
      stall.stop()
      if (!body.ended) body.destroy()
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
        this.maybeCheckpoint()
      },
      (error) => {
        this.writeError ??= diskError(error, `writing the partial of ${this.record.path}`, this.record.path)
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
    if (this.drainActive) return this.draining
    // Set and cleared synchronously with the loop: a chunk completing in between is either hashed
    // in memory or seen by the loop, never left behind.
    this.drainActive = true
    this.draining = (async () => {
      try {
        const chunk = this.record.chunkSizeBytes
        const batchChunks = Math.max(1, Math.floor(DRAIN_BATCH_BYTES / chunk))
        let buffer: Buffer | undefined
        while (this.hash.nextChunk < this.done.length && this.done[this.hash.nextChunk] !== null) {
          const first = this.hash.nextChunk
          let last = first + 1
          while (last < this.done.length && last - first < batchChunks && this.done[last] !== null) last++
          const start = first * chunk
          const end = chunkBounds(last - 1, this.record.size, chunk).end
          buffer ??= Buffer.allocUnsafe(Math.min(batchChunks * chunk, this.record.size))
          const got = await readFully(this.fh, buffer, end - start, start)
          // The loop may have been overtaken (chunks hashed in memory meanwhile): skip ahead.
          const from = this.hash.nextChunk
          if (from >= last) continue
          let verified = from
          let mismatch = false
          for (let i = from; i < last; i++) {
            const b = chunkBounds(i, this.record.size, chunk)
            if (b.end - start > got || this.xxh(buffer.subarray(b.start - start, b.end - start)) !== this.done[i]) {
              this.forgetChunk(i, `chunk ${i} of ${this.record.path} changed on disk; fetching it again`)
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
            this.throwHashError()
          }
          if (mismatch) break
        }
      } finally {
        this.drainActive = false
      }
    })()
    return this.draining
  }

  private forgetChunk(i: number, message: string): void {
    const b = chunkBounds(i, this.record.size, this.record.chunkSizeBytes)
    this.done[i] = null
    this.doneByteCount -= b.end - b.start
    this.record.chunks[i] = null
    this.opts.emit({type: 'warning', path: this.record.path, message})
  }

  /** Chunks below `count` whose bytes on disk no longer match their xxh64. */
  private async findAlteredChunks(count: number): Promise<number[]> {
    if (count === 0) return []
    const sums = await chunkSumsOfOpenFile(this.fh, this.record.size, this.record.chunkSizeBytes, count)
    const altered: number[] = []
    for (let i = 0; i < count; i++) if (this.done[i] !== null && sums[i] !== this.done[i]) altered.push(i)
    return altered
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

  private maybeCheckpoint(): void {
    const due = performance.now() - this.lastCheckpointAt >= this.opts.checkpointIntervalMs || this.bytesSinceCheckpoint >= this.opts.checkpointBytes
    if (!due || this.checkpointing) return
    this.checkpointing = this.checkpoint()
      .catch((error) => {
        this.checkpointError = diskError(error, `saving a checkpoint of ${this.record.path}`, this.record.path)
      })
      .finally(() => {
        this.checkpointing = undefined
      })
  }

  /**
   * Data first, journal second: whole chunks in hand are handed over, the bytes of every chunk
   * being filled are written, all of it is fsynced, and only then does the journal claim it.
   */
  async checkpoint(): Promise<void> {
    this.lastCheckpointAt = performance.now()
    this.bytesSinceCheckpoint = 0
    const partials: Array<{index: number; data: Buffer; written: Promise<void>}> = []
    for (const asm of this.assemblers.values()) {
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
        this.writeError ??= diskError(error, `writing the partial of ${this.record.path}`, this.record.path)
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
    await checkpoint(this.fh, this.opts.journal, this.record, {chunks: snapshot, partials: kept, state})
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



/**
 * A disk error (ENOSPC, EROFS, EIO) as a non-retryable MsrError. Raw, it would become a retryable
 * E_NETWORK in consume(): a full disk then re-downloaded the same chunk forever.
 */
function diskError(error: unknown, what: string, repoPath: string): MsrError {
  if (isMsrError(error)) return error
  const mapped = fromFsError(error, what, repoPath)
  return isMsrError(mapped) ? mapped : new MsrError('E_LOCAL', `Failed ${what}: ${(error as Error)?.message ?? String(error)}.`, {path: repoPath, cause: error, hint: 'Check the disk, then run the same command again; it resumes from the last checkpoint.'})
}

async function readChunkSum(fh: FileHandle, record: FileRecord, index: number, xxh: (d: Uint8Array) => string): Promise<string | null> {
  const {start, end} = chunkBounds(index, record.size, record.chunkSizeBytes)
  const buf = Buffer.allocUnsafe(end - start)
  const read = await readFully(fh, buf, buf.length, start)
  return read === buf.length ? xxh(buf) : null
}
