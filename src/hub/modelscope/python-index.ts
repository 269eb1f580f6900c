/**
 * The official `modelscope` Python client's own index of a downloaded model, written (and read back)
 * by us so that its `snapshot_download` finds our files as present and moves no bytes.
 *
 * In the model directory it keeps:
 * - `.msc`: a pickle of `[{'Path': <repo path>, 'Revision': <40-hex commit>}, ...]`, one per file;
 * - `.mdl`: a pickle of `{'id': '<owner>/<masked name>'}`;
 * - `.mv`: the text `Revision:<branch or tag>,CreatedAt:<unix seconds>`, no trailing newline (the
 *   client does `f.write('Revision:%s,CreatedAt:%s' % ...)` and reads it back with `.strip()`).
 *   For a dataset (`<cache>/datasets/<owner>/<masked name>`) the client's dataset download writes
 *   the bare revision name instead (`save_model_version(revision_info=revision)` with a str), and
 *   makes no dotted-name symlink.
 *
 * The pickles themselves are made and read by pickle-codec.ts; this module is the index: which
 * files, where, written atomically, merged with what another writer left.
 */
import {randomBytes} from 'node:crypto'
import fs from 'node:fs/promises'
import path from 'node:path'

import {MsrError} from '../../errors.js'
import {fsyncDir} from '../../fs/durable-file.js'
import {fsFailure} from '../../fs/fs-errors.js'
import {parseModelId, type RepoKind} from '../../store/layout.js'
import {RefusedStateFile, readStateFile} from '../../store/state-file.js'
import {type PythonIndexEntry, assertStr, decodePickle, encodePickleDict, encodePickleIndex} from './pickle-codec.js'

export {type DecodedPickle, type PickleDict, type PythonIndexEntry, decodePickle, encodePickleDict, encodePickleIndex} from './pickle-codec.js'

export const MSC_FILE = '.msc'
export const MDL_FILE = '.mdl'
export const MV_FILE = '.mv'
export const LOCK_DIR = '.lock'
/**
 * Largest `.msc` (or `.mdl`, `.mv`) read: about a million entries. Another writer's index may be
 * anything; a larger one is not read (nor merged) but replaced, with a warning.
 */
export const MAX_INDEX_BYTES = 64 * 1024 * 1024

/** The official client's directory name for a model name: every `.` becomes `___`. */
export function maskModelName(name: string): string {
  return name.replaceAll('.', '___')
}

// ---------------------------------------------------------------------------------------------
// Files on disk
// ---------------------------------------------------------------------------------------------

export interface WriteModelscopeIndexOptions {
  /** The model directory (in the default layout: `<cacheRoot>/models/<owner>/<masked name>`). */
  modelDir: string
  /** The ModelScope cache root, when the default cache layout is used: adds lock file and symlink. */
  cacheRoot?: string
  owner: string
  /** The model name as in the model id (unmasked, e.g. `Qwen2.5-7B`). */
  name: string
  /** One entry per file present and verified in modelDir. */
  files: ReadonlyArray<PythonIndexEntry>
  /** Default model; a dataset's `.mv` is the bare revision name and it gets no symlink. */
  repoKind?: RepoKind
  /** The branch or tag name (`master`, `v1.0`). */
  revisionName: string
  /** `CreatedAt` of that branch or tag from the revisions call, unix seconds (models only). */
  revisionCreatedAt?: number
  /** Keep entries of an existing, readable `.msc` whose Path is not among `files`. Default true. */
  merge?: boolean
}

export type SymlinkOutcome =
  | 'not-needed' // no cacheRoot, or the name has no dot
  | 'created'
  | 'kept' // a symlink already resolving to modelDir
  | 'replaced' // a symlink pointing elsewhere (or dangling) was swapped for ours
  | 'blocked' // a real file or directory is there: left alone
  | 'failed' // the filesystem refused symlinks (the official client needs only the masked dir)

export interface WriteModelscopeIndexResult {
  /** The entries now in `.msc`, foreign ones first, then ours. */
  entries: PythonIndexEntry[]
  /** How many entries of an existing `.msc` were kept (0 when none, unreadable, or merge=false). */
  keptForeign: number
  /** Whether an existing `.msc` could not be decoded and was rewritten from our entries alone. */
  replacedUnreadable: boolean
  /** Why an existing `.msc` was not read (not a regular file, too large, not an index), when it was not. */
  unreadableReason?: string
  lockFile?: string
  symlink: SymlinkOutcome
  symlinkPath?: string
}

export interface ModelscopeIndex {
  files: PythonIndexEntry[] | null
  id: string | null
  revision: {name: string; createdAt: number} | null
}

/** `.mv` as the official client writes it; exact bytes, no trailing newline. */
export function formatModelVersion(revisionName: string, createdAt: number): string {
  return `Revision:${revisionName},CreatedAt:${createdAt}`
}

const MV_PATTERN = /^Revision:(.*),CreatedAt:(-?\d+(?:\.\d+)?)$/s

/** Parses `.mv` the way the client reads it (`f.read().strip()`); null if not in that form. */
export function parseModelVersion(text: string): {name: string; createdAt: number} | null {
  const m = MV_PATTERN.exec(text.trim())
  if (!m) return null
  const createdAt = Number(m[2])
  return Number.isFinite(createdAt) ? {name: m[1], createdAt} : null
}

function errnoOf(error: unknown): string | undefined {
  return (error as NodeJS.ErrnoException | undefined)?.code
}

const GERUND = {read: 'reading', write: 'writing', create: 'creating', inspect: 'inspecting'} as const

function localError(error: unknown, file: string, action: keyof typeof GERUND): MsrError {
  return fsFailure(error, `${GERUND[action]} the cache index file`, file)
}

/**
 * Reads an index file, or null if it (or its directory) is not there. Another writer's file may be
 * a FIFO (a plain read blocks forever), a symlink or huge: it is opened without blocking or
 * following links, and read only when it is a regular file of at most MAX_INDEX_BYTES; otherwise
 * `refused` says why. Other errors propagate.
 */
async function readIndexFile(file: string): Promise<{bytes: Buffer | null; refused?: string}> {
  try {
    return {bytes: (await readStateFile(file, MAX_INDEX_BYTES)) ?? null}
  } catch (error) {
    if (error instanceof RefusedStateFile) return {bytes: null, refused: error.message}
    throw localError(error, file, 'read')
  }
}

async function readIfPresent(file: string): Promise<Buffer | null> {
  return (await readIndexFile(file)).bytes
}

/**
 * writeAtomic, unless `target` already holds exactly `data` as a 0644 regular file: a pull of a
 * complete model rewrote (and fsynced) all three index files every time.
 */
async function writeIfChanged(target: string, data: Uint8Array | string, current?: Buffer | null): Promise<void> {
  const bytes = typeof data === 'string' ? Buffer.from(data) : data
  const stat = await fs.lstat(target).catch(() => undefined)
  if (stat?.isFile() && (stat.mode & 0o777) === 0o644 && stat.size === bytes.length) {
    const held = current ?? (await readIndexFile(target)).bytes
    if (held && Buffer.compare(held, bytes) === 0) return
  }
  await writeAtomic(target, data)
}

/**
 * Replaces `target` atomically: a uniquely named temp file in the same directory, written, chmod
 * 0644 (whatever the umask), fsynced, renamed over the target; then the directory is fsynced.
 */
async function writeAtomic(target: string, data: Uint8Array | string): Promise<void> {
  const dir = path.dirname(target)
  const tmp = path.join(dir, `.${path.basename(target)}.${process.pid}.${randomBytes(6).toString('hex')}.tmp`)
  try {
    const handle = await fs.open(tmp, 'wx', 0o644)
    try {
      await handle.writeFile(data)
      await handle.chmod(0o644)
      await handle.sync()
    } finally {
      await handle.close()
    }
    await fs.rename(tmp, target)
    await fsyncDir(dir)
  } catch (error) {
    await fs.rm(tmp, {force: true}).catch(() => {})
    throw error instanceof MsrError ? error : localError(error, target, 'write')
  }
}

/**
 * The `.msc` entries in a pickle, or null if it is not a list of dicts with str `Path` and
 * `Revision` (extra keys, which the client never writes, are dropped).
 */
function indexEntriesOf(buf: Uint8Array): PythonIndexEntry[] | null {
  const decoded = decodePickle(buf)
  if (!Array.isArray(decoded)) return null
  if (!decoded.every((e) => typeof e.Path === 'string' && typeof e.Revision === 'string')) return null
  return decoded.map((e) => ({Path: e.Path, Revision: e.Revision}))
}

/** Reads the official client's index files of a model directory; each part null if absent or unreadable. */
export async function readModelscopeIndex(modelDir: string): Promise<ModelscopeIndex> {
  const [msc, mdl, mv] = await Promise.all(
    [MSC_FILE, MDL_FILE, MV_FILE].map((f) => readIfPresent(path.join(modelDir, f))),
  )
  const files = msc ? indexEntriesOf(msc) : null
  let id: string | null = null
  if (mdl) {
    const decoded = decodePickle(mdl)
    if (decoded && !Array.isArray(decoded) && typeof decoded.id === 'string') id = decoded.id
  }
  const revision = mv ? parseModelVersion(mv.toString('utf8')) : null
  return {files, id, revision}
}

/** One entry per Path: a repeated Path keeps its last Revision, at its last position (the client appends). */
function uniqueByPath(entries: ReadonlyArray<PythonIndexEntry>): Map<string, PythonIndexEntry> {
  const byPath = new Map<string, PythonIndexEntry>()
  for (const e of entries) {
    byPath.delete(e.Path)
    byPath.set(e.Path, e)
  }
  return byPath
}

/**
 * Our entries win by Path; foreign entries keep their order, ours follow (as the client appends).
 * Repeated foreign entries are merged too, so each rewrite is bounded by the distinct paths and
 * an index that another writer keeps appending to does not grow with every pull.
 */
function mergeEntries(existing: PythonIndexEntry[], ours: ReadonlyArray<PythonIndexEntry>): {entries: PythonIndexEntry[]; kept: number} {
  const byPath = uniqueByPath(ours)
  const foreign = [...uniqueByPath(existing).values()].filter((e) => !byPath.has(e.Path))
  return {entries: [...foreign, ...byPath.values()], kept: foreign.length}
}

/**
 * Writes `.msc`, `.mdl` and `.mv` into `modelDir` so the official client counts the files as
 * present. With `cacheRoot` (the default cache layout) also creates the empty repo lock file
 * `<cacheRoot>/.lock/<owner>___<name>` and, for a dotted name, the symlink
 * `<cacheRoot>/models/<owner>/<name>` → the masked directory (relative target).
 *
 * Not a lock: the caller must hold its own repo lock; this does not take the client's flock.
 */
export async function writeModelscopeIndex(opts: WriteModelscopeIndexOptions): Promise<WriteModelscopeIndexResult> {
  const {modelDir, cacheRoot, owner, name, revisionName} = opts
  const dataset = opts.repoKind === 'dataset'
  parseModelId(`${owner}/${name}`) // throws E_USAGE for anything that is not a safe owner/name
  assertStr(revisionName, 'revisionName')
  if (!dataset && !Number.isFinite(opts.revisionCreatedAt)) throw new TypeError('revisionCreatedAt must be a finite number')
  const ours = opts.files
  ours.forEach((f, i) => {
    assertStr(f?.Path, `files[${i}].Path`)
    assertStr(f?.Revision, `files[${i}].Revision`)
  })

  try {
    await fs.mkdir(modelDir, {recursive: true})
  } catch (error) {
    throw localError(error, modelDir, 'create')
  }

  let foreign: PythonIndexEntry[] = []
  let unreadableReason: string | undefined
  const mscPath = path.join(modelDir, MSC_FILE)
  const existing = await readIndexFile(mscPath)
  if (existing.refused) {
    unreadableReason = existing.refused
  } else if (existing.bytes) {
    const decoded = indexEntriesOf(existing.bytes)
    if (decoded === null) unreadableReason = 'not a pickled list of {Path, Revision}'
    else if (opts.merge !== false) foreign = decoded
  }
  const replacedUnreadable = unreadableReason !== undefined
  const {entries, kept: keptForeign} = mergeEntries(foreign, ours)

  // .msc last: it is what makes the client treat files as present.
  await writeIfChanged(path.join(modelDir, MDL_FILE), encodePickleDict({id: `${owner}/${maskModelName(name)}`}))
  await writeIfChanged(path.join(modelDir, MV_FILE), dataset ? revisionName : formatModelVersion(revisionName, opts.revisionCreatedAt!))
  await writeIfChanged(mscPath, encodePickleIndex(entries), existing.bytes)

  const result: WriteModelscopeIndexResult = {entries, keptForeign, replacedUnreadable, ...(unreadableReason ? {unreadableReason} : {}), symlink: 'not-needed'}
  if (cacheRoot !== undefined) {
    result.lockFile = await ensureLockFile(cacheRoot, owner, name)
    if (name.includes('.') && !dataset) {
      result.symlinkPath = path.join(cacheRoot, 'models', owner, name)
      result.symlink = await ensureSymlink(result.symlinkPath, modelDir)
    }
  }
  return result
}

async function ensureLockFile(cacheRoot: string, owner: string, name: string): Promise<string> {
  const lockDir = path.join(cacheRoot, LOCK_DIR)
  const lockFile = path.join(lockDir, `${owner}___${name}`)
  try {
    await fs.mkdir(lockDir, {recursive: true})
    const handle = await fs.open(lockFile, 'wx', 0o644)
    await handle.close()
  } catch (error) {
    if (errnoOf(error) !== 'EEXIST') throw localError(error, lockFile, 'create')
  }
  return lockFile
}

async function ensureSymlink(linkPath: string, modelDir: string): Promise<SymlinkOutcome> {
  const linkDir = path.dirname(linkPath)
  const target = path.relative(linkDir, path.resolve(modelDir)) || '.'
  let existing: import('node:fs').Stats | null = null
  try {
    existing = await fs.lstat(linkPath)
  } catch (error) {
    if (errnoOf(error) !== 'ENOENT') throw localError(error, linkPath, 'inspect')
  }
  if (existing && !existing.isSymbolicLink()) return 'blocked'
  if (existing) {
    const [a, b] = await Promise.all([fs.realpath(linkPath).catch(() => null), fs.realpath(modelDir).catch(() => null)])
    if (a !== null && a === b) return 'kept'
  }
  try {
    await fs.mkdir(linkDir, {recursive: true})
    if (!existing) {
      await fs.symlink(target, linkPath, 'dir')
      await fsyncDir(linkDir)
      return 'created'
    }
    // Swap a stale symlink atomically: a new one under a temp name, renamed over the old.
    const tmp = path.join(linkDir, `.${path.basename(linkPath)}.${process.pid}.${randomBytes(6).toString('hex')}.tmp`)
    await fs.symlink(target, tmp, 'dir')
    try {
      await fs.rename(tmp, linkPath)
    } catch (error) {
      await fs.rm(tmp, {force: true}).catch(() => {})
      throw error
    }
    await fsyncDir(linkDir)
    return 'replaced'
  } catch (error) {
    const code = errnoOf(error)
    // Someone created it between our lstat and symlink: if it is ours now, fine; else leave it.
    if (code === 'EEXIST') {
      const st = await fs.lstat(linkPath).catch(() => null)
      return st?.isSymbolicLink() ? 'kept' : 'blocked'
    }
    if (code === 'EPERM' || code === 'EACCES' || code === 'ENOTSUP' || code === 'EOPNOTSUPP') return 'failed'
    throw localError(error, linkPath, 'create')
  }
}
