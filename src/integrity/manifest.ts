import fs from 'node:fs/promises'

import {MsrError} from '../errors.js'
import {writeFileDurable} from '../fs/durable-file.js'
import {parseModelId, type RepoKind} from '../store/layout.js'
import {reservedReason, unsafeReason} from '../store/safe-path.js'
import type {ExpectedFile} from './check.js'
import {chunkSizeFor} from './chunks.js'

/** The integrity manifest's format version; its JSON Schema is manifests/manifest-v1.schema.json. */
export const MANIFEST_VERSION = 1
export const MANIFEST_KIND = 'ms-resume/manifest'

export interface ManifestFile {
  path: string
  size: number
  /** The listed SHA-256, or for a `sizeOnly` file the one of the bytes the pull placed. */
  sha256: string
  /** The hub listed no SHA-256: the pull checked the size only, and `sha256` is ours, not the hub's. */
  sizeOnly?: true
  commit: string
  chunkSizeBytes: number
  /** xxh64 (16 hex digits) of every chunk, in order. */
  xxh64: string[]
}

export interface Manifest {
  kind: typeof MANIFEST_KIND
  version: number
  hub: string
  endpoint: string
  modelId: string
  /** Absent for a model; `dataset` for a dataset (`modelId` is then the dataset's id). */
  repoKind?: Exclude<RepoKind, 'model'>
  revision: string
  /** The commit most files were listed at; each file also carries its own. */
  commit: string
  createdAt: string
  files: ManifestFile[]
}

/**
 * A manifest on its way to disk: its entries are made as they are written, from what the caller
 * holds anyway (a pull's 100,000 entries, made all at once, were the last peak of its memory).
 */
export interface ManifestOut extends Omit<Manifest, 'files'> {
  files: {readonly length: number; at(index: number): ManifestFile | undefined}
}

const byPath = (a: {path: string}, b: {path: string}) => (a.path < b.path ? -1 : a.path > b.path ? 1 : 0)

/** The manifest of `files`, in path order, each entry made by `entry` when it is read. */
export function lazyManifest<F extends {path: string; commit: string}>(init: {hub: string; endpoint: string; modelId: string; repoKind?: RepoKind; revision: string; files: readonly F[]; entry: (f: F) => ManifestFile}): ManifestOut {
  const counts = new Map<string, number>()
  for (const f of init.files) counts.set(f.commit, (counts.get(f.commit) ?? 0) + 1)
  // Ties by code units, not localeCompare: the same for hex commits, and no ICU collator (its data
  // is 3 MB of the node binary's pages, paid at the end of every pull, where its memory peaks).
  const commit = [...counts.entries()].sort((a, b) => b[1] - a[1] || (a[0] < b[0] ? -1 : a[0] > b[0] ? 1 : 0))[0]?.[0] ?? ''
  const sorted = [...init.files].sort(byPath)
  const files = {length: sorted.length, at: (i: number) => (i >= 0 && i < sorted.length ? init.entry(sorted[i]) : undefined)}
  const kind = init.repoKind === 'dataset' ? {repoKind: 'dataset' as const} : {}
  return {kind: MANIFEST_KIND, version: MANIFEST_VERSION, hub: init.hub, endpoint: init.endpoint, modelId: init.modelId, ...kind, revision: init.revision, commit, createdAt: new Date().toISOString(), files}
}

export function buildManifest(init: {hub: string; endpoint: string; modelId: string; repoKind?: RepoKind; revision: string; files: ManifestFile[]}): Manifest {
  const m = lazyManifest({...init, entry: (f) => f})
  return {...m, files: Array.from({length: m.files.length}, (_, i) => m.files.at(i)!)}
}

/** The repo kind a manifest pins (models' manifests carry none). */
export function manifestKind(m: Pick<Manifest, 'repoKind'>): RepoKind {
  return m.repoKind === 'dataset' ? 'dataset' : 'model'
}

export function manifestToJson(manifest: Manifest): string {
  return `${JSON.stringify(manifest, null, 2)}\n`
}

/** Files per piece of manifestPieces. */
const FILES_PER_PIECE = 200

/**
 * manifestToJson's text, a piece at a time: the manifest of 100,000 files is 30 MB, and as one
 * string (and its bytes) it was the last peak of a pull's memory.
 */
export function* manifestPieces(manifest: ManifestOut): Generator<string> {
  const {files, ...head} = manifest
  const headText = JSON.stringify({...head, files: []}, null, 2)
  if (files.length === 0) {
    yield `${headText}\n`
    return
  }
  yield headText.slice(0, headText.lastIndexOf('[]') + 1)
  for (let at = 0; at < files.length; at += FILES_PER_PIECE) {
    let piece = ''
    for (let i = at; i < Math.min(at + FILES_PER_PIECE, files.length); i++) piece += `${i > 0 ? ',' : ''}\n    ${JSON.stringify(files.at(i), null, 2).replaceAll('\n', '\n    ')}`
    yield piece
  }
  yield '\n  ]\n}\n'
}

/**
 * Writes the manifest durably, unless the file there says the same but for `createdAt` (then it is
 * left as it is): a pull of a complete model writes nothing.
 */
export async function writeManifest(file: string, manifest: ManifestOut): Promise<void> {
  const createdAt = await createdAtOf(file)
  if (createdAt !== undefined && (await fileHolds(file, manifestPieces({...manifest, createdAt})))) return
  await writeFileDurable(file, manifestPieces(manifest))
}

/** The createdAt near the top of a manifest file, or undefined. */
async function createdAtOf(file: string): Promise<string | undefined> {
  const head = await readPrefix(file, 4096)
  const m = head && /\n {2}"createdAt": ("[^"\\\n]{1,64}"),\n/.exec(head.toString('utf8'))
  return m ? (JSON.parse(m[1]) as string) : undefined
}

async function readPrefix(file: string, bytes: number): Promise<Buffer | undefined> {
  const fh = await fs.open(file, fs.constants.O_RDONLY | (fs.constants.O_NOFOLLOW ?? 0)).catch(() => undefined)
  if (!fh) return undefined
  try {
    const buf = Buffer.alloc(bytes)
    const {bytesRead} = await fh.read(buf, 0, bytes, 0)
    return buf.subarray(0, bytesRead)
  } finally {
    await fh.close()
  }
}

/** Whether `file` is exactly the concatenation of `pieces` (read a piece at a time). */
async function fileHolds(file: string, pieces: Iterable<string>): Promise<boolean> {
  const fh = await fs.open(file, fs.constants.O_RDONLY | (fs.constants.O_NOFOLLOW ?? 0)).catch(() => undefined)
  if (!fh) return false
  try {
    const stat = await fh.stat()
    if (!stat.isFile()) return false
    let at = 0
    for (const piece of pieces) {
      const want = Buffer.from(piece)
      if (at + want.length > stat.size) return false
      const got = Buffer.allocUnsafe(want.length)
      const {bytesRead} = await fh.read(got, 0, want.length, at)
      if (bytesRead !== want.length || !got.equals(want)) return false
      at += want.length
    }
    return at === stat.size
  } finally {
    await fh.close()
  }
}

export function expectedFromManifest(f: ManifestFile): ExpectedFile {
  return {path: f.path, size: f.size, sha256: f.sha256, chunkSizeBytes: f.chunkSizeBytes, chunks: f.xxh64}
}

/** Reads and validates a manifest; a bad one is a clear E_USAGE naming the problem. */
export async function readManifest(file: string): Promise<Manifest> {
  let text: string
  try {
    text = await fs.readFile(file, 'utf8')
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code
    throw new MsrError(code === 'ENOENT' ? 'E_USAGE' : 'E_LOCAL', `Cannot read the manifest ${file}: ${code ?? (error as Error).message}.`, {
      hint: code === 'ENOENT' ? 'Check the path, or create one with `ms-resume manifest <model> --out FILE`.' : 'Check its permissions.',
    })
  }
  let doc: unknown
  try {
    doc = JSON.parse(text)
  } catch {
    throw new MsrError('E_USAGE', `The manifest ${file} is not valid JSON.`, {hint: 'Regenerate it with `ms-resume manifest <model> --out FILE`.'})
  }
  const problem = manifestProblem(doc)
  if (problem) throw new MsrError('E_USAGE', `The manifest ${file} is not usable: ${problem}.`, {hint: 'Regenerate it with `ms-resume manifest <model> --out FILE`.'})
  return doc as Manifest
}

export function manifestProblem(doc: unknown): string | undefined {
  if (!doc || typeof doc !== 'object') return 'not a JSON object'
  const m = doc as Partial<Manifest>
  if (m.kind !== MANIFEST_KIND) return `"kind" is not "${MANIFEST_KIND}"`
  if (m.version !== MANIFEST_VERSION) return `unsupported version ${String(m.version)} (this ms-resume reads version ${MANIFEST_VERSION})`
  if (typeof m.modelId !== 'string' || typeof m.revision !== 'string') return 'missing modelId or revision'
  if (m.repoKind !== undefined && m.repoKind !== 'dataset') return `bad repoKind ${JSON.stringify(m.repoKind)}`
  try {
    parseModelId(m.modelId)
  } catch {
    return `bad modelId ${JSON.stringify(m.modelId)}`
  }
  for (const key of ['hub', 'endpoint', 'commit', 'createdAt'] as const) {
    if (typeof m[key] !== 'string') return `"${key}" is not a string`
  }
  if (!Array.isArray(m.files)) return 'no files array'
  const seen = new Set<string>()
  for (const f of m.files) {
    if (!f || typeof f.path !== 'string' || !Number.isSafeInteger(f.size) || f.size < 0 || !/^[0-9a-f]{64}$/.test(f.sha256 ?? '') || typeof f.commit !== 'string') return `bad file entry ${JSON.stringify(f?.path)}`
    // A pinned manifest is a file someone committed: its paths are as untrusted as a listing's.
    const unsafe = unsafeReason(f.path)
    if (unsafe) return `unsafe path ${JSON.stringify(f.path)} (${unsafe})`
    const reserved = reservedReason(f.path)
    if (reserved) return `path ${JSON.stringify(f.path)} is ${reserved}`
    if (!Number.isSafeInteger(f.chunkSizeBytes) || f.chunkSizeBytes <= 0 || !Array.isArray(f.xxh64) || f.xxh64.length !== Math.ceil(f.size / f.chunkSizeBytes)) return `bad chunk list for ${JSON.stringify(f.path)}`
    // The grid is a function of the size: a manifest that says otherwise would seed a journal
    // record (verify --repair) with a chunk table the journal itself refuses.
    if (f.chunkSizeBytes !== chunkSizeFor(f.size)) return `chunkSizeBytes ${f.chunkSizeBytes} of ${JSON.stringify(f.path)} is not the grid for ${f.size} bytes (${chunkSizeFor(f.size)})`
    if (!f.xxh64.every((x) => typeof x === 'string' && /^[0-9a-f]{16}$/.test(x))) return `bad xxh64 value for ${JSON.stringify(f.path)}`
    if (f.sizeOnly !== undefined && f.sizeOnly !== true) return `bad sizeOnly value for ${JSON.stringify(f.path)}`
    if (seen.has(f.path)) return `duplicate path ${JSON.stringify(f.path)}`
    seen.add(f.path)
  }
  return undefined
}
