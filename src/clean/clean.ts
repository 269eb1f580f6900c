import fs from 'node:fs/promises'
import path from 'node:path'

import {MsrError, isMsrError} from '../errors.js'
import {fromFsError} from '../fs/fs-errors.js'
import {Journal} from '../journal/journal.js'
import {JOURNAL_LOG_FILE} from '../journal/journal-files.js'
import {acquireModelLock, peekModelLock} from '../journal/lock.js'
import type {JournalDoc} from '../journal/schema.js'
import type {ModelDirs} from '../store/find-models.js'
import {JOURNAL_FILE, PARTIAL_DIR, QUARANTINE_DIR, type RepoKind} from '../store/layout.js'

export type CleanKind = 'partial' | 'quarantine' | 'temp' | 'journal-backup'

export interface CleanItem {
  kind: CleanKind
  /** Absolute path of what is (or would be) removed. */
  target: string
  bytes: number
  /** The repo path a partial belongs to, when the journal says. */
  file?: string
}

/** The schema of one model in `clean --json`. */
export interface CleanResult {
  modelId: string
  repoKind: RepoKind
  modelDir: string
  dryRun: boolean
  items: CleanItem[]
  /** Journal entries of files that are not complete, removed so the next pull starts them afresh. */
  journalEntries: string[]
  freedBytes: number
  /** Why the journal itself was left alone (it could not be read: the next pull rebuilds it). */
  journalProblem?: string
}

// Our durable writers' temp files: `.<name>.<pid>.<random hex>.tmp`. In the model directory only
// those of the official index files we write: any other name there may be a file of the model.
const STATE_TEMP = /^(\..+\.tmp|\.write-probe-\d+(-[0-9a-f]{8})?)$/
const MODEL_DIR_TEMP = /^\.(msc|mdl|mv)\.\d+\.[0-9a-f]+\.tmp$/
const JOURNAL_BACKUP = new RegExp(`^(${[JOURNAL_FILE, JOURNAL_LOG_FILE].map((n) => n.replaceAll('.', '\\.')).join('|')})\\.unreadable-\\d+$`)

/**
 * Removes what interrupted or failed pulls left behind: partial downloads, quarantined downloads,
 * stray temp files, backups of unreadable journals, and journal entries of files that are not
 * complete. Never a file at its final path, never a complete journal entry. Holds the model lock
 * (fails at once with E_LOCKED while a pull runs); a dry run only checks that nobody holds it.
 */
export async function cleanModel(dirs: ModelDirs, opts: {dryRun: boolean}): Promise<CleanResult> {
  const result: CleanResult = {modelId: dirs.dirId, repoKind: dirs.repoKind ?? 'model', modelDir: dirs.modelDir, dryRun: opts.dryRun, items: [], journalEntries: [], freedBytes: 0}
  if (!(await isDirectory(dirs.stateDir))) return result
  if (opts.dryRun) {
    const holder = await peekModelLock(dirs.stateDir)
    if (holder) throw lockedError(holder)
    await plan(dirs, result)
    return result
  }
  let lock
  try {
    lock = await acquireModelLock(dirs.stateDir, {waitMs: 0})
  } catch (error) {
    if (isMsrError(error) && error.code === 'E_LOCKED') throw lockedError((await peekModelLock(dirs.stateDir)) ?? 'another process')
    if (isMsrError(error)) throw error
    throw fromFsError(error, 'locking the model', dirs.stateDir)
  }
  try {
    const {doc} = await plan(dirs, result)
    for (const item of result.items) {
      try {
        await fs.rm(item.target, {recursive: true, force: true})
      } catch (error) {
        throw fromFsError(error, `removing ${item.target}`, item.target)
      }
    }
    if (doc && result.journalEntries.length > 0) await dropEntries(dirs.stateDir, doc, result.journalEntries)
    return result
  } finally {
    await lock.release()
  }
}

/** Fills `result` with what would go; returns the journal it read. */
async function plan(dirs: ModelDirs, result: CleanResult): Promise<{doc?: JournalDoc}> {
  const {doc, problem} = await Journal.peek(dirs.stateDir)
  if (doc) Object.assign(result, {modelId: doc.modelId, repoKind: doc.repoKind ?? 'model'})
  if (problem) result.journalProblem = problem
  const complete = new Set(Object.values(doc?.files ?? {}).filter((r) => r.status === 'complete').map((r) => r.path))
  const partialOwner = new Map(Object.values(doc?.files ?? {}).filter((r) => r.partialName).map((r) => [r.partialName!, r.path]))
  const add = async (kind: CleanKind, target: string, file?: string) => {
    result.items.push({kind, target, bytes: await bytesOf(target), ...(file ? {file} : {})})
  }
  for (const [kind, folder] of [['partial', PARTIAL_DIR], ['quarantine', QUARANTINE_DIR]] as const) {
    const dir = path.join(dirs.stateDir, folder)
    const stat = await fs.lstat(dir).catch(() => undefined)
    if (!stat) continue
    // A symlink (or file) where our folder belongs is removed itself: listing it would follow it
    // and delete whatever it points at, the model's own verified files included.
    if (!stat.isDirectory()) {
      await add(kind, dir)
      continue
    }
    for (const name of await names(dir)) await add(kind, path.join(dir, name), partialOwner.get(name))
  }
  for (const name of await names(dirs.stateDir)) {
    if (JOURNAL_BACKUP.test(name)) await add('journal-backup', path.join(dirs.stateDir, name))
    else if (STATE_TEMP.test(name)) await add('temp', path.join(dirs.stateDir, name))
  }
  for (const name of await names(dirs.modelDir)) {
    if (MODEL_DIR_TEMP.test(name) && !complete.has(name)) await add('temp', path.join(dirs.modelDir, name))
  }
  // Belt and braces: nothing at the final path of a verified file is ever a leftover.
  const verified = new Set([...complete].map((p) => path.join(dirs.modelDir, ...p.split('/'))))
  result.items = result.items.filter((i) => !verified.has(i.target))
  result.journalEntries = Object.values(doc?.files ?? {}).filter((r) => r.status !== 'complete').map((r) => r.path).sort()
  result.freedBytes = result.items.reduce((n, i) => n + i.bytes, 0)
  return {doc}
}

async function dropEntries(stateDir: string, doc: JournalDoc, paths: string[]): Promise<void> {
  const {journal} = await Journal.open(stateDir, {hub: doc.hub, endpoint: doc.endpoint, modelId: doc.modelId, repoKind: doc.repoKind, revision: doc.revision})
  for (const p of paths) {
    if (journal.get(p)?.status !== 'complete') journal.remove(p)
  }
  await journal.close()
}

function lockedError(holder: string): MsrError {
  return new MsrError('E_LOCKED', `Another ms-resume (${holder}) is using this model.`, {hint: 'Wait for it to finish, then clean.'})
}

async function names(dir: string): Promise<string[]> {
  return (await fs.readdir(dir).catch(() => [] as string[])).sort()
}

async function isDirectory(p: string): Promise<boolean> {
  return Boolean((await fs.lstat(p).catch(() => undefined))?.isDirectory())
}

/** Bytes a file or a whole directory takes (symlinks count as their own size, never followed). */
async function bytesOf(target: string): Promise<number> {
  const stat = await fs.lstat(target).catch(() => undefined)
  if (!stat) return 0
  if (!stat.isDirectory()) return stat.size
  let total = 0
  for (const name of await names(target)) total += await bytesOf(path.join(target, name))
  return total
}
