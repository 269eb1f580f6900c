import {setMaxListeners} from 'node:events'
import fs from 'node:fs/promises'
import path from 'node:path'

import {MsrError, isMsrError} from '../errors.js'
import {fromFsError} from '../fs/fs-errors.js'
import type {EventSink} from '../events.js'
import type {Hub, HubFile, HubListing} from '../hub/types.js'
import type {CheckLevel} from '../integrity/check.js'
import {type Manifest, buildManifest, writeManifest} from '../integrity/manifest.js'
import {Journal, assertSameModel} from '../journal/journal.js'
import {removeStrayTempFiles} from '../fs/durable-file.js'
import {acquireModelLock} from '../journal/lock.js'
import {type FileRecord, durableBytes} from '../journal/schema.js'
import {MANIFEST_FILE, type ModelLocation, modelIdOf} from '../store/layout.js'
import {assertNoCollisions, assertSafeRepoPath, resolveInside} from '../store/safe-path.js'
import {prepareStateDir} from '../store/state-dir.js'
import {RateLimiter, sleep} from '../transfer/rate-limiter.js'
import {DEFAULT_RETRY_POLICY, type RetryPolicy, nextDelayMs} from '../transfer/retry-policy.js'
import {type FileOutcome, type JobContext, newRecord, pullOneFile} from './file-job.js'
import {makePathFilter} from './filter.js'
import {pullWithoutWriting} from './read-only-pull.js'
import {formatBytes} from '../format.js'

export interface PullOptions {
  hub: Hub
  modelId: string
  revision: string
  location: ModelLocation
  include?: string[]
  exclude?: string[]
  /** Pull exactly what a pinned manifest says; refuse when the hub disagrees unless allowed. */
  manifest?: Manifest
  allowManifestMismatch?: boolean
  /**
   * Repair mode (`verify --repair`): `manifest` is the truth and may list only the files to repair.
   * A file whose journal has no record of the manifest's content gets one seeded from the manifest
   * (complete, with its chunk sums), so the `check` below localises the damage and only damaged
   * chunks are fetched; without it a damaged file would be downloaded whole. The model's own
   * manifest is left as it is (a repair of some files must not shrink it to those files).
   */
  repairFromManifest?: boolean
  check?: CheckLevel
  /** Files in parallel. */
  concurrency?: number
  /** Connections per file; 0 = automatic by size. */
  connections?: number
  maxBytesPerSec?: number
  idleTimeoutMs?: number
  minBytesPerSec?: number
  policy?: RetryPolicy
  /** How long to wait for another pull of the same model; Infinity = as long as it takes. */
  lockWaitMs?: number
  dryRun?: boolean
  emit: EventSink
  signal: AbortSignal
}

export interface PlannedFile {
  path: string
  size: number
  /** Bytes still to fetch (0 when complete). */
  remainingBytes: number
  state: 'complete' | 'partial' | 'new'
}

export interface PullSummary {
  modelId: string
  revision: string
  modelDir: string
  files: number
  downloadedFiles: number
  reusedFiles: number
  repairedFiles: number
  failedFiles: number
  totalBytes: number
  /** Bytes received over the network. */
  downloadedBytes: number
  reusedBytes: number
  retries: number
  elapsedMs: number
  dryRun: boolean
  plan?: PlannedFile[]
  errors: Array<{path: string; code: string; message: string}>
}

/** Above this size a file is fetched over several connections unless --connections says otherwise. */
export const SEGMENTED_THRESHOLD_BYTES = 64 * 1024 * 1024
export const AUTO_CONNECTIONS = 8

/**
 * `ms-resume pull`: list, plan, lock, then bring every file to its final path verified. Files run
 * in parallel; a file that fails does not stop the others; the first error decides the exit code.
 */
export async function pull(opts: PullOptions): Promise<PullSummary> {
  const started = performance.now()
  const {hub, location, signal} = opts
  const policy = opts.policy ?? DEFAULT_RETRY_POLICY
  let retries = 0
  const emit: EventSink = (event) => {
    if (event.type === 'retry') retries++
    opts.emit(event)
  }
  const revision = opts.manifest && opts.revision === 'master' ? opts.manifest.revision : opts.revision
  emit({type: 'listing', modelId: opts.modelId, revision, endpoint: hub.endpoint})
  const listing = await withRetries(() => hub.listFiles(opts.modelId, revision, signal), policy, signal, emit)
  const files = selectFiles(listing, opts)
  const totalBytes = files.reduce((n, f) => n + f.size, 0)

  const summary: PullSummary = {
    modelId: opts.modelId, revision, modelDir: location.modelDir, files: files.length,
    downloadedFiles: 0, reusedFiles: 0, repairedFiles: 0, failedFiles: 0,
    totalBytes, downloadedBytes: 0, reusedBytes: 0, retries: 0, elapsedMs: 0, dryRun: Boolean(opts.dryRun), errors: [],
  }

  if (opts.dryRun) {
    // Read-only: the journal is peeked at, nothing is created, locked or written.
    const {doc} = await Journal.peek(location.stateDir)
    if (doc) assertSameModel(location.stateDir, doc.modelId, opts.modelId)
    summary.plan = files.map((f) => planFile(f, doc?.files[f.path]))
    summary.elapsedMs = Math.round(performance.now() - started)
    return summary
  }

  try {
    await prepareDirectories(location)
  } catch (error) {
    // Cannot write here (read-only mount, someone else's cache): fine if nothing needs writing.
    if (isMsrError(error) && error.code === 'E_PERMISSION') return pullWithoutWriting(files, opts, error, summary, started)
    throw error
  }
  const lock = await acquireModelLock(location.stateDir, {
    waitMs: opts.lockWaitMs ?? Number.POSITIVE_INFINITY,
    signal,
    onWait: (holder) => emit({type: 'waiting-lock', holder}),
  })
  const run = new AbortController()
  // Every file in flight and every connection listens to it: more than Node's default of 10 is normal.
  setMaxListeners(0, run.signal)
  const onAbort = () => run.abort(signal.reason)
  signal.addEventListener('abort', onAbort, {once: true})
  lock.lost.addEventListener('abort', () => run.abort(new MsrError('E_LOCKED', 'Lost the model lock to another process.', {hint: 'Make sure only one ms-resume pulls this model into this place, then run again.'})), {once: true})
  if (signal.aborted) onAbort()
  let journal: Journal | undefined
  try {
    const opened = await Journal.open(location.stateDir, {hub: hub.name, endpoint: hub.endpoint, modelId: opts.modelId, revision}, {beforeWrite: () => lock.assertHeld()})
    journal = opened.journal
    // A pull killed inside the manifest write leaves `.manifest-v1.json.<pid>.<rand>.tmp` behind,
    // and Journal.open sweeps only its own temp files (a live writer's temp is left alone).
    await removeStrayTempFiles(path.join(location.stateDir, MANIFEST_FILE))
    if (opened.recovered) emit({type: 'recovered-journal', ...opened.recovered})
    if (opts.repairFromManifest && opts.manifest) seedFromManifest(journal, opts.manifest, files)
    const toDownloadBytes = files.reduce((n, f) => n + planFile(f, journal!.get(f.path)).remainingBytes, 0)
    await checkFreeSpace(location, toDownloadBytes)
    emit({type: 'start', modelId: opts.modelId, revision, endpoint: hub.endpoint, modelDir: location.modelDir, files: files.length, totalBytes, toDownloadBytes})

    const limiter = opts.maxBytesPerSec ? new RateLimiter(opts.maxBytesPerSec) : undefined
    const ctx: JobContext = {
      hub, modelId: opts.modelId, revision, journal, emit, signal: run.signal, policy, limiter,
      idleTimeoutMs: opts.idleTimeoutMs ?? 30_000,
      minBytesPerSec: opts.minBytesPerSec ?? 1024,
      checkpointIntervalMs: 1000,
      checkpointBytes: 8 * 1024 * 1024,
      modelDir: location.modelDir,
      stateDir: location.stateDir,
      check: opts.check ?? 'size',
      adoptUnknownPartials: Boolean(opened.recovered),
      connectionsFor: (size) => {
        if (opts.connections && opts.connections > 0) return {connections: opts.connections, adaptive: false}
        // Automatic: one connection, more (up to AUTO_CONNECTIONS) only while each one is slow.
        return size >= SEGMENTED_THRESHOLD_BYTES ? {connections: AUTO_CONNECTIONS, adaptive: true} : {connections: 1, adaptive: false}
      },
      relist: async (filePath) => {
        const fresh = await withRetries(() => hub.listFiles(opts.modelId, revision, run.signal), policy, run.signal, emit)
        return fresh.files.find((f) => f.path === filePath)
      },
    }

    const outcomes = await runPool(files, opts.concurrency ?? 4, run.signal, async (file) => {
      try {
        return await pullOneFile(file, ctx)
      } catch (error) {
        if (run.signal.aborted) throw error
        const e = isMsrError(error) ? error : new MsrError('E_LOCAL', (error as Error).message, {cause: error, path: file.path})
        const record = journal!.get(file.path)
        if (record) record.lastError = {code: e.code, message: e.message, at: new Date().toISOString()}
        journal!.markDirty(record)
        emit({type: 'file-error', path: file.path, code: e.code, message: e.message})
        // Auth and not-found mean every other file fails the same way: stop now.
        if (e.code === 'E_AUTH' || e.code === 'E_LOCKED' || e.code === 'E_DISK_FULL') run.abort(e)
        return e
      }
    })
    if (run.signal.aborted) throw run.signal.reason
    for (const outcome of outcomes) {
      if (outcome instanceof MsrError) {
        summary.failedFiles++
        summary.errors.push({path: outcome.path ?? '', code: outcome.code, message: outcome.message})
        continue
      }
      const o = outcome as FileOutcome
      summary.downloadedBytes += o.downloadedBytes
      if (o.reused) {
        summary.reusedFiles++
        summary.reusedBytes += o.size
      } else {
        summary.downloadedFiles++
        summary.reusedBytes += Math.max(0, o.size - o.downloadedBytes)
      }
      if (o.repaired) summary.repairedFiles++
    }
    await journal.flush()
    if (summary.failedFiles === 0) {
      await finishModel(opts, location, listing, files, journal, revision)
    }
    summary.retries = retries
    summary.elapsedMs = Math.round(performance.now() - started)
    const firstError = outcomes.find((o) => o instanceof MsrError) as MsrError | undefined
    if (firstError) throw Object.assign(firstError, {summary})
    return summary
  } catch (error) {
    // Whatever failed after the lock was lost (a partial the new holder moved, ...) failed because of it.
    throw lock.lost.aborted ? lock.lost.reason : error
  } finally {
    signal.removeEventListener('abort', onAbort)
    await journal?.close().catch(() => {})
    await lock.release()
  }
}

/** Filters, checks names, and applies a pinned manifest. Throws before anything is written. */
function selectFiles(listing: HubListing, opts: PullOptions): HubFile[] {
  const keep = makePathFilter(opts.include ?? [], opts.exclude ?? [])
  let files = listing.files.filter((f) => keep(f.path))
  if (opts.manifest) {
    const byPath = new Map(listing.files.map((f) => [f.path, f]))
    const problems: string[] = []
    const pinned: HubFile[] = []
    for (const m of opts.manifest.files) {
      const f = byPath.get(m.path)
      if (!f) problems.push(`${m.path}: gone from the hub`)
      else if (f.sha256 !== m.sha256 || f.size !== m.size) problems.push(`${m.path}: sha256 ${m.sha256.slice(0, 12)}… size ${m.size} pinned, hub has sha256 ${f.sha256.slice(0, 12)}… size ${f.size}`)
      if (f) pinned.push(f)
    }
    if (problems.length > 0 && !opts.allowManifestMismatch) {
      throw new MsrError('E_MANIFEST_MISMATCH', `The hub no longer matches the pinned manifest (${problems.length} file${problems.length === 1 ? '' : 's'}): ${problems.slice(0, 3).join('; ')}${problems.length > 3 ? '; …' : ''}.`, {
        hint: 'Update the manifest deliberately (ms-resume manifest), or pass --allow-manifest-mismatch to take the hub\'s current files.',
      })
    }
    files = pinned.filter((f) => keep(f.path))
  }
  for (const f of files) {
    assertSafeRepoPath(f.path)
    resolveInside(opts.location.modelDir, f.path)
  }
  assertNoCollisions(files.map((f) => f.path))
  return files
}

async function prepareDirectories(location: ModelLocation): Promise<void> {
  try {
    await fs.mkdir(location.modelDir, {recursive: true})
    await prepareStateDir(location.stateDir)
    await fs.access(location.modelDir, fs.constants.W_OK)
  } catch (error) {
    // mkdir -p on a read-only filesystem says ENOENT, not EROFS: ask the nearest existing ancestor
    // for the real reason, so a read-only target reads as E_PERMISSION, not as a missing directory.
    if ((error as NodeJS.ErrnoException).code === 'ENOENT') error = (await writeProblemOfAncestor(location.modelDir)) ?? error
    const mapped = fromFsError(error, 'preparing the target directory', location.modelDir)
    if (isMsrError(mapped)) throw mapped
    throw new MsrError('E_LOCAL', `Cannot prepare ${location.modelDir}: ${(error as Error).message}.`, {cause: error, hint: 'Choose another place with --local-dir or --cache-dir.'})
  }
}

async function writeProblemOfAncestor(dir: string): Promise<unknown> {
  for (let d = dir; ; d = path.dirname(d)) {
    try {
      await fs.access(d, fs.constants.W_OK)
      return undefined
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code !== 'ENOENT') return error
    }
    if (path.dirname(d) === d) return undefined
  }
}

/** What a file still needs, from its journal record (a record of another version counts as none). */
export function planFile(f: HubFile, r: FileRecord | undefined): PlannedFile {
  const same = r !== undefined && r.sha256 === f.sha256 && r.size === f.size
  if (same && r.status === 'complete') return {path: f.path, size: f.size, remainingBytes: 0, state: 'complete'}
  if (same && r.status !== 'pending') return {path: f.path, size: f.size, remainingBytes: f.size - durableBytes(r), state: 'partial'}
  return {path: f.path, size: f.size, remainingBytes: f.size, state: 'new'}
}

/** Refuses to start a pull that cannot fit, instead of dying at 97%. */
async function checkFreeSpace(location: ModelLocation, needed: number): Promise<void> {
  if (needed === 0) return
  const stats = await fs.statfs(location.stateDir)
  const free = Number(stats.bavail) * Number(stats.bsize)
  if (free < needed) {
    throw new MsrError('E_DISK_FULL', `Not enough free space in ${location.modelDir}: ${formatBytes(needed)} needed, ${formatBytes(free)} free.`, {
      expected: needed, found: free, hint: 'Free some space (or pick another place with --local-dir), then run again; nothing was downloaded.',
    })
  }
}

/**
 * Records, for files the journal knows nothing about (or knows another version of), that the
 * manifest's version is complete at its final path: pullOneFile then checks it and repairs only
 * what its chunk sums say is damaged (or downloads it when it is missing).
 */
function seedFromManifest(journal: Journal, manifest: Manifest, files: HubFile[]): void {
  const pinned = new Map(manifest.files.map((m) => [m.path, m]))
  for (const f of files) {
    const m = pinned.get(f.path)
    if (!m || m.sha256 !== f.sha256 || m.size !== f.size) continue
    const r = journal.get(f.path)
    if (r && r.sha256 === m.sha256 && r.size === m.size) continue
    journal.set({...newRecord(f), status: 'complete', chunkSizeBytes: m.chunkSizeBytes, chunks: [...m.xxh64]})
  }
  journal.markDirty()
}

async function finishModel(opts: PullOptions, location: ModelLocation, listing: HubListing, files: HubFile[], journal: Journal, revision: string): Promise<void> {
  if (!opts.repairFromManifest) await writeModelManifest(opts, location, files, journal, revision)
  await opts.hub.afterComplete?.({modelDir: location.modelDir, cacheRoot: location.cacheRoot, layout: location.layout, modelId: opts.modelId, listing: {...listing, files}, emit: opts.emit})
}

async function writeModelManifest(opts: PullOptions, location: ModelLocation, files: HubFile[], journal: Journal, revision: string): Promise<void> {
  const manifest = buildManifest({
    hub: opts.hub.name,
    endpoint: opts.hub.endpoint,
    modelId: modelIdOf(location),
    revision,
    files: files.map((f) => {
      const r = journal.get(f.path)!
      return {path: f.path, size: f.size, sha256: f.sha256, commit: f.commit, chunkSizeBytes: r.chunkSizeBytes, xxh64: r.chunks.map((c) => c ?? '')}
    }),
  })
  await writeManifest(path.join(location.stateDir, MANIFEST_FILE), manifest)
}

/** Retries an idempotent call (listing) on retryable errors with the shared backoff policy. */
export async function withRetries<T>(fn: () => Promise<T>, policy: RetryPolicy, signal: AbortSignal, emit?: EventSink): Promise<T> {
  for (let attempt = 1; ; attempt++) {
    try {
      return await fn()
    } catch (error) {
      if (signal.aborted || !isMsrError(error) || !error.retryable || attempt > policy.maxRetries) throw error
      const delayMs = nextDelayMs(attempt, policy, error.retryAfterMs)
      emit?.({type: 'retry', path: '', attempt, maxRetries: policy.maxRetries, delayMs, reason: error.message, code: error.code})
      await sleep(delayMs, signal)
    }
  }
}

/** Runs `fn` over items with at most `limit` in flight; results in input order. */
export async function runPool<T, R>(items: T[], limit: number, signal: AbortSignal, fn: (item: T) => Promise<R>): Promise<R[]> {
  const results: R[] = new Array(items.length)
  let next = 0
  const worker = async () => {
    while (next < items.length && !signal.aborted) {
      const i = next++
      results[i] = await fn(items[i])
    }
  }
  const settled = await Promise.allSettled(Array.from({length: Math.max(1, Math.min(limit, items.length))}, worker))
  const failed = settled.find((s) => s.status === 'rejected') as PromiseRejectedResult | undefined
  if (failed) throw failed.reason
  return results
}
