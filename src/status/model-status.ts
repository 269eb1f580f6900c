import fs from 'node:fs/promises'
import path from 'node:path'

import {Journal} from '../journal/journal.js'
import {type LockInfo, inspectModelLock} from '../journal/lock.js'
import {durableBytes, type FileStatus} from '../journal/schema.js'
import type {ModelDirs} from '../store/find-models.js'
import {JOURNAL_FILE, MANIFEST_FILE, PARTIAL_DIR, QUARANTINE_DIR, type RepoKind} from '../store/layout.js'

export interface FileState {
  path: string
  status: FileStatus
  size: number
  /** Bytes safely on disk: the whole file when complete, the durable chunks of a partial. */
  bytesOnDisk: number
  lastError?: {code: string; message: string; at: string}
}

/** What one model's journal (and its state directory) says; the schema of `status --json`. */
export interface ModelStatus {
  modelId: string
  /** From the journal, else from where it lies (`<cache>/datasets/...`) or --dataset. */
  repoKind: RepoKind
  revision?: string
  endpoint?: string
  modelDir: string
  stateDir: string
  /** `missing`: no journal (never pulled here); `unreadable`: see `problem` (the next pull rebuilds it). */
  journal: 'ok' | 'missing' | 'unreadable'
  problem?: string
  updatedAt?: string
  /** Every file the last pull selected is complete and verified (its manifest was written). */
  complete: boolean
  /** Holder of the model lock (`pid N on host (user)`) while a pull or clean runs. */
  lockedBy?: string
  /** The model lock when there is one, live or stale: who holds it, since when, last heartbeat. */
  lock?: LockInfo
  files: {known: number; complete: number; partial: number; pending: number; failed: number}
  bytes: {known: number; complete: number; partial: number}
  /** What `ms-resume clean` would remove from the state directory. */
  leftovers: {partialFiles: number; partialBytes: number; quarantinedFiles: number; quarantinedBytes: number}
  lastError?: {path: string; code: string; message: string; at: string}
  /** Per file; only when asked for one model. */
  fileList?: FileState[]
}

/**
 * Read-only: peeks at the journal, never locks. Writes nothing but, when there is a lock, a probe
 * file for a moment (the filesystem's clock, to tell a live holder from a stale one).
 */
export async function modelStatus(dirs: ModelDirs, opts: {withFiles?: boolean} = {}): Promise<ModelStatus> {
  const {doc, problem} = await Journal.peek(dirs.stateDir)
  const lock = await inspectModelLock(dirs.stateDir)
  const journalFile = await fs.stat(path.join(dirs.stateDir, JOURNAL_FILE)).catch(() => undefined)
  const status: ModelStatus = {
    modelId: doc?.modelId ?? dirs.dirId,
    repoKind: doc ? (doc.repoKind ?? 'model') : (dirs.repoKind ?? 'model'),
    revision: doc?.revision,
    endpoint: doc?.endpoint,
    modelDir: dirs.modelDir,
    stateDir: dirs.stateDir,
    journal: doc ? 'ok' : problem || journalFile ? 'unreadable' : 'missing',
    problem,
    updatedAt: doc?.updatedAt,
    complete: false,
    lockedBy: lock && !lock.stale ? lock.holder : undefined,
    lock,
    files: {known: 0, complete: 0, partial: 0, pending: 0, failed: 0},
    bytes: {known: 0, complete: 0, partial: 0},
    leftovers: await leftovers(dirs.stateDir),
  }
  const files: FileState[] = []
  for (const r of Object.values(doc?.files ?? {})) {
    const onDisk = r.status === 'complete' ? r.size : durableBytes(r)
    status.files.known++
    status.files[r.status]++
    status.bytes.known += r.size
    if (r.status === 'complete') status.bytes.complete += r.size
    else status.bytes.partial += onDisk
    if (r.lastError && (!status.lastError || r.lastError.at > status.lastError.at)) status.lastError = {path: r.path, ...r.lastError}
    files.push({path: r.path, status: r.status, size: r.size, bytesOnDisk: onDisk, lastError: r.lastError})
  }
  const manifest = await fs.stat(path.join(dirs.stateDir, MANIFEST_FILE)).catch(() => undefined)
  status.complete = Boolean(doc && manifest && status.files.known === status.files.complete)
  if (opts.withFiles) status.fileList = files.sort((a, b) => (a.path < b.path ? -1 : a.path > b.path ? 1 : 0))
  return status
}

async function leftovers(stateDir: string): Promise<ModelStatus['leftovers']> {
  const partial = await sizes(path.join(stateDir, PARTIAL_DIR))
  const quarantined = await sizes(path.join(stateDir, QUARANTINE_DIR))
  return {partialFiles: partial.count, partialBytes: partial.bytes, quarantinedFiles: quarantined.count, quarantinedBytes: quarantined.bytes}
}

async function sizes(dir: string): Promise<{count: number; bytes: number}> {
  let count = 0
  let bytes = 0
  for (const name of await fs.readdir(dir).catch(() => [] as string[])) {
    const stat = await fs.lstat(path.join(dir, name)).catch(() => undefined)
    if (!stat) continue
    count++
    bytes += stat.isFile() ? stat.size : 0
  }
  return {count, bytes}
}
