import {type MsrError, isMsrError} from '../errors.js'
import type {EventSink} from '../events.js'
import type {Hub} from '../hub/types.js'
import type {Manifest} from '../integrity/manifest.js'
import {type PullOptions, pull} from '../pull/pull.js'
import type {ModelLocation} from '../store/layout.js'
import {type FileReport, type VerifyReport, checkManifestFiles, countFiles, isOk} from './verify.js'

export interface RepairOptions {
  report: VerifyReport
  manifest: Manifest
  location: ModelLocation
  hub: Hub
  emit: EventSink
  signal: AbortSignal
  threads?: number
  /** Passed on to pull (timeouts, retry policy, lock wait, ...). */
  pull?: Partial<Pick<PullOptions, 'concurrency' | 'connections' | 'idleTimeoutMs' | 'policy' | 'lockWaitMs'>>
}

/**
 * `verify --repair`: brings every file the report found wrong back to the manifest's bytes, through
 * pull (so it holds the model lock, resumes, and nothing reaches a final path before its SHA-256
 * matches). Pull gets a manifest narrowed to those files and seeds their journal records from it,
 * so its check at the verify level names the damaged chunks and only those are fetched; a missing
 * file, or damage the chunk sums cannot place, costs a full download of that file. The hub must
 * still list the manifest's versions: otherwise pull refuses (E_MANIFEST_MISMATCH). Afterwards the
 * repaired files are checked again and the report updated in place. A failed repair is recorded in
 * `report.repair.error` and rethrown.
 */
export async function repairModel(opts: RepairOptions): Promise<void> {
  const {report, manifest} = opts
  const broken = report.files.filter((f) => f.status !== 'ok')
  report.repair = {files: broken.length, repaired: 0, downloadedBytes: 0}
  if (broken.length === 0) return
  const paths = new Set(broken.map((f) => f.path))
  const narrowed: Manifest = {...manifest, files: manifest.files.filter((f) => paths.has(f.path))}
  const fetched = new Map<string, number>()
  const emit: EventSink = (event) => {
    if (event.type === 'file-done') fetched.set(event.path, event.downloadedBytes)
    opts.emit(event)
  }
  let failure: unknown
  try {
    const summary = await pull({
      ...opts.pull,
      hub: opts.hub, modelId: manifest.modelId, revision: manifest.revision, location: opts.location,
      manifest: narrowed, repairFromManifest: true, check: report.level,
      emit, signal: opts.signal,
    })
    report.repair.downloadedBytes = summary.downloadedBytes
  } catch (error) {
    failure = error
    const summary = (error as {summary?: {downloadedBytes: number}}).summary
    report.repair.downloadedBytes = summary?.downloadedBytes ?? [...fetched.values()].reduce((a, b) => a + b, 0)
    if (!isMsrError(error) || error.code === 'E_INTERRUPTED' || opts.signal.aborted) throw error
  }

  // Whatever pull managed, the report says what is on disk now.
  const again = await checkManifestFiles(opts.location.modelDir, narrowed.files, report.level, {threads: opts.threads, signal: opts.signal})
  const after = new Map(again.map((f) => [f.path, f]))
  report.files = report.files.map((before): FileReport => {
    const now = after.get(before.path)
    if (!now) return before
    if (now.status !== 'ok') return now
    const was: NonNullable<FileReport['repaired']> = {from: before.status, downloadedBytes: fetched.get(before.path) ?? 0}
    if (before.foundSize !== undefined) was.foundSize = before.foundSize
    if (before.damaged) was.damaged = before.damaged
    return {...now, repaired: was}
  })
  report.counts = countFiles(report.files, report.extra)
  report.repair.repaired = report.counts.repaired
  report.ok = isOk(report)

  if (failure) {
    const e = failure as MsrError
    report.repair.error = {code: e.code, message: e.message}
    throw failure
  }
}
