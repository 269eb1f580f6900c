import {setMaxListeners} from 'node:events'
import fs, {type FileHandle} from 'node:fs/promises'

import {MsrError, fromFsError, isMsrError} from '../errors.js'
import type {EventSink} from '../events.js'
import type {Hub} from '../hub/types.js'
import {type CheckLevel, chunkSumsOfOpenFile} from '../integrity/check.js'
import {chunkBounds, loadXxh64, xxh64PiecesAsync} from '../integrity/chunks.js'
import {alignmentOffset} from '../integrity/sha256-native.js'
import {createResumableSha256, restoreSha256, type ResumableSha256, type SavedSha256State} from '../integrity/sha256.js'
import {crashPoint} from '../journal/crash-points.js'
import type {Journal} from '../journal/journal.js'
import {type FileRecord, durableBytes, durablePrefixBytes} from '../journal/schema.js'
import {readFully} from '../store/read-fully.js'
import {judgeRangeReply, rangeHeader, strongEtag} from './content-range.js'
import {type Body, HTTP_CLIENT_ENV, openStream} from './http.js'
import {STOP} from './pump.js'
import {type RateLimiter, abortError, sleep} from './rate-limiter.js'
import {type RetryPolicy, nextDelayMs} from './retry-policy.js'

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
  /**
   * Start with one connection and add more (up to `connections`) only while each one is slow:
   * a throttled CDN gets parallel ranges, a fast link keeps one stream and spends no CPU on more.
   */
  adaptiveConnections?: boolean
  limiter?: RateLimiter
  /** No body byte for this long: reconnect. */
  idleTimeoutMs: number
  /** Less than this many bytes/s over one idle-timeout window: reconnect. */
  minBytesPerSec: number
  checkpointIntervalMs: number
  checkpointBytes: number
  /**
   * `pull --check`: at `fast` or `full`, a resume reads back every chunk its saved hash state
   * covers (see prepare()); at `size` (the default) it checks the last kept chunk, as the journal
   * protocol specifies, and trusts the fsynced rest like a complete file.
   */
  check?: CheckLevel
}

export interface ChunkFetchResult {
  /** Bytes received over the network for this file. */
  receivedBytes: number
}

interface Segment {
  /** Next chunk this segment will fetch. */
  next: number
  /** Exclusive; may shrink when an idle worker steals the tail. */
  end: number
}

/**
 * Fills the missing chunks of one partial file from the hub, hashing in order as it goes, and
 * checkpointing (data fsync, then journal) so that a kill at any moment loses at most the bytes
 * since the last checkpoint. The SHA-256 covers the contiguous prefix; chunks finished out of
 * order (other connections) are read back from disk when the prefix reaches them.
 */
export class ChunkedDownload {
  private readonly xxh: (data: Uint8Array) => string
  /** xxh64 of every chunk written (durable or not yet). */
  private readonly done: Array<string | null>
  private hashedChunks = 0
  private draining: Promise<void> = Promise.resolve()
  private drainActive = false
  private checkpointing: Promise<void> | undefined
  private checkpointError: unknown
  private lastCheckpointAt = performance.now()
  private bytesSinceCheckpoint = 0
  private receivedBytes = 0
  private failuresWithoutProgress = 0
  private readonly abort = new AbortController()
  private segments: Segment[] = []
  private readonly writes = new Set<Promise<void>>()
  private writeError: unknown
  private readonly pool: Buffer[] = []
  private doneByteCount = 0
  /** Chunks [0, writtenPrefix) are all written. */
  private writtenPrefix = 0
  private pendingStates: SavedSha256State[] = []
  /**
   * The in-order SHA-256 updates, one after another (the native engine runs each on libuv's thread
   * pool). `hashedChunks` counts chunks handed to this chain; the hash covers them once it settles.
   */
  private shaChain: Promise<void> = Promise.resolve()
  /** The writes to the partial, one after another. */
  private diskTail: Promise<void> = Promise.resolve()
  /** The partial opened with O_DIRECT for whole aligned blocks (see openDirect), if in use. */
  private direct: FileHandle | undefined
  private partialPath: string | undefined
  private hashError: unknown
  private durableState: SavedSha256State | undefined
  private coveredCheck: Promise<number[]> = Promise.resolve([])

  private constructor(
    private readonly record: FileRecord,
    private readonly fh: FileHandle,
    private hasher: ResumableSha256,
    private readonly opts: TransferOptions,
    xxh: (data: Uint8Array) => string,
  ) {
    this.xxh = xxh
    // One listener per connection and per retry wait: up to 32 connections is normal, not a leak.
    setMaxListeners(0, this.abort.signal)
    this.done = [...record.chunks]
    this.doneByteCount = durableBytes(record)
  }

  /**
   * Reconciles the journal with the partial on disk and returns a download ready to continue:
   * chunks past the end of the file are forgotten, the last durable chunk is re-checked, and the
   * saved hash state is loaded, or the prefix re-hashed from disk when it cannot be.
   */
  static async prepare(record: FileRecord, fh: FileHandle, opts: TransferOptions, adoptUnknown = false, partialPath?: string): Promise<ChunkedDownload> {
    const xxh = await loadXxh64()
    const size = (await fh.stat()).size
    if (size > record.size) await fh.truncate(record.size)
    const fileBytes = Math.min(size, record.size)
    const chunks = record.chunks
    for (let i = 0; i < chunks.length; i++) {
      if (chunks[i] !== null && chunkBounds(i, record.size, record.chunkSizeBytes).end > fileBytes) chunks[i] = null
    }
    if (adoptUnknown && fileBytes > 0 && !chunks.some((c) => c !== null)) {
      // The journal was lost: take the whole chunks on disk on trust, the final SHA-256 decides.
      const sums = await chunkSumsOfOpenFile(fh, record.size, record.chunkSizeBytes)
      for (let i = 0; i < chunks.length; i++) chunks[i] = sums[i]
    }
    let prefix = 0
    while (prefix < chunks.length && chunks[prefix] !== null) prefix++
    if (prefix > 0 && (await readChunkSum(fh, record, prefix - 1, xxh)) !== chunks[prefix - 1]) {
      // The tail the journal vouches for changed on disk: check every chunk, keep the good ones.
      const sums = await chunkSumsOfOpenFile(fh, record.size, record.chunkSizeBytes)
      for (let i = 0; i < chunks.length; i++) if (chunks[i] !== null && sums[i] !== chunks[i]) chunks[i] = null
      opts.emit({type: 'warning', path: record.path, message: `partial of ${record.path} did not match its journal; falling back to the last good chunk`})
    }
    let hasher: ResumableSha256 | null = null
    const saved = record.sha256State
    // A restored hash state vouches for the bytes an earlier process hashed off the network, not for
    // what is on disk now. The journal claims only what was fsynced, and the last kept chunk (where
    // a crash on storage that lies about fsync loses data) was checked above: by default the rest
    // is trusted, as a complete file is at `--check size`, and a resume costs only what is missing.
    // At `--check fast|full` every chunk the state covers is read back against its xxh64 (bit rot,
    // another writer); a bad one is fetched again and the state dropped (drain() re-hashes, and
    // checks, from disk). That check runs while the missing chunks download; run() waits for it
    // before the last round.
    const coveredChunks = saved && Number.isSafeInteger(saved.offsetBytes) ? Math.min(chunks.length, Math.ceil(saved.offsetBytes / record.chunkSizeBytes)) : 0
    // Bytes past the last chunk the journal vouches for (written after the last checkpoint, or by
    // something else) are never trusted: cut them off, so the partial says no more than the journal.
    let claimedEnd = 0
    for (let i = chunks.length - 1; i >= 0 && claimedEnd === 0; i--) if (chunks[i] !== null) claimedEnd = chunkBounds(i, record.size, record.chunkSizeBytes).end
    if (fileBytes > claimedEnd) await fh.truncate(claimedEnd)
    const prefixBytes = durablePrefixBytes(record)
    if (saved && saved.offsetBytes <= prefixBytes && (saved.offsetBytes % record.chunkSizeBytes === 0 || saved.offsetBytes === record.size)) {
      hasher = await restoreSha256(saved)
    }
    if (!hasher) {
      hasher = await createResumableSha256()
      if (prefixBytes > 0) {
        opts.emit({type: 'rehash', path: record.path, bytes: prefixBytes, reason: saved ? 'saved hash state unusable' : 'no saved hash state'})
      }
    }
    const download = new ChunkedDownload(record, fh, hasher, opts, xxh)
    download.partialPath = partialPath
    download.hashedChunks = Math.floor(hasher.offsetBytes / record.chunkSizeBytes)
    if (hasher.offsetBytes > 0) download.durableState = hasher.save()
    const recheckKept = opts.check === 'fast' || opts.check === 'full'
    download.coveredCheck = recheckKept ? download.findAlteredChunks(Math.min(coveredChunks, download.hashedChunks)) : Promise.resolve([])
    await download.drain()
    return download
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
    this.opts.emit({type: 'warning', path: this.record.path, message: `chunk${altered.length === 1 ? '' : 's'} ${altered.join(', ')} of the partial of ${this.record.path} changed on disk; fetching ${altered.length === 1 ? 'it' : 'them'} again`})
    for (const i of altered) {
      this.done[i] = null
      this.record.chunks[i] = null
      this.doneByteCount -= chunkBounds(i, this.record.size, this.record.chunkSizeBytes).end - i * this.record.chunkSizeBytes
    }
    // The restored state hashed the old bytes: start the SHA-256 over, drain() re-reads from disk.
    await this.shaChain
    this.hasher = await createResumableSha256()
    this.hashedChunks = 0
    this.writtenPrefix = 0
    this.pendingStates = []
    this.durableState = undefined
    delete this.record.sha256State
    this.opts.emit({type: 'rehash', path: this.record.path, bytes: durablePrefixBytes({...this.record, chunks: this.done}), reason: 'partial changed on disk'})
  }

  /** Bytes already durable on disk (not necessarily contiguous with segmented downloads). */
  get resumedBytes(): number {
    return this.doneBytes()
  }

  /** Downloads every missing chunk; resolves when the file is complete on disk and fully hashed. */
  async run(): Promise<ChunkFetchResult> {
    const onAbort = () => this.abort.abort(this.opts.signal.reason)
    if (this.opts.signal.aborted) onAbort()
    this.opts.signal.addEventListener('abort', onAbort, {once: true})
    await this.openDirect()
    try {
      // A chunk that fails its read-back check (while being hashed, or in the check of the chunks a
      // restored hash state covers) is cleared and fetched again in another round.
      for (let round = 0; ; round++) {
        if (round > 4) throw new MsrError('E_LOCAL', `Chunks of ${this.record.path} keep failing their read-back check.`, {path: this.record.path, hint: 'The disk may be failing; check it, then run again.'})
        if (this.done.includes(null)) {
          this.planSegments()
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
      this.opts.signal.removeEventListener('abort', onAbort)
      await this.checkpointing?.catch(() => {})
      await this.closeDirect()
    }
  }

  /**
   * Large files are written with O_DIRECT where the file system allows it: whole aligned blocks go
   * from our buffer to the device, skipping the page cache. On these machines filling the page
   * cache costs more CPU than everything else a download does (1 GiB: 2-4 s of kernel time in
   * buffered writes, 0.2 s direct; measured with dd). The normal handle still does everything else
   * (reads, the unaligned tail, truncate, fdatasync, which flushes the device for both). Not on
   * tmpfs and the like (open fails: buffered writes), nor with MS_RESUME_DIRECT_IO=0.
   */
  private async openDirect(): Promise<void> {
    const O_DIRECT = (fs.constants as Record<string, number>).O_DIRECT
    const off = ['0', 'off', 'false', 'no'].includes((process.env[DIRECT_IO_ENV] ?? '').trim().toLowerCase())
    if (this.direct || off || !O_DIRECT || !this.partialPath || this.record.size < DIRECT_IO_MIN_BYTES) return
    if (alignmentOffset(Buffer.alloc(1), DIRECT_ALIGN) === null) return
    try {
      this.direct = await fs.open(this.partialPath, fs.constants.O_WRONLY | O_DIRECT)
      // Blocks from before (buffered) are unaligned: start the pool afresh.
      this.pool.length = 0
    } catch {
      this.direct = undefined
    }
  }

  private async closeDirect(): Promise<void> {
    const direct = this.direct
    if (!direct) return
    await this.settleWrites().catch(() => {})
    this.direct = undefined
    this.pool.length = 0
    await direct.close().catch(() => {})
  }

  /**
   * Writes one block: O_DIRECT when it is aligned and already hashed (`mayBypassCache`), buffered
   * otherwise (or when the device refuses).
   */
  private async writeBlock(data: Buffer, position: number, mayBypassCache: boolean): Promise<void> {
    const direct = this.direct
    if (direct && mayBypassCache && position % DIRECT_ALIGN === 0 && data.byteLength % DIRECT_ALIGN === 0 && alignmentOffset(data, DIRECT_ALIGN) === 0) {
      try {
        return await writeFully(direct, data, position)
      } catch (error) {
        if ((error as NodeJS.ErrnoException).code !== 'EINVAL') throw error
        // The file system takes O_DIRECT opens but not these writes: buffered from now on.
        this.direct = undefined
        void direct.close().catch(() => {})
      }
    }
    return writeFully(this.fh, data, position)
  }

  /** Runs a connection per planned segment, adding connections while each one is slow (adaptive). */
  private async runWorkers(): Promise<PromiseSettledResult<void>[]> {
    const workers: Promise<void>[] = this.segments.map((seg) => this.runSegment(seg))
    let grow: NodeJS.Timeout | undefined
    if (this.opts.adaptiveConnections && this.opts.connections > 1) {
      let lastBytes = this.receivedBytes
      let lastAt = performance.now()
      grow = setInterval(() => {
        const now = performance.now()
        const perConnection = (this.receivedBytes - lastBytes) / ((now - lastAt) / 1000) / Math.max(1, this.segments.length)
        lastBytes = this.receivedBytes
        lastAt = now
        if (this.segments.length >= this.opts.connections || perConnection >= ADAPTIVE_FAST_BYTES_PER_SEC || this.abort.signal.aborted) return
        // Double while slow: 1, 2, 4, 8 connections within a few seconds on a throttled link.
        const add = Math.min(this.opts.connections - this.segments.length, Math.max(1, this.segments.length))
        for (let i = 0; i < add; i++) {
          const seg = this.segmentForNewConnection()
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

  /** Final digest over the whole file (every chunk must be hashed). */
  async digestHex(): Promise<string> {
    await this.shaChain
    this.throwHashError()
    if (this.hashedChunks !== this.done.length) throw new Error(`internal: ${this.record.path} not fully hashed`)
    return this.hasher.digestHex()
  }

  /** xxh64 of every chunk, for the journal and the manifest. */
  chunkSums(): string[] {
    return this.done.map((c) => c ?? '')
  }

  /** Splits the missing chunks into up to `connections` contiguous segments. */
  /**
   * One connection fetches each missing run in a single request. Several connections take pieces
   * of at least 16 MiB in file order from a shared queue, rather than one quarter of the file
   * each: the finished region then stays nearly contiguous, so the in-order SHA-256 mostly hashes
   * from memory and a resume after a kill does not have to re-read most of the file to hash it.
   */
  private planSegments(): void {
    const runs: Segment[] = []
    for (let i = 0; i < this.done.length; i++) {
      if (this.done[i] !== null) continue
      const last = runs.at(-1)
      if (last && last.end === i) last.end = i + 1
      else runs.push({next: i, end: i + 1})
    }
    const want = this.opts.adaptiveConnections ? 1 : Math.max(1, this.opts.connections)
    let pieces = runs
    if (want > 1) {
      const pieceChunks = this.pieceChunks()
      pieces = []
      for (const run of runs) {
        for (let start = run.next; start < run.end; start += pieceChunks) pieces.push({next: start, end: Math.min(run.end, start + pieceChunks)})
      }
      // Fewer pieces than connections (a small file): split the largest until every connection has one.
      while (pieces.length < want) {
        pieces.sort((a, b) => (b.end - b.next) - (a.end - a.next))
        const big = pieces[0]
        if (!big || big.end - big.next < 2) break
        const mid = big.next + Math.ceil((big.end - big.next) / 2)
        pieces.push({next: mid, end: big.end})
        big.end = mid
      }
      pieces.sort((a, b) => a.next - b.next)
    }
    this.segments = pieces.slice(0, want)
    this.queue = pieces.slice(want)
  }

  private queue: Segment[] = []

  private pieceChunks(): number {
    return Math.max(Math.ceil(PIECE_MIN_BYTES / this.record.chunkSizeBytes), Math.ceil(this.done.length / MAX_PIECES))
  }

  /**
   * A connection added while the download runs: the running request keeps one piece, the rest of
   * its range is cut into pieces in file order, and connections take them from the queue.
   */
  private segmentForNewConnection(): Segment | undefined {
    if (this.queue.length > 0) return this.queue.shift()
    const piece = this.pieceChunks()
    let victim: Segment | undefined
    for (const seg of this.segments) if (!victim || seg.end - seg.next > victim.end - victim.next) victim = seg
    if (!victim || victim.end - victim.next < 2 * piece) return this.nextSegment()
    const rest = {next: victim.next + piece, end: victim.end}
    victim.end = rest.next
    for (let start = rest.next; start < rest.end; start += piece) this.queue.push({next: start, end: Math.min(rest.end, start + piece)})
    const seg = this.queue.shift()!
    this.segments.push(seg)
    return seg
  }

  /** An idle connection takes a queued run, or the back half of the largest one still in flight. */
  private nextSegment(): Segment | undefined {
    const queued = this.queue.shift()
    if (queued) {
      this.segments.push(queued)
      return queued
    }
    let victim: Segment | undefined
    for (const seg of this.segments) if (!victim || seg.end - seg.next > victim.end - victim.next) victim = seg
    // Leave the owner at least the chunk it is receiving now.
    if (!victim || victim.end - victim.next < 3) return undefined
    const mid = victim.next + 1 + Math.floor((victim.end - victim.next - 1) / 2)
    const stolen = {next: mid, end: victim.end}
    victim.end = mid
    this.segments.push(stolen)
    return stolen
  }

  private async runSegment(first: Segment): Promise<void> {
    let seg: Segment | undefined = first
    while (seg) {
      while (seg.next < seg.end) {
        if (this.abort.signal.aborted) throw abortError(this.abort.signal)
        try {
          await this.fetchSegment(seg)
        } catch (error) {
          if (this.abort.signal.aborted) throw abortError(this.abort.signal)
          if (!isMsrError(error) || !error.retryable) throw error
          this.failuresWithoutProgress++
          if (this.failuresWithoutProgress > this.opts.policy.maxRetries) {
            // The last failure's code (E_PROTOCOL, E_TIMEOUT, ...): a misbehaving server is not a bad network.
            throw new MsrError(error.code, `Gave up on ${this.record.path} after ${this.opts.policy.maxRetries} retries without progress: ${error.message}`, {
              path: this.record.path, cause: error, hint: 'Run the same command again; it resumes from the last checkpoint.',
            })
          }
          const delayMs = nextDelayMs(this.failuresWithoutProgress, this.opts.policy, error.retryAfterMs)
          this.opts.emit({type: 'retry', path: this.record.path, attempt: this.failuresWithoutProgress, maxRetries: this.opts.policy.maxRetries, delayMs, reason: error.message, code: error.code})
          await sleep(delayMs, this.abort.signal)
        }
      }
      this.segments = this.segments.filter((s) => s !== seg)
      seg = this.nextSegment()
    }
  }

  /** One ranged request for the rest of `seg`; advances `seg.next` chunk by chunk. */
  private async fetchSegment(seg: Segment): Promise<void> {
    const {record} = this
    const start = seg.next * record.chunkSizeBytes
    const end = Math.min(record.size, seg.end * record.chunkSizeBytes)
    const request = new AbortController()
    let ended = false
    const onAbort = () => request.abort(this.abort.signal.reason)
    this.abort.signal.addEventListener('abort', onAbort, {once: true})
    const headers: Record<string, string> = {Range: rangeHeader(start, end), 'Accept-Encoding': 'identity'}
    if (record.etag) headers['If-Range'] = record.etag
    try {
      const res = await openStream({
        url: this.opts.hub.fileUrl(this.opts.modelId, this.opts.revision, record.path),
        headers,
        headersFor: (url) => this.opts.hub.headersFor(url),
        signal: request.signal,
        headersTimeoutMs: this.opts.idleTimeoutMs,
        maxRetryAfterMs: this.opts.policy.maxRetryAfterMs,
        raw: record.size >= RAW_HTTP_MIN_BYTES || process.env[HTTP_CLIENT_ENV]?.trim().toLowerCase() === 'raw',
      })
      const verdict = judgeRangeReply({
        status: res.status,
        requestedStart: start,
        expectedTotal: record.size,
        contentRange: res.headers['content-range'],
        contentLength: res.headers['content-length'],
        contentEncoding: res.headers['content-encoding'],
        contentType: res.headers['content-type'],
        etag: res.headers.etag,
        knownEtag: record.etag,
      })
      if (!verdict.ok) {
        res.body.destroy()
        if (verdict.reason === 'changed') {
          throw new MsrError('E_REMOTE_CHANGED', `${record.path} changed on the hub: ${verdict.message}.`, {path: record.path})
        }
        throw new MsrError('E_PROTOCOL', `Bad reply for ${record.path}: ${verdict.message}.`, {path: record.path, retryable: true})
      }
      const etag = strongEtag(res.headers.etag)
      if (etag && !record.etag) record.etag = etag
      ended = await this.consume(res.body, seg, verdict.skipBytes, request)
    } finally {
      this.abort.signal.removeEventListener('abort', onAbort)
      // A body read to its end leaves the socket to the keep-alive pool; aborting would destroy it
      // (10,000 small files meant 10,000 TCP handshakes).
      if (!ended) request.abort()
    }
  }

  /** Reads the body into chunks; true when the body ended by itself (the connection is reusable). */
  private async consume(body: Body, seg: Segment, skipBytes: number, request: AbortController): Promise<boolean> {
    const {record} = this
    let skip = skipBytes
    const chunkSize = record.chunkSizeBytes
    // Received chunks are gathered in a block of a few contiguous chunks: one write and one hashing
    // job per block rather than per chunk (each costs a trip through libuv's thread pool).
    let block = this.takeBuffer()
    let blockFirst = seg.next
    let blockFill = 0
    let blockSince = performance.now()
    /** Bytes of chunk `seg.next` received so far (in the block at blockFill). */
    let fill = 0
    // Idle-read timeout and minimum-speed window: axios has neither for a body in flight.
    let windowBytes = 0
    let windowStart = performance.now()
    let timedOut: MsrError | undefined
    const idle = setTimeout(() => {
      timedOut = new MsrError('E_TIMEOUT', `No data for ${Math.round(this.opts.idleTimeoutMs / 1000)} s on ${record.path}.`, {path: record.path, retryable: true})
      body.destroy(timedOut)
    }, this.opts.idleTimeoutMs)
    /** Hands the finished chunks of the block over (hashing and writing); a promise to wait for room. */
    const handOver = (): Promise<void> | undefined => {
      const full = block
      const first = blockFirst
      const length = blockFill
      block = this.takeBuffer()
      blockFirst = seg.next
      blockFill = 0
      blockSince = performance.now()
      return this.completeBlock(first, full, length)
    }
    /** Copies body bytes into the block; a promise when a finished block must wait for room. */
    const absorb = (data: Buffer, from: number): void | Promise<void> => {
      let off = from
      while (off < data.length) {
        if (seg.next >= seg.end) return
        const {start, end} = chunkBounds(seg.next, record.size, chunkSize)
        const take = Math.min(end - start - fill, data.length - off)
        data.copy(block, blockFill + fill, off, off + take)
        fill += take
        off += take
        if (fill === end - start) {
          seg.next++
          blockFill += fill
          fill = 0
          // A full block, the last chunk this connection will fetch (another may take the rest), or
          // a slow link: whole chunks never wait in memory for long, a kill must not lose them.
          if (blockFill + chunkSize > block.length || seg.next >= seg.end || performance.now() - blockSince >= BLOCK_MAX_AGE_MS) {
            const wait = handOver()
            if (wait) {
              const rest = off
              return wait.then(() => absorb(data, rest))
            }
          }
        }
      }
    }
    const take = (data: Buffer): void | Promise<void> | typeof STOP => {
      // Bytes past what this segment needs (a longer body, a tail another connection took over).
      if (seg.next >= seg.end) return STOP
      idle.refresh()
      const now = performance.now()
      windowBytes += data.length
      if (now - windowStart >= this.opts.idleTimeoutMs) {
        const rate = windowBytes / ((now - windowStart) / 1000)
        if (rate < this.opts.minBytesPerSec) {
          throw new MsrError('E_TIMEOUT', `${record.path} is arriving at ${Math.round(rate)} B/s, below the minimum of ${this.opts.minBytesPerSec} B/s.`, {path: record.path, retryable: true})
        }
        windowBytes = 0
        windowStart = now
      }
      let off = 0
      if (skip > 0) {
        off = Math.min(skip, data.length)
        skip -= off
      }
      this.receivedBytes += data.length - off
      if (this.opts.limiter) return this.opts.limiter.consume(data.length, this.abort.signal).then(() => absorb(data, off))
      return absorb(data, off)
    }
    try {
      const outcome = await body.pump(take)
      if (timedOut) throw timedOut
      if (outcome === 'stopped') return false
      if (seg.next < seg.end) {
        throw new MsrError('E_NETWORK', `Connection closed early while downloading ${record.path}.`, {path: record.path, retryable: true})
      }
      return true
    } catch (error) {
      // Everything this segment needed had arrived; what failed was only the wait for the end.
      if (seg.next >= seg.end && !this.abort.signal.aborted && !this.writeError) return false
      if (timedOut) throw timedOut
      if (isMsrError(error) || this.abort.signal.aborted) throw error
      throw new MsrError('E_NETWORK', `Connection lost while downloading ${record.path}: ${(error as Error).message}.`, {path: record.path, retryable: true, cause: error})
    } finally {
      clearTimeout(idle)
      if (!body.ended) {
        request.abort()
        body.destroy()
      }
      // Chunks already whole when the connection failed are kept: a retry starts after them.
      if (blockFill > 0 && !this.writeError) {
        try {
          void this.completeBlock(blockFirst, block, blockFill)?.catch(() => {})
        } catch {
          // a pending checkpoint or hashing error: reported by the caller's next step
        }
      } else {
        this.pool.push(block)
      }
    }
  }

  /**
   * Received whole chunks [first, ...) in `buffer`: hashed at once when they are next in order (from
   * memory, no read-back), and written without waiting, so the socket keeps flowing while the
   * disk works. Up to MAX_BLOCKS_IN_FLIGHT blocks are in hand at once; a chunk counts as done only
   * when its write completed. Returns a promise when the caller must wait for room.
   */
  private completeBlock(first: number, buffer: Buffer, length: number): Promise<void> | undefined {
    this.throwCheckpointError()
    this.throwHashError()
    if (this.writeError) throw this.writeError
    const data = buffer.subarray(0, length)
    const chunkSize = this.record.chunkSizeBytes
    // Hashing (xxh64, and SHA-256 when in order) and the write run side by side, off the main thread.
    const inOrder = first === this.hashedChunks
    const hashed = inOrder ? this.hashInOrder(data) : xxh64PiecesAsync(data, chunkSize)
    this.failuresWithoutProgress = 0
    const start = first * chunkSize
    // One write at a time per file: concurrent pwrite()s to one file only spin on its inode lock
    // (measured: 6% of all CPU in rwsem_spin_on_owner), they do not overlap.
    // A block ahead of the hash (another connection's piece) is read back when the hash gets there:
    // through the page cache, so that read is a copy, not a trip to the device.
    const written = this.diskTail.then(() => this.writeBlock(data, start, inOrder))
    this.diskTail = written.catch(() => {})
    const write = Promise.all([hashed, written]).then(
      ([sums]) => {
        for (let k = 0; k < sums.length; k++) this.done[first + k] = sums[k]
        this.promoteStates()
        this.doneByteCount += length
        this.pool.push(buffer)
        this.bytesSinceCheckpoint += length
        this.opts.emit({type: 'progress', path: this.record.path, bytesDone: this.doneByteCount, size: this.record.size, receivedBytes: this.receivedBytes})
        if (this.hashedChunks < this.done.length && this.done[this.hashedChunks] !== null) void this.drain()
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

  /**
   * Hands the next whole chunks in file order to the SHA-256 chain; resolves to their xxh64s. Chunks are
   * hashed before their writes land, so the state after each one is kept until every chunk it
   * covers is on disk; only then may a checkpoint save it. Without this, a busy segmented download
   * almost never had a savable state and every resume re-hashed the prefix.
   */
  private hashInOrder(data: Uint8Array): Promise<string[]> {
    const chunkSize = this.record.chunkSizeBytes
    this.hashedChunks += Math.ceil(data.byteLength / chunkSize)
    const hashed = this.shaChain.then(() => this.hasher.updateChunk(data, chunkSize))
    this.shaChain = hashed.then(
      ({state}) => {
        this.pendingStates.push(state)
        this.promoteStates()
      },
      (error) => {
        this.hashError ??= error
      },
    )
    return hashed.then(({sums}) => sums)
  }

  private throwHashError(): void {
    if (this.hashError) throw new MsrError('E_LOCAL', `Hashing ${this.record.path} failed: ${(this.hashError as Error)?.message ?? String(this.hashError)}.`, {path: this.record.path, cause: this.hashError})
  }

  private promoteStates(): void {
    while (this.writtenPrefix < this.done.length && this.done[this.writtenPrefix] !== null) this.writtenPrefix++
    const writtenBytes = Math.min(this.record.size, this.writtenPrefix * this.record.chunkSizeBytes)
    while (this.pendingStates.length > 0 && this.pendingStates[0].offsetBytes <= writtenBytes) this.durableState = this.pendingStates.shift()
  }

  private maybeCheckpoint(): void {
    const due = performance.now() - this.lastCheckpointAt >= this.opts.checkpointIntervalMs || this.bytesSinceCheckpoint >= this.opts.checkpointBytes
    if (due && !this.checkpointing) {
      this.checkpointing = this.checkpoint()
        .catch((error) => {
          this.checkpointError = diskError(error, `saving a checkpoint of ${this.record.path}`, this.record.path)
        })
        .finally(() => {
          this.checkpointing = undefined
        })
    }
  }

  private takeBuffer(): Buffer {
    // No block is longer than the file: a 2 KiB file must not cost two 4 MiB buffers (10,000 small
    // files at --concurrency 64 churned GiBs through the GC).
    const chunkSize = this.record.chunkSizeBytes
    const blockBytes = Math.max(1, Math.min(Math.max(1, Math.floor(BLOCK_BYTES / chunkSize)) * chunkSize, this.record.size))
    const pooled = this.pool.pop()
    if (pooled) return pooled
    if (!this.direct) return Buffer.allocUnsafeSlow(blockBytes)
    // O_DIRECT needs the memory aligned too.
    const raw = Buffer.allocUnsafeSlow(blockBytes + DIRECT_ALIGN)
    const skip = alignmentOffset(raw, DIRECT_ALIGN) ?? 0
    return raw.subarray(skip, skip + blockBytes)
  }

  /** Resolves when every write started so far has finished (successfully or not). */
  private async settleWrites(): Promise<void> {
    while (this.writes.size > 0) await Promise.allSettled([...this.writes])
    if (this.writeError) throw this.writeError
  }

  /** Hashes chunks that were finished out of order, reading them back (and checking them) from disk. */
  private drain(): Promise<void> {
    if (this.drainActive) return this.draining
    // The flag is set and cleared synchronously with the loop, so a chunk completing in between is
    // either hashed in place or seen by the loop: never left behind. A chunk cannot complete while
    // the loop reads it (it is done already), so in-memory hashing needs no exclusion from the loop.
    this.drainActive = true
    this.draining = (async () => {
      try {
        // Read-back in batches of up to DRAIN_BATCH_BYTES: with the main thread busy on sockets,
        // one event-loop turn per 1 MiB chunk let the hash fall ever further behind the download.
        const chunk = this.record.chunkSizeBytes
        const batchChunks = Math.max(1, Math.floor(DRAIN_BATCH_BYTES / chunk))
        let buffer: Buffer | undefined
        while (this.hashedChunks < this.done.length && this.done[this.hashedChunks] !== null) {
          const first = this.hashedChunks
          let last = first + 1
          while (last < this.done.length && last - first < batchChunks && this.done[last] !== null) last++
          const start = first * chunk
          const end = chunkBounds(last - 1, this.record.size, chunk).end
          buffer ??= Buffer.allocUnsafe(Math.min(batchChunks * chunk, this.record.size))
          const got = await readFully(this.fh, buffer, end - start, start)
          let mismatch = false
          // The loop may have been overtaken (chunks hashed in memory meanwhile): skip ahead.
          const from = Math.max(first, this.hashedChunks)
          let verified = from
          for (let i = from; i < last; i++) {
            const b = chunkBounds(i, this.record.size, chunk)
            const data = buffer.subarray(b.start - start, b.end - start)
            if (b.end - start > got || this.xxh(data) !== this.done[i]) {
              this.done[i] = null
              this.writtenPrefix = Math.min(this.writtenPrefix, i)
              this.doneByteCount -= b.end - b.start
              this.record.chunks[i] = null
              this.opts.emit({type: 'warning', path: this.record.path, message: `chunk ${i} of ${this.record.path} changed on disk; fetching it again`})
              mismatch = true
              break
            }
            verified = i + 1
          }
          if (verified > from) {
            // One hashing job for the run; the buffer is reused for the next batch, so wait for it.
            const runEnd = chunkBounds(verified - 1, this.record.size, chunk).end
            await this.hashInOrder(buffer.subarray(from * chunk - start, runEnd - start)).catch(() => {})
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

  /**
   * Data first, journal second: everything written so far is fsynced, and only then does the
   * journal claim it. A kill between the two loses the claim, never the truth.
   */
  async checkpoint(): Promise<void> {
    await Promise.allSettled([...this.writes])
    const snapshot = [...this.done]
    // The newest state whose bytes are all written: it never covers a chunk still on its way to disk.
    const state = this.durableState
    this.lastCheckpointAt = performance.now()
    this.bytesSinceCheckpoint = 0
    await this.fh.datasync()
    crashPoint('after-data-fsync')
    for (let i = 0; i < snapshot.length; i++) if (snapshot[i] !== null && this.done[i] !== null) this.record.chunks[i] = snapshot[i]
    if (state && state.offsetBytes <= durablePrefixBytes({...this.record, chunks: snapshot})) this.record.sha256State = state
    if (this.record.status === 'pending') this.record.status = 'partial'
    await this.opts.journal.flush()
  }

  private throwCheckpointError(): void {
    if (this.checkpointError) {
      const error = this.checkpointError
      this.checkpointError = undefined
      throw error
    }
  }

  private doneBytes(): number {
    return this.doneByteCount
  }
}

/** Adaptive connections: checked this often, added while each connection is slower than this. */
const ADAPTIVE_INTERVAL_MS = 1000
const ADAPTIVE_FAST_BYTES_PER_SEC = 32 * 1024 * 1024

/** Smallest piece a connection takes with --connections > 1; at most MAX_PIECES pieces per file. */
const PIECE_MIN_BYTES = 16 * 1024 * 1024
const MAX_PIECES = 256

/** Read-back batch for hashing chunks that finished out of order. */
const DRAIN_BATCH_BYTES = 8 * 1024 * 1024

/**
 * Received chunks travel in blocks of this many bytes (whole chunks, at least one): one thread-pool
 * trip for the write and one for the hashing per block. Per 1 MiB chunk, those trips cost about
 * 0.7 s of main-thread time per GiB.
 */
const BLOCK_BYTES = 4 * 1024 * 1024
/** Bodies of files from this size are read with raw-http.ts (smaller ones through axios). */
const RAW_HTTP_MIN_BYTES = 32 * 1024 * 1024

/** Direct I/O: files from this size, blocks aligned to this (covers 512-byte and 4 KiB sectors). */
const DIRECT_IO_MIN_BYTES = 32 * 1024 * 1024
const DIRECT_ALIGN = 4096
/** Set to 0 to write every partial through the page cache. */
export const DIRECT_IO_ENV = 'MS_RESUME_DIRECT_IO'

/** A block holding whole chunks is handed over after this long, full or not. */
const BLOCK_MAX_AGE_MS = 200

/**
 * Blocks being hashed or queued for the disk per file: enough to overlap network, hashing and disk,
 * with bounded memory (this many block buffers, plus one being filled per connection).
 */
const MAX_BLOCKS_IN_FLIGHT = 4

/**
 * A disk error (ENOSPC, EROFS, EIO) as a non-retryable MsrError. Raw, it would reach consume()'s
 * catch and become a retryable E_NETWORK: a full disk then re-downloaded the same chunk forever.
 */
function diskError(error: unknown, what: string, repoPath: string): MsrError {
  if (isMsrError(error)) return error
  const mapped = fromFsError(error, what, repoPath)
  return isMsrError(mapped) ? mapped : new MsrError('E_LOCAL', `Failed ${what}: ${(error as Error)?.message ?? String(error)}.`, {path: repoPath, cause: error, hint: 'Check the disk, then run the same command again; it resumes from the last checkpoint.'})
}

async function writeFully(fh: FileHandle, data: Buffer, position: number): Promise<void> {
  let written = 0
  while (written < data.length) {
    const {bytesWritten} = await fh.write(data, written, data.length - written, position + written)
    written += bytesWritten
  }
}

async function readChunk(fh: FileHandle, record: FileRecord, index: number): Promise<Buffer> {
  const {start, end} = chunkBounds(index, record.size, record.chunkSizeBytes)
  const buf = Buffer.allocUnsafe(end - start)
  const read = await readFully(fh, buf, buf.length, start)
  return read === buf.length ? buf : buf.subarray(0, read)
}

async function readChunkSum(fh: FileHandle, record: FileRecord, index: number, xxh: (d: Uint8Array) => string): Promise<string | null> {
  const data = await readChunk(fh, record, index)
  const {start, end} = chunkBounds(index, record.size, record.chunkSizeBytes)
  return data.length === end - start ? xxh(data) : null
}
