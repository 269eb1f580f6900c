import type {EndpointFailover} from '../events.js'
import type {HubFile} from '../hub/types.js'
import type {CheckLevel, DamagedRange, FileCheck, FileCheckStatus} from '../integrity/check.js'
import {type Manifest, type ManifestFile, expectedFromManifest} from '../integrity/manifest.js'
import {resolveInside} from '../store/safe-path.js'
import {checkFiles, defaultThreads} from './check-pool.js'
import {findExtraFiles} from './extra-files.js'
import type {ManifestSource} from './manifest-source.js'

export interface FileReport {
  path: string
  status: FileCheckStatus
  /** The level the file was actually checked at (`fast` falls back to `full` without chunk sums). */
  level: CheckLevel
  /** Expected size, from the manifest. */
  size: number
  foundSize?: number
  /** Byte ranges (end exclusive) whose chunk sums do not match, when the damage could be localised. */
  damaged?: DamagedRange[]
  expectedSha256?: string
  foundSha256?: string
  /** Set when --repair fixed the file: what was wrong before, and what it cost. */
  repaired?: {from: FileCheckStatus; foundSize?: number; damaged?: DamagedRange[]; downloadedBytes: number}
}

/** What changed upstream since the manifest was written (--remote). */
export interface RemoteDiff {
  endpoint: string
  revision: string
  /** In the manifest and on the hub, with another sha256 or size. */
  changed: Array<{path: string; manifest: {size: number; sha256: string}; hub: {size: number; sha256: string; commit: string}}>
  /** In the manifest, no longer listed by the hub. */
  removed: string[]
  /** Listed by the hub, not in the manifest. */
  added: string[]
  /** Endpoints left on the way to `endpoint` (`--endpoint` repeated), when any. */
  failovers?: EndpointFailover[]
}

export interface VerifyCounts {
  files: number
  ok: number
  missing: number
  wrongSize: number
  damaged: number
  sha256Mismatch: number
  notAFile: number
  extra: number
  repaired: number
}

/** `verify --json` prints this, as one line (docs/json-output.md). */
export interface VerifyReport {
  type: 'verify'
  modelId: string
  revision: string
  commit: string
  modelDir: string
  level: CheckLevel
  manifest: ManifestSource
  /** Every listed file is present and passed its check (extra files do not count against it). */
  ok: boolean
  counts: VerifyCounts
  /** One entry per manifest file, in manifest order. */
  files: FileReport[]
  /** On disk below the model directory but not in the manifest: reported, never deleted. */
  extra: string[]
  remote?: RemoteDiff
  repair?: {files: number; repaired: number; downloadedBytes: number; error?: {code: string; message: string}}
  /** Bytes read to check contents (0 at level `size`). */
  checkedBytes: number
  elapsedMs: number
}

export interface VerifyOptions {
  manifest: Manifest
  source: ManifestSource
  modelDir: string
  level: CheckLevel
  /** Files hashed in parallel (worker threads); default: defaultThreads(level). */
  threads?: number
  signal?: AbortSignal
}

/**
 * Checks every file of a manifest at a level, offline, and lists what else is on disk. Never
 * writes: a damaged file is reported, repairing it is repair.ts's job.
 */
export async function verifyModel(opts: VerifyOptions): Promise<VerifyReport> {
  const started = performance.now()
  const {manifest} = opts
  const files = await checkManifestFiles(opts.modelDir, manifest.files, opts.level, opts)
  const extra = await findExtraFiles(opts.modelDir, manifest.files.map((f) => f.path))
  const report: VerifyReport = {
    type: 'verify',
    modelId: manifest.modelId,
    revision: manifest.revision,
    commit: manifest.commit,
    modelDir: opts.modelDir,
    level: opts.level,
    manifest: opts.source,
    ok: false,
    counts: countFiles(files, extra),
    files,
    extra,
    checkedBytes: opts.level === 'size' ? 0 : files.reduce((n, f) => n + (f.status === 'missing' || f.status === 'not-a-file' ? 0 : f.foundSize ?? 0), 0),
    elapsedMs: 0,
  }
  report.ok = isOk(report)
  report.elapsedMs = Math.round(performance.now() - started)
  return report
}

/** Checks the given manifest files below modelDir; results in the same order. */
export async function checkManifestFiles(
  modelDir: string,
  files: ManifestFile[],
  level: CheckLevel,
  opts: {threads?: number; signal?: AbortSignal} = {},
): Promise<FileReport[]> {
  const jobs = files.map((f) => ({filePath: resolveInside(modelDir, f.path), expected: expectedFromManifest(f), level}))
  const checks = await checkFiles(jobs, {threads: opts.threads ?? defaultThreads(level), signal: opts.signal})
  return checks.map(toFileReport)
}

export function toFileReport(check: FileCheck): FileReport {
  const r: FileReport = {path: check.path, status: check.status, level: check.level, size: check.expectedSize}
  if (check.foundSize !== undefined) r.foundSize = check.foundSize
  if (check.damaged && check.damaged.length > 0) r.damaged = check.damaged
  if (check.expectedSha256) r.expectedSha256 = check.expectedSha256
  if (check.foundSha256) r.foundSha256 = check.foundSha256
  return r
}

export function countFiles(files: FileReport[], extra: string[]): VerifyCounts {
  const counts: VerifyCounts = {files: files.length, ok: 0, missing: 0, wrongSize: 0, damaged: 0, sha256Mismatch: 0, notAFile: 0, extra: extra.length, repaired: 0}
  const key: Record<FileCheckStatus, keyof VerifyCounts> = {
    'ok': 'ok', 'missing': 'missing', 'wrong-size': 'wrongSize', 'damaged': 'damaged', 'sha256-mismatch': 'sha256Mismatch', 'not-a-file': 'notAFile',
  }
  for (const f of files) {
    counts[key[f.status]]++
    if (f.repaired) counts.repaired++
  }
  return counts
}

export function isOk(report: Pick<VerifyReport, 'files'>): boolean {
  return report.files.every((f) => f.status === 'ok')
}

/** Manifest against the hub's current listing: pure. */
export function diffRemote(manifest: Manifest, listed: HubFile[], where: {endpoint: string; revision: string}): RemoteDiff {
  const hub = new Map(listed.map((f) => [f.path, f]))
  const pinned = new Set(manifest.files.map((f) => f.path))
  const diff: RemoteDiff = {endpoint: where.endpoint, revision: where.revision, changed: [], removed: [], added: []}
  for (const m of manifest.files) {
    const h = hub.get(m.path)
    if (!h) diff.removed.push(m.path)
    else if (h.sha256 !== m.sha256 || h.size !== m.size) {
      diff.changed.push({path: m.path, manifest: {size: m.size, sha256: m.sha256}, hub: {size: h.size, sha256: h.sha256, commit: h.commit}})
    }
  }
  diff.added = listed.filter((f) => !pinned.has(f.path)).map((f) => f.path).sort()
  return diff
}
