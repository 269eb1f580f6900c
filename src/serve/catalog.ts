import {createHash} from 'node:crypto'
import fsCb from 'node:fs'
import fs from 'node:fs/promises'
import path from 'node:path'
import {promisify} from 'node:util'

import {manifestKind, readManifest, type Manifest} from '../integrity/manifest.js'
import {Journal} from '../journal/journal.js'
import {journalFiles} from '../journal/journal-files.js'
import type {JournalDoc} from '../journal/schema.js'
import {findModelDirs} from '../store/find-models.js'
import {JOURNAL_FILE, MANIFEST_FILE, type ModelLocation, type RepoKind, defaultCacheRoot, kindDir, resolveLocation} from '../store/layout.js'
import {resolveInside} from '../store/safe-path.js'
import {unservableReason} from './request-target.js'

/** A file the mirror may serve: at its final path after its SHA-256 matched. */
export interface VerifiedFile {
  path: string
  size: number
  sha256: string
  /** 40-hex commit the file was listed at (the listing's `Revision`). */
  commit: string
  /**
   * The hub listed no SHA-256: `sha256` is the one of the bytes the pull placed (the ETag), and
   * the listing we serve says `Sha256: null`, as the hub did.
   */
  sizeOnly?: boolean
}

export interface ModelSnapshot {
  modelId: string
  repoKind: RepoKind
  /** The branch or tag of the last pull. */
  revision: string
  /** Unix seconds, for the revisions reply. */
  createdAt: number
  location: ModelLocation
  files: Map<string, VerifiedFile>
}

const SHA256_HEX = /^[0-9a-f]{64}$/
// Plain fds, not FileHandles: a read stream owns and closes them (file-response.ts).
const openFd = promisify(fsCb.open)
const fstat = promisify(fsCb.fstat)

/**
 * What a cache holds, per model, as ms-resume recorded it: the manifest the last complete pull
 * wrote, and the journal's `complete` records (a pull-through of one file, or an interrupted pull,
 * leaves its verified files there). Both are untrusted input: every entry is checked before it
 * reaches a path, and an unreadable one means "nothing verified". Re-read only when either file
 * changes (both are replaced by rename, so a new inode), so a model pulled while serve runs appears.
 */
export class Catalog {
  private readonly cache = new Map<string, {key: string; snapshot?: ModelSnapshot}>()
  private byNumericId?: {at: number; ids: Map<number, string>}

  constructor(private readonly where: {cacheDir?: string; env?: NodeJS.ProcessEnv}) {}

  locate(modelId: string, repoKind: RepoKind = 'model'): ModelLocation {
    return resolveLocation(modelId, {cacheDir: this.where.cacheDir, env: this.where.env, repoKind})
  }

  async model(modelId: string, repoKind: RepoKind = 'model'): Promise<ModelSnapshot | undefined> {
    const location = this.locate(modelId, repoKind)
    const manifestFile = path.join(location.stateDir, MANIFEST_FILE)
    const journalFile = path.join(location.stateDir, JOURNAL_FILE)
    const key = `${await statKey(manifestFile)}|${await statKey(journalFile)}|${await statKey(journalFiles(location.stateDir).log)}`
    const cacheKey = `${repoKind}\u0000${modelId}`
    const hit = this.cache.get(cacheKey)
    if (hit && hit.key === key) return hit.snapshot
    const manifest = await readManifest(manifestFile).catch(() => undefined)
    const {doc} = await Journal.peek(location.stateDir)
    const snapshot = snapshotOf(modelId, location, manifest, doc, repoKind)
    // Only models that exist are remembered: ids made up by clients must not grow the map.
    if (snapshot) this.cache.set(cacheKey, {key, snapshot})
    else this.cache.delete(cacheKey)
    return snapshot
  }

  /**
   * The dataset the 1.x client names by the numeric `Id` our info route gave it
   * (`/api/v1/datasets/{Id}/repo/tree`). The ids of the cache's datasets are looked up at most
   * every few seconds, not per page of a 1,000-page listing.
   */
  async datasetByNumericId(id: number): Promise<ModelSnapshot | undefined> {
    if (!this.byNumericId || Date.now() - this.byNumericId.at > 5000 || !this.byNumericId.ids.has(id)) {
      const ids = new Map<number, string>()
      for (const datasetId of await this.discover(this.root('dataset'), 'dataset')) ids.set(datasetNumericId(datasetId), datasetId)
      this.byNumericId = {at: Date.now(), ids}
    }
    const datasetId = this.byNumericId.ids.get(id)
    return datasetId === undefined ? undefined : this.model(datasetId, 'dataset')
  }

  /** Where pull puts repos of a kind: --cache-dir (both kinds), else the cache's models/ or datasets/. */
  root(repoKind: RepoKind): string {
    if (this.where.cacheDir) return path.resolve(this.where.cacheDir)
    return path.join(defaultCacheRoot(this.where.env), kindDir(repoKind))
  }

  /**
   * The open file behind a verified entry, or undefined when the disk no longer agrees with the
   * record (deleted, replaced by another size, a symlink out of the model directory).
   */
  async open(snapshot: ModelSnapshot, file: VerifiedFile): Promise<{fd: number; mtime: Date} | undefined> {
    let real: string
    let realRoot: string
    try {
      real = await fs.realpath(resolveInside(snapshot.location.modelDir, file.path))
      realRoot = await fs.realpath(snapshot.location.modelDir)
    } catch {
      return undefined
    }
    if (!real.startsWith(realRoot + path.sep)) return undefined
    let fd: number
    try {
      fd = await openFd(real, fs.constants.O_RDONLY | fs.constants.O_NOFOLLOW)
    } catch {
      return undefined
    }
    const stat = await fstat(fd).catch(() => undefined)
    if (!stat?.isFile() || stat.size !== file.size) {
      fsCb.close(fd, () => {})
      return undefined
    }
    return {fd, mtime: stat.mtime}
  }

  /**
   * Ids of the models below a cache root with at least one verified file (for the start-up line;
   * requests look models up directly, so one pulled later is served too).
   */
  async discover(root: string, repoKind: RepoKind = 'model'): Promise<string[]> {
    const ids: string[] = []
    for (const dirs of await findModelDirs(root)) {
      const manifest = await readManifest(path.join(dirs.stateDir, MANIFEST_FILE)).catch(() => undefined)
      const modelId = manifest?.modelId ?? (await Journal.peek(dirs.stateDir)).doc?.modelId
      if (typeof modelId !== 'string') continue
      const snapshot = await this.model(modelId, repoKind).catch(() => undefined)
      if (snapshot && snapshot.files.size > 0 && snapshot.location.modelDir === path.resolve(dirs.modelDir)) ids.push(modelId)
    }
    return ids.sort()
  }

  /** The entries whose final file exists with the recorded size (what a listing may show). */
  async present(snapshot: ModelSnapshot): Promise<VerifiedFile[]> {
    const files = [...snapshot.files.values()]
    const ok = await Promise.all(files.map(async (f) => {
      const stat = await fs.lstat(resolveInside(snapshot.location.modelDir, f.path)).catch(() => undefined)
      return stat !== undefined && stat.isFile() && stat.size === f.size
    }))
    return files.filter((_, i) => ok[i])
  }
}

async function statKey(file: string): Promise<string> {
  const s = await fs.stat(file).catch(() => undefined)
  return s ? `${s.ino}:${s.size}:${s.mtimeMs}` : '-'
}

/**
 * Journal `complete` records win over the manifest (they are newer). A path whose journal record is
 * not complete is left out even when the manifest lists it: a pull is replacing it with another
 * version (between the rename of the new file and the journal write the final path holds bytes the
 * manifest does not describe) or a repair is rewriting damaged chunks in place.
 */
export function snapshotOf(modelId: string, location: ModelLocation, manifest: Manifest | undefined, doc: JournalDoc | undefined, repoKind: RepoKind = 'model'): ModelSnapshot | undefined {
  // A model and a dataset of one id may share a --cache-dir directory: only the kind asked for.
  if (manifest && (manifest.modelId !== modelId || manifestKind(manifest) !== repoKind)) manifest = undefined
  if (doc && (doc.modelId !== modelId || (doc.repoKind ?? 'model') !== repoKind)) doc = undefined
  if (!manifest && !doc) return undefined
  const files = new Map<string, VerifiedFile>()
  const records = doc ? Object.values(doc.files) : []
  for (const m of manifest?.files ?? []) {
    const r = doc?.files[m.path]
    if (r && r.status !== 'complete') continue
    const v = verifiedFile(m.path, m.size, m.sha256, m.commit, m.sizeOnly === true)
    if (v) files.set(v.path, v)
  }
  for (const r of records) {
    if (r.status !== 'complete') continue
    const v = r.sha256 === '' ? verifiedFile(r.path, r.size, r.observedSha256, r.commit, true) : verifiedFile(r.path, r.size, r.sha256, r.commit, false)
    if (v) files.set(v.path, v)
  }
  const revision = doc?.revision ?? manifest!.revision
  const created = Date.parse(doc?.createdAt ?? manifest?.createdAt ?? '')
  return {modelId, repoKind, revision: typeof revision === 'string' ? revision : 'master', createdAt: Number.isNaN(created) ? 0 : Math.floor(created / 1000), location, files}
}

function verifiedFile(p: unknown, size: unknown, sha256: unknown, commit: unknown, sizeOnly: boolean): VerifiedFile | undefined {
  if (typeof p !== 'string' || unservableReason(p)) return undefined
  if (!Number.isSafeInteger(size) || (size as number) < 0) return undefined
  if (typeof sha256 !== 'string' || !SHA256_HEX.test(sha256)) return undefined
  return {path: p, size: size as number, sha256, commit: typeof commit === 'string' ? commit : '', ...(sizeOnly ? {sizeOnly} : {})}
}

/** The `Id` the mirror's dataset info route gives a dataset (stable, 28 bits: a positive int everywhere). */
export function datasetNumericId(datasetId: string): number {
  return Number.parseInt(createHash('sha256').update(`dataset\u0000${datasetId}`).digest('hex').slice(0, 7), 16)
}
