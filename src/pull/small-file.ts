import {createHash} from 'node:crypto'
import fs from 'node:fs'
import path from 'node:path'

import {MsrError, isMsrError} from '../errors.js'
import {crashPoint, crashPointArmed} from '../fs/crash-points.js'
import {fsyncDir} from '../fs/durable-file.js'
import {FILE_MODE} from '../fs/file-modes.js'
import {fsFailure} from '../fs/fs-errors.js'
import type {HubFile} from '../hub/types.js'
import {loadXxh64} from '../integrity/chunks.js'
import {isSizeOnly} from '../integrity/size-only.js'
import {nativeWriteFileSynced} from '../integrity/native-addon.js'
import type {FileRecord} from '../journal/schema.js'
import {ensureParentDirs} from '../store/finalize.js'
import {PARTIAL_DIR, partialNameFor} from '../store/layout.js'
import {O_NOFOLLOW} from '../store/state-file.js'
import {STOP} from '../transfer/body.js'
import {openBody} from '../transfer/http-body.js'
import {sleep} from '../transfer/rate-limiter.js'
import {nextDelayMs} from '../transfer/retry-policy.js'
import {judgeReply, rangeHeader} from '../transfer/content-range.js'
import {DeadlineWatch} from '../transfer/deadline-watch.js'
import type {JobContext} from './file-job.js'

/**
 * Small files (configs, tokenizers, shards of a dataset) are mostly fixed cost: a 4 KiB file cost
 * 2 ms of CPU on the resumable path (an undici pipeline, a checkpoint timer, a FileHandle, a
 * thread-pool hash, six fs round trips, a lstat walk, its own directory fsync). Here a file takes
 * one request (its redirect included), one SHA-256 in memory, and is written whole: create,
 * write, fdatasync, rename into place; the directory fsyncs of files finishing together are one.
 * Same guarantees: nothing reaches the final path before its SHA-256 matches the listing, the data
 * is durable before the rename, the rename before the journal says complete.
 *
 * One try, and only for a fresh file: anything unusual (an error status, a short or odd reply, a
 * hash mismatch, a partial left on disk) hands the file to the resumable path (pullOneFile), which
 * retries, resumes from the exact byte and reports, as it always did.
 */
export const SMALL_FILE_MAX_BYTES = 256 * 1024

/** A new file small enough, with nothing on disk to resume and nothing that needs the full path. */
export function takesSmallPath(file: HubFile, record: FileRecord | undefined, ctx: JobContext): boolean {
  if (file.size > SMALL_FILE_MAX_BYTES || ctx.limiter || ctx.adoptUnknownPartials) return false
  if (!record) return true
  return record.sha256 === file.sha256 && record.size === file.size && record.status !== 'complete' &&
    !record.chunks.some((c) => c !== null) && !record.partialChunks?.length
}

/** True when the file is in place, verified and recorded; false when the resumable path must take it. */
export async function pullSmallFile(file: HubFile, ctx: JobContext): Promise<boolean> {
  const fetched = await fetchVerified(file, ctx)
  if (!fetched) return false
  const {data, sha256} = fetched
  // A dataset entry listed without Sha256: the hash of the bytes placed, for verify and repair.
  const observed = isSizeOnly(file) ? {observedSha256: sha256} : {}
  const xxh64 = data.length > 0 ? (xxh ??= await loadXxh64())(data) : undefined
  const partialPath = path.join(ctx.stateDir, PARTIAL_DIR, partialNameFor(file.path))
  let target: string
  try {
    target = await ensureParentDirs(ctx.modelDir, file.path)
  } catch (error) {
    // Nothing verified is thrown away: the bytes wait as a claimed partial until the way is clear.
    if (await writeSynced(partialPath, data).catch(() => false)) await claimPartial(file, xxh64, ctx)
    throw error
  }
  const placed = await writeAndPlace(partialPath, data, target, file.path)
  if (placed === 'taken') return false
  if (placed !== 'placed') {
    await claimPartial(file, xxh64, ctx)
    throw placed
  }
  await syncDir(path.dirname(target))
  // Data fsynced, renamed, the rename fsynced: only now may the journal say complete.
  const now = isoNow()
  ctx.journal.set({
    path: file.path, size: file.size, sha256: file.sha256, ...observed, commit: file.commit, status: 'complete',
    chunkSizeBytes: MIN_CHUNK, chunks: xxh64 ? [xxh64] : [], integrityFailures: 0, completedAt: now, checkedAt: now,
  })
  ctx.journal.markDirty()
  ctx.emit({type: 'file-start', path: file.path, size: file.size, offsetBytes: 0})
  ctx.emit({type: 'progress', path: file.path, bytesDone: file.size, size: file.size, receivedBytes: file.size})
  ctx.emit({type: 'file-done', path: file.path, size: file.size, downloadedBytes: file.size, reused: false, sha256})
  return true
}

/**
 * The file's bytes when one request brought them whole and their SHA-256 is the listing's;
 * undefined when the resumable path must take over. A failure the resumable path would retry is
 * reported and waited for as its first retry (Retry-After included), then handed over; one it
 * would not retry (401, 404) is thrown, as it would be. A reply that says the file changed, or
 * bytes that hash wrong, are handed over as they are: the resumable path asks again and decides.
 */
async function fetchVerified(file: HubFile, ctx: JobContext): Promise<{data: Buffer; sha256: string} | undefined> {
  let data: Buffer | undefined
  try {
    data = file.size === 0 ? Buffer.alloc(0) : await fetchWhole(file, ctx)
  } catch (error) {
    if (ctx.signal.aborted || !isMsrError(error) || !error.retryable) throw error
    const delayMs = nextDelayMs(1, ctx.policy, error.retryAfterMs)
    ctx.emit({type: 'retry', path: file.path, attempt: 1, maxRetries: ctx.policy.maxRetries, delayMs, reason: error.message, code: error.code})
    await sleep(delayMs, ctx.signal)
    return undefined
  }
  if (!data || data.length !== file.size) return undefined
  const sha256 = createHash('sha256').update(data).digest('hex')
  // Size only (no listed hash): the length is all the listing vouches for.
  return sha256 === file.sha256 || isSizeOnly(file) ? {data, sha256} : undefined
}

/** Records a verified partial with its one chunk claimed: the next run finishes it without a request. */
async function claimPartial(file: HubFile, xxh64: string | undefined, ctx: JobContext): Promise<void> {
  ctx.journal.set({
    path: file.path, size: file.size, sha256: file.sha256, commit: file.commit, status: 'partial',
    chunkSizeBytes: MIN_CHUNK, chunks: xxh64 ? [xxh64] : [], partialName: partialNameFor(file.path), integrityFailures: 0,
  })
  await ctx.journal.flush()
}

let clock = {second: -1, iso: ''}

/** The time as ISO text, one string per second: 100,000 records need not hold 100,000 copies. */
function isoNow(): string {
  const ms = Date.now()
  const second = Math.floor(ms / 1000)
  if (second !== clock.second) clock = {second, iso: new Date(second * 1000).toISOString()}
  return clock.iso
}

/** The chunk grid of every file up to SMALL_FILE_MAX_BYTES: one chunk (chunks.ts chunkSizeFor). */
const MIN_CHUNK = 1024 * 1024
let xxh: ((data: Uint8Array) => string) | undefined

/** The file's bytes from one ranged GET (undefined: not a usable reply), or a transport error. */
async function fetchWhole(file: HubFile, ctx: JobContext): Promise<Buffer | undefined> {
  const res = await openBody({
    url: ctx.hub.fileUrl(ctx.modelId, ctx.revision, file.path),
    headers: {Range: rangeHeader(0, file.size), 'Accept-Encoding': 'identity'},
    headersFor: (url) => ctx.hub.headersFor(url),
    signal: ctx.signal,
    headersTimeoutMs: ctx.idleTimeoutMs,
    maxRetryAfterMs: ctx.policy.maxRetryAfterMs,
  })
  const verdict = judgeReply(res, 0, file.size)
  if (!verdict.ok) {
    res.body.destroy()
    if (verdict.reason === 'changed') return undefined
    throw new MsrError('E_PROTOCOL', `Bad reply for ${file.path}: ${verdict.message}.`, {path: file.path, retryable: true})
  }
  const data = Buffer.allocUnsafe(file.size)
  let filled = 0
  // A body that stops arriving ends the try (the resumable path has the stall detector).
  const idleMs = ctx.idleTimeoutMs
  const watched = {deadline: performance.now() + idleMs, expire: () => res.body.destroy(new MsrError('E_TIMEOUT', `No data for ${file.path} in ${idleMs} ms.`, {path: file.path, retryable: true}))}
  bodiesInFlight.add(watched, idleMs)
  try {
    await res.body.pump((piece) => {
      watched.deadline = performance.now() + idleMs
      const n = Math.min(piece.length, file.size - filled)
      piece.copy(data, filled, 0, n)
      filled += n
      // A 200 longer than listed: the listed size is read and the SHA-256 decides. Otherwise read
      // to the end, so the connection goes back to the pool for the next file.
      return n < piece.length ? STOP : undefined
    })
  } finally {
    bodiesInFlight.delete(watched)
  }
  if (filled < file.size) throw new MsrError('E_NETWORK', `The reply for ${file.path} ended after ${filled} of ${file.size} bytes.`, {path: file.path, retryable: true})
  return data
}

/** Every small body in flight: one interval for their idle deadlines. */
const bodiesInFlight = new DeadlineWatch()

/**
 * Creates the partial (never over anything: a partial left there is the resumable path's), writes
 * it whole, fdatasyncs it and renames it to `target` (replacing a planted symlink rather than
 * following it; a directory there fails the rename). With the addon all of it is one thread-pool
 * job: five round trips per file were most of the main thread's fs time. 'taken': a partial is
 * already there. An error: the rename failed, and the verified partial is left for the caller
 * to claim; a failure before the bytes were durable leaves nothing and is thrown.
 */
async function writeAndPlace(partialPath: string, data: Buffer, target: string, repoPath: string): Promise<'placed' | 'taken' | MsrError> {
  const native = crashPointArmed('before-finalize-rename') ? null : nativeWriteFileSynced()
  let written = false
  try {
    if (native) {
      await native(partialPath, data, FILE_MODE, target)
      return 'placed'
    }
    if (!(await writeSynced(partialPath, data))) return 'taken'
    written = true
    crashPoint('before-finalize-rename')
    await new Promise<void>((resolve, reject) => fs.rename(partialPath, target, (error) => (error ? reject(error) : resolve())))
    return 'placed'
  } catch (error) {
    const e = error as NodeJS.ErrnoException
    if (e.code === 'EEXIST' && e.syscall === 'open') return 'taken'
    if (written || e.syscall === 'rename') {
      if (e.code === 'EISDIR' || e.code === 'ENOTEMPTY' || e.code === 'EEXIST') {
        return new MsrError('E_LOCAL', `${target} is a directory, where the file ${repoPath} belongs.`, {path: repoPath, hint: 'Move it away and run again; the verified download is kept and moved into place then.'})
      }
      return fsFailure(error, `moving ${repoPath} into place`, target)
    }
    await new Promise((resolve) => fs.rm(partialPath, {force: true}, resolve))
    throw fsFailure(error, `writing ${repoPath}`, partialPath)
  }
}

/** Creates `file` (O_EXCL), writes it whole and fdatasyncs it; false when something is there. */
function writeSynced(file: string, data: Buffer): Promise<boolean> {
  return new Promise((resolve, reject) => {
    fs.open(file, fs.constants.O_WRONLY | fs.constants.O_CREAT | fs.constants.O_EXCL | O_NOFOLLOW, FILE_MODE, (openError, fd) => {
      if (openError) return openError.code === 'EEXIST' ? resolve(false) : reject(openError)
      const abandon = (error: NodeJS.ErrnoException) => fs.close(fd, () => fs.rm(file, {force: true}, () => reject(error)))
      const writeFrom = (offset: number) => {
        if (offset === data.length) {
          fs.fdatasync(fd, (syncError) => {
            if (syncError) return abandon(syncError)
            fs.close(fd, (closeError) => (closeError ? reject(closeError) : resolve(true)))
          })
          return
        }
        fs.write(fd, data, offset, data.length - offset, offset, (writeError, written) => {
          if (writeError) return abandon(writeError)
          writeFrom(offset + written)
        })
      }
      writeFrom(0)
    })
  })
}

interface DirSync {
  running?: Promise<void>
  queued?: Promise<void>
}

const dirSyncs = new Map<string, DirSync>()

/**
 * fsync of a directory, shared: a caller whose rename is done joins the next fsync to start (one
 * already running may have begun before that rename). Files finishing together in one directory
 * pay one fsync.
 */
export function syncDir(dir: string): Promise<void> {
  let s = dirSyncs.get(dir)
  if (!s) {
    if (dirSyncs.size > 10_000) for (const [d, idle] of dirSyncs) if (!idle.running && !idle.queued) dirSyncs.delete(d)
    s = {}
    dirSyncs.set(dir, s)
  }
  const state = s
  const start = (): Promise<void> => {
    const run: Promise<void> = fsyncDir(dir)
      .catch((error: unknown) => {
        throw isMsrError(error) ? error : fsFailure(error, 'making a rename durable', dir)
      })
      .finally(() => {
        if (state.running === run) state.running = undefined
      })
    state.running = run
    return run
  }
  if (state.queued) return state.queued
  if (!state.running) return start()
  const queued = state.running.catch(() => {}).then(() => {
    state.queued = undefined
    return start()
  })
  state.queued = queued
  return queued
}
