import fs from 'node:fs/promises'
import path from 'node:path'

import {MsrError, isMsrError} from '../errors.js'
import {fromFsError} from '../fs/fs-errors.js'
import type {HubFile} from '../hub/types.js'
import {type CheckLevel, type ExpectedFile, type FileCheck, checkFile, chunkSumsOnDisk} from '../integrity/check.js'
import {chunkCount, chunkSizeFor} from '../integrity/chunks.js'
import {sha256FileHex} from '../integrity/sha256.js'
import {isSizeOnly, sameVersion} from '../integrity/size-only.js'
import {DIR_MODE, FILE_MODE, settleFileMode} from '../fs/file-modes.js'
import type {FileRecord} from '../journal/schema.js'
import {moveIntoPlace} from '../store/finalize.js'
import {mayExist} from '../store/dir-entries.js'
import {PARTIAL_DIR, QUARANTINE_DIR, partialNameFor} from '../store/layout.js'
import {resolveInside} from '../store/safe-path.js'
import {O_NOFOLLOW} from '../store/state-file.js'
import type {TransferOptions} from '../transfer/file-download.js'
import {endpointForFile, giveUpNowOn, nextEndpointFor} from './endpoint-failover.js'
import {pullSmallFile, takesSmallPath} from './small-file.js'

/** Whole-file downloads that may end in a hash mismatch before we give up on a file. */
export const MAX_INTEGRITY_ATTEMPTS = 3
/** Times a file may change on the hub under us in one run before we stop chasing it. */
const MAX_REMOTE_CHANGES = 2

export interface JobContext extends Omit<TransferOptions, 'connections'> {
  modelDir: string
  stateDir: string
  /** Level for files the journal already has complete. */
  check: CheckLevel
  /** Connections for this file size, and whether they are added only as needed. */
  connectionsFor(sizeBytes: number): {connections: number; adaptive: boolean}
  /** True when the journal was lost: partials on disk are taken on trust, the SHA-256 decides. */
  adoptUnknownPartials: boolean
  /** Re-reads the listing after the hub said a file changed; undefined when it is gone. */
  relist(filePath: string): Promise<HubFile | undefined>
}

export interface FileOutcome {
  path: string
  size: number
  /** Bytes that came over the network for this file in this run. */
  downloadedBytes: number
  /** Already complete (or adopted from disk); nothing fetched. */
  reused: boolean
  /** A complete file failed its check and was repaired. */
  repaired: boolean
  check?: FileCheck
}

function connectionOptions(c: {connections: number; adaptive: boolean}): {connections: number; adaptiveConnections: boolean} {
  return {connections: c.connections, adaptiveConnections: c.adaptive}
}

export function newRecord(file: HubFile): FileRecord {
  const chunkSizeBytes = chunkSizeFor(file.size)
  return {
    path: file.path,
    size: file.size,
    sha256: file.sha256,
    commit: file.commit,
    status: 'pending',
    chunkSizeBytes,
    chunks: Array.from({length: chunkCount(file.size, chunkSizeBytes)}, () => null),
    integrityFailures: 0,
  }
}

export function expectedFromRecord(record: FileRecord): ExpectedFile {
  return {path: record.path, size: record.size, sha256: record.sha256 || record.observedSha256 || '', chunkSizeBytes: record.chunkSizeBytes, chunks: record.chunks.map((c) => c ?? '')}
}

export function partialPathOf(stateDir: string, record: FileRecord): string {
  return path.join(stateDir, PARTIAL_DIR, record.partialName ?? partialNameFor(record.path))
}

/**
 * Brings one file to its final path, verified: reuse it when complete (checked at ctx.check),
 * adopt a correct file found on disk, repair only damaged chunks of a complete one, or resume /
 * start its download. Nothing reaches the final path before its SHA-256 matches the listing.
 */
export async function pullOneFile(listed: HubFile, ctx: JobContext): Promise<FileOutcome> {
  let file = listed
  let record = ctx.journal.get(file.path)
  if (record && !sameVersion(record, file)) {
    // A new version upstream: the old partial cannot be continued.
    await discardPartial(ctx, record)
    record = undefined
  }
  const finalPath = resolveInside(ctx.modelDir, file.path)
  const outcome: FileOutcome = {path: file.path, size: file.size, downloadedBytes: 0, reused: false, repaired: false}

  if (record?.status === 'complete') {
    const check = await checkFile(finalPath, expectedFromRecord(record), ctx.check)
    outcome.check = check
    if (check.status === 'ok') {
      if (ctx.check !== 'size') {
        record.checkedAt = new Date().toISOString()
        ctx.journal.markDirty(record)
      }
      ctx.emit({type: 'file-done', path: file.path, size: file.size, downloadedBytes: 0, reused: true, sha256: file.sha256})
      return {...outcome, reused: true}
    }
    ctx.emit({type: 'warning', path: file.path, message: `${file.path} failed its ${check.level} check (${check.status}); repairing it`})
    record = await prepareRepair(ctx, record, finalPath, check)
    outcome.repaired = true
  } else if (await adoptFromDisk(finalPath, file, ctx.journal)) {
    ctx.journal.set(await completeRecordFromDisk(file, finalPath))
    ctx.journal.markDirty()
    ctx.emit({type: 'file-done', path: file.path, size: file.size, downloadedBytes: 0, reused: true, sha256: file.sha256})
    return {...outcome, reused: true}
  }
  if (!outcome.repaired && takesSmallPath(file, record, ctx) && (await pullSmallFile(file, ctx))) return {...outcome, downloadedBytes: file.size}

  record ??= newRecord(file)
  record.integrityFailures = 0
  ctx.journal.set(record)
  // The transfer changes the record in place and only flushes: every batch writes it until done.
  ctx.journal.track(file.path)
  try {
    return await downloadUntilPlaced(ctx, file, record, outcome)
  } finally {
    ctx.journal.untrack(file.path)
  }
}

async function downloadUntilPlaced(ctx: JobContext, file: HubFile, record: FileRecord, outcome: FileOutcome): Promise<FileOutcome> {
  let remoteChanges = 0
  /** The listing fetched to judge an ETag change, reused when it shows that the file changed. */
  let relisted: {file: HubFile | undefined} | undefined
  let lane = endpointForFile(ctx.hub)
  for (;;) {
    const current = file
    const listingUnchanged = async (): Promise<boolean> => {
      relisted = {file: await ctx.relist(current.path)}
      return relisted.file !== undefined && sameVersion(current, relisted.file)
    }
    try {
      outcome.downloadedBytes += await downloadVerified({...ctx, hub: lane, listingUnchanged, giveUpNow: giveUpNowOn(ctx.hub, lane)}, record, file)
      break
    } catch (caught) {
      let error = caught
      const moved = await nextEndpointFor(ctx, lane, caught, file.path)
      if (moved) {
        lane = moved.lane
        // Same sha256 and size there: the partial goes on (that endpoint's ETag may differ).
        if (moved.listed.sha256 === file.sha256 && moved.listed.size === file.size) {
          delete record.etag
          continue
        }
        relisted = {file: moved.listed}
        error = new MsrError('E_REMOTE_CHANGED', `${lane.endpoint} lists another version of ${file.path} (sha256 ${moved.listed.sha256.slice(0, 12)}…, ${moved.listed.size} bytes) than its partial was started with`, {path: file.path})
      }
      if (!isMsrError(error) || error.code !== 'E_REMOTE_CHANGED' || ++remoteChanges > MAX_REMOTE_CHANGES) throw error
      ctx.emit({type: 'remote-changed', path: file.path, reason: error.message})
      await discardPartial(ctx, record)
      const fresh = relisted ? relisted.file : await ctx.relist(file.path)
      relisted = undefined
      if (!fresh) {
        throw new MsrError('E_REMOTE_CHANGED', `${file.path} disappeared from the hub's listing while downloading.`, {path: file.path, hint: 'Run the pull again to get the current file list.'})
      }
      file = fresh
      record = newRecord(file)
      ctx.journal.set(record)
      outcome.size = file.size
    }
  }
  ctx.emit({type: 'file-done', path: file.path, size: file.size, downloadedBytes: outcome.downloadedBytes, reused: false, sha256: file.sha256, repaired: outcome.repaired || undefined})
  return outcome
}

/** Downloads (or resumes) until the SHA-256 matches, then moves the file into place. Returns bytes fetched. */
async function downloadVerified(ctx: JobContext, record: FileRecord, file: HubFile): Promise<number> {
  let fetched = 0
  for (;;) {
    record.partialName ??= partialNameFor(record.path)
    const partialPath = partialPathOf(ctx.stateDir, record)
    let fh
    try {
      // Never through a symlink planted at the partial's name (ELOOP: E_UNSAFE_PATH).
      fh = await fs.open(partialPath, fs.constants.O_RDWR | fs.constants.O_CREAT | O_NOFOLLOW, FILE_MODE)
    } catch (error) {
      throw fromFsError(error, `opening the partial file of ${record.path}`, partialPath)
    }
    let found: string
    const savedState = record.sha256State
    try {
      // Loaded when a file is downloaded (with undici): a no-op pull never needs them.
      const {ChunkedDownload} = await import('../transfer/file-download.js')
      const download = await ChunkedDownload.prepare(record, fh, {...ctx, ...connectionOptions(ctx.connectionsFor(record.size))}, ctx.adoptUnknownPartials, partialPath)
      const resumedBytes = download.resumedBytes
      if (resumedBytes > 0) ctx.emit({type: 'resume', path: record.path, offsetBytes: resumedBytes, size: record.size})
      ctx.emit({type: 'file-start', path: record.path, size: record.size, offsetBytes: resumedBytes})
      try {
        fetched += (await download.run()).receivedBytes
      } catch (error) {
        throw fromFsError(error, `writing ${record.path}`, partialPath)
      }
      found = await download.digestHex()
      // Size only: the body was held to the listed size and any hash is taken, but a repair of a
      // complete one must give back the bytes it had (the hash we saw then).
      const wanted = record.sha256 || record.observedSha256 || found
      // A pull that lost its lock moves nothing: the new holder may be writing this very partial.
      await ctx.journal.assertWritable()
      if (found !== wanted && savedState) {
        // A saved hash state that loads but is wrong (a flipped bit in the journal) makes a correct
        // file hash wrong: ask the disk before throwing away a whole download (E_INTEGRITY retry).
        ctx.emit({type: 'rehash', path: record.path, bytes: record.size, reason: 'hash mismatch after resuming from a saved hash state'})
        if ((await sha256FileHex(partialPath)) === wanted) found = wanted
      }
      if (found === wanted) {
        if (isSizeOnly(record)) record.observedSha256 = found
        // Data first, claim second: a batched journal flush may run during the datasync.
        await fh.datasync()
        record.chunks = download.chunkSums()
        // Every chunk is whole now: a partial-chunk claim beside it would make the journal invalid.
        delete record.partialChunks
        await settleFileMode(fh)
      }
    } finally {
      await fh.close()
    }
    // Captured before a mismatch resets the record: the messages below name what was expected.
    const wanted = record.sha256 || record.observedSha256 || ''
    if (found === wanted) {
      await moveIntoPlace(partialPath, ctx.modelDir, record.path)
      record.status = 'complete'
      record.completedAt = new Date().toISOString()
      record.checkedAt = record.completedAt
      delete record.sha256State
      delete record.partialName
      delete record.lastError
      // Batched: a crash before the write is caught next run by adopting the final file from disk.
      ctx.journal.markDirty()
      return fetched
    }
    record.integrityFailures++
    await quarantine(ctx, record)
    delete record.partialChunks
    Object.assign(record, newRecord(file), {integrityFailures: record.integrityFailures, lastError: {code: 'E_INTEGRITY', message: `sha256 ${found}`, at: new Date().toISOString()}})
    await ctx.journal.flush()
    ctx.emit({type: 'integrity-retry', path: record.path, expected: wanted, found, attempt: record.integrityFailures})
    if (record.integrityFailures >= MAX_INTEGRITY_ATTEMPTS) {
      record.status = 'failed'
      await ctx.journal.flush()
      throw new MsrError('E_INTEGRITY', `${record.path}: SHA-256 mismatch after ${record.integrityFailures} downloads (expected ${wanted}, found ${found}).`, {
        path: record.path, expected: wanted, found,
        hint: 'The hub serves bytes that do not match its own listing. Nothing was placed at the final path; try again later or report it to the model owner.',
      })
    }
  }
}

/**
 * Turns a complete file that failed its check back into a partial: a copy of the file with only the
 * damaged chunks marked missing, so the download fetches just those and re-hashes the rest from disk.
 * The damaged file stays at its final path until the repaired one replaces it atomically.
 */
async function prepareRepair(ctx: JobContext, record: FileRecord, finalPath: string, check: FileCheck): Promise<FileRecord> {
  const fresh: FileRecord = {...record, status: 'partial', sha256State: undefined, partialChunks: undefined, etag: undefined, partialName: partialNameFor(record.path)}
  delete fresh.completedAt
  // A file longer than it should be, with every chunk intact, needs no bytes at all: the partial
  // is cut back to size when the download is prepared.
  const localised = check.status !== 'missing' && check.status !== 'not-a-file' && check.damaged !== undefined &&
    (check.damaged.length > 0 || check.status === 'wrong-size')
  if (!localised) {
    fresh.chunks = record.chunks.map(() => null)
    return fresh
  }
  await fs.mkdir(path.join(ctx.stateDir, PARTIAL_DIR), {recursive: true, mode: DIR_MODE})
  const partialPath = partialPathOf(ctx.stateDir, fresh)
  // copyFile follows a symlink at its destination: remove whatever is there, then create exclusively.
  await fs.rm(partialPath, {force: true})
  await fs.copyFile(finalPath, partialPath, fs.constants.COPYFILE_FICLONE | fs.constants.COPYFILE_EXCL)
  const damaged = new Set(check.damaged!.map((d) => d.chunk))
  fresh.chunks = record.chunks.map((c, i) => (damaged.has(i) ? null : c))
  return fresh
}

/** A file already at its final path with the listed size: keep it if its SHA-256 proves it. */
async function adoptFromDisk(finalPath: string, file: HubFile, scope: object): Promise<boolean> {
  // Without a listed hash nothing proves the bytes there are the hub's: they are fetched.
  if (isSizeOnly(file)) return false
  if (!(await mayExist(finalPath, scope))) return false
  try {
    const stat = await fs.lstat(finalPath)
    if (!stat.isFile() || stat.size !== file.size) return false
  } catch {
    return false
  }
  return (await sha256FileHex(finalPath)) === file.sha256
}

async function completeRecordFromDisk(file: HubFile, finalPath: string): Promise<FileRecord> {
  const record = newRecord(file)
  const sums = await chunkSumsOfFile(finalPath, record)
  const now = new Date().toISOString()
  return {...record, chunks: sums, partialChunks: undefined, status: 'complete', completedAt: now, checkedAt: now}
}

export async function chunkSumsOfFile(filePath: string, record: Pick<FileRecord, 'path' | 'size' | 'chunkSizeBytes'>): Promise<string[]> {
  const sums = await chunkSumsOnDisk(filePath, record.size, record.chunkSizeBytes)
  if (sums.includes(null)) throw new MsrError('E_LOCAL', `${filePath} shrank while being read.`, {path: record.path})
  return sums as string[]
}

/**
 * Unclaim first, delete second: the journal on disk must never claim chunks of a partial that is
 * gone. Deleting first left that claim on disk for the whole re-listing after a remote change, and
 * a kill there left a journal vouching for bytes that did not exist.
 */
async function discardPartial(ctx: JobContext, record: FileRecord): Promise<void> {
  const partialPath = partialPathOf(ctx.stateDir, record)
  if (record.status !== 'complete' && (record.chunks.some((c) => c !== null) || record.partialChunks?.length)) {
    record.chunks = record.chunks.map(() => null)
    delete record.sha256State
    delete record.partialChunks
    await ctx.journal.flush()
  }
  await fs.rm(partialPath, {force: true})
}

/** A partial whose hash did not match is kept for a post-mortem (one per file), never handed over. */
async function quarantine(ctx: JobContext, record: FileRecord): Promise<void> {
  const dir = path.join(ctx.stateDir, QUARANTINE_DIR)
  await fs.mkdir(dir, {recursive: true, mode: DIR_MODE})
  await fs.rename(partialPathOf(ctx.stateDir, record), path.join(dir, record.partialName ?? partialNameFor(record.path)))
}

