import fs from 'node:fs/promises'
import path from 'node:path'

import {MsrError, isMsrError} from '../errors.js'
import type {EndpointFailover, EventSink} from '../events.js'
import {formatBytes} from '../format.js'
import {fromFsError} from '../fs/fs-errors.js'
import type {Hub, HubFile, HubListing} from '../hub/types.js'
import type {CheckLevel} from '../integrity/check.js'
import {type Manifest, lazyManifest, writeManifest} from '../integrity/manifest.js'
import {trimMalloc} from '../integrity/native-addon.js'
import {Journal, assertSameModel} from '../journal/journal.js'
import {isSizeOnly, sameVersion} from '../integrity/size-only.js'
import {runPool} from '../pool.js'
import {MANIFEST_FILE, type ModelLocation, modelIdOf, repoLabel} from '../store/layout.js'
import {prepareStateDir} from '../store/state-dir.js'
import {RateLimiter} from '../transfer/rate-limiter.js'
import {DEFAULT_RETRY_POLICY, type RetryPolicy} from '../transfer/retry-policy.js'
import {preconnect} from '../transfer/http-body.js'
import {withRetries} from '../transfer/with-retries.js'
import {type JobContext, newRecord, pullOneFile} from './file-job.js'
import {PullSession} from './pull-session.js'
import {pullWithoutWriting} from './read-only-pull.js'
import {planFile, selectFiles} from './select-files.js'
import {type PullSummary, SummaryTally, emptySummary} from './summary.js'

export type {PlannedFile, PullSummary} from './summary.js'

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

/** A listing of this many files is megabytes of JSON (about 340 bytes a file from ModelScope). */
const TRIM_AFTER_LISTED_FILES = 5000

/** Above this size a file is fetched over several connections unless --connections says otherwise. */
export const SEGMENTED_THRESHOLD_BYTES = 64 * 1024 * 1024
/** Automatic connections: at most this many (the first step of 8, and 2 more where the link pays for them; aria2c -x8 opens 8). */
export const AUTO_CONNECTIONS = 10

/**
 * `ms-resume pull`: list, plan, lock, then bring every file to its final path verified. Files run
 * in parallel; a file that fails does not stop the others; the first error decides the exit code.
 */
export async function pull(opts: PullOptions): Promise<PullSummary> {
  const started = performance.now()
  const {hub, location, signal} = opts
  const policy = opts.policy ?? DEFAULT_RETRY_POLICY
  let retries = 0
  const failovers: EndpointFailover[] = []
  const emit: EventSink = (event) => {
    if (event.type === 'retry') retries++
    if (event.type === 'failover') failovers.push({from: event.from, to: event.to, code: event.code, reason: event.reason, path: event.path})
    opts.emit(event)
  }
  const revision = opts.manifest && opts.revision === 'master' ? opts.manifest.revision : opts.revision
  emit({type: 'listing', modelId: opts.modelId, revision, endpoint: hub.endpoint})
  // The first file request's TCP and TLS handshakes, paid while the hub lists the files.
  if (!opts.dryRun) preconnect(hub.endpoint)
  const listing = await withRetries(() => hub.listFiles(opts.modelId, revision, signal, emit), policy, signal, emit)
  // A listing this long came as hundreds of socket reads, freed by now but held by malloc.
  if (listing.files.length >= TRIM_AFTER_LISTED_FILES) trimMalloc()
  const files = selectFiles(listing, {...opts, modelDir: location.modelDir})
  const totalBytes = files.reduce((n, f) => n + f.size, 0)
  const summary = emptySummary({
    modelId: opts.modelId, repoKind: hub.repoKind, revision, modelDir: location.modelDir, files: files.length, sizeOnlyFiles: files.filter(isSizeOnly).length,
    totalBytes, dryRun: Boolean(opts.dryRun), endpoint: hub.endpoint, failovers,
  })

  if (opts.dryRun) {
    // Read-only: the journal is peeked at, nothing is created, locked or written.
    const {doc} = await Journal.peek(location.stateDir)
    if (doc) assertSameModel(location.stateDir, repoLabel(doc), repoLabel({modelId: opts.modelId, repoKind: hub.repoKind}))
    return {...summary, plan: files.map((f) => planFile(f, doc?.files[f.path])), elapsedMs: Math.round(performance.now() - started)}
  }

  try {
    await prepareDirectories(location)
  } catch (error) {
    // Cannot write here (read-only mount, someone else's cache): fine if nothing needs writing.
    if (isMsrError(error) && error.code === 'E_PERMISSION') return pullWithoutWriting(files, opts, error, summary, started)
    throw error
  }
  await using session = await PullSession.open(location, {hub: hub.name, endpoint: hub.endpoint, modelId: opts.modelId, repoKind: hub.repoKind, revision}, {
    signal, lockWaitMs: opts.lockWaitMs ?? Number.POSITIVE_INFINITY, emit,
  })
  const {journal} = session
  try {
    if (session.recovered) emit({type: 'recovered-journal', ...session.recovered})
    if (opts.repairFromManifest && opts.manifest) seedFromManifest(journal, opts.manifest, files)
    const toDownloadBytes = files.reduce((n, f) => n + planFile(f, journal.get(f.path)).remainingBytes, 0)
    await checkFreeSpace(location, toDownloadBytes)
    emit({type: 'start', modelId: opts.modelId, revision, endpoint: hub.endpoint, modelDir: location.modelDir, files: files.length, totalBytes, toDownloadBytes})

    const ctx = jobContext(opts, {revision, journal, emit, policy, signal: session.signal, adoptUnknownPartials: Boolean(session.recovered)})
    const tally = new SummaryTally(summary)
    await runPool(files, opts.concurrency ?? 4, session.signal, async (file, _lane, at) => {
      try {
        tally.add(await pullOneFile(file, ctx), at)
      } catch (error) {
        if (session.signal.aborted) throw error
        const e = isMsrError(error) ? error : new MsrError('E_LOCAL', (error as Error).message, {cause: error, path: file.path})
        const record = journal.get(file.path)
        if (record) record.lastError = {code: e.code, message: e.message, at: new Date().toISOString()}
        journal.markDirty(record)
        emit({type: 'file-error', path: file.path, code: e.code, message: e.message})
        // Auth, a lost lock and a full disk fail every other file the same way: stop now.
        if (e.code === 'E_AUTH' || e.code === 'E_LOCKED' || e.code === 'E_DISK_FULL') session.abort(e)
        tally.add(e, at)
      }
    })
    if (session.signal.aborted) throw session.signal.reason
    await journal.flush()
    const firstError = tally.firstError()
    if (!firstError) await finishModel(opts, location, listing, files, journal, revision)
    const result = {...tally.result(retries, performance.now() - started), endpoint: hub.endpoint}
    if (firstError) throw Object.assign(firstError, {summary: result})
    return result
  } catch (error) {
    throw session.explain(error)
  }
}

/** What every file job of this pull shares. */
function jobContext(opts: PullOptions, o: Pick<JobContext, 'revision' | 'journal' | 'emit' | 'policy' | 'signal' | 'adoptUnknownPartials'>): JobContext {
  const {hub, location} = opts
  return {
    ...o,
    hub, modelId: opts.modelId,
    limiter: opts.maxBytesPerSec ? new RateLimiter(opts.maxBytesPerSec) : undefined,
    idleTimeoutMs: opts.idleTimeoutMs ?? 30_000,
    minBytesPerSec: opts.minBytesPerSec ?? 1024,
    checkpointIntervalMs: 1000,
    checkpointBytes: 8 * 1024 * 1024,
    modelDir: location.modelDir,
    stateDir: location.stateDir,
    check: opts.check ?? 'size',
    connectionsFor: (size) => {
      if (opts.connections && opts.connections > 0) return {connections: opts.connections, adaptive: false}
      // Automatic: one connection; the first step (8) while it is slow; up to AUTO_CONNECTIONS when the link pays for them.
      return size >= SEGMENTED_THRESHOLD_BYTES ? {connections: AUTO_CONNECTIONS, adaptive: true} : {connections: 1, adaptive: false}
    },
    relist: async (filePath) => {
      const fresh = await withRetries(() => hub.listFiles(opts.modelId, o.revision, o.signal, o.emit), o.policy, o.signal, o.emit)
      return fresh.files.find((f) => f.path === filePath)
    },
  }
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
  // What was verified: a file that changed on the way (or that the endpoint failed over to lists
  // in another version) is recorded as downloaded, not as first listed.
  // (A copy only for such a file: 100,000 copies were the last peak of a large pull's memory.)
  const verified = files.map((f) => {
    const r = journal.get(f.path)
    return r && (r.size !== f.size || r.sha256 !== f.sha256 || r.commit !== f.commit) ? {...f, size: r.size, sha256: r.sha256, commit: r.commit} : f
  })
  // A filtered pull (--include/--exclude) describes the whole local copy, not only this run's
  // share: files an earlier pull completed at the version listed now stay in the manifest (and in
  // the official index), so `verify` keeps checking them and the Python client keeps finding them.
  if (files.length < listing.files.length) {
    const selected = new Set(files.map((f) => f.path))
    for (const f of listing.files) {
      if (selected.has(f.path)) continue
      const r = journal.get(f.path)
      if (r?.status === 'complete' && sameVersion(r, f)) verified.push({...f, size: r.size, sha256: r.sha256, commit: r.commit})
    }
  }
  // The manifest (state dir) and the hub's own index (the model directory) are separate files:
  // written, or found already right, side by side (a no-op pull waits for one, not two). Both are
  // settled before the lock is released. A large model's are written one after the other: the peak
  // memory of a pull of 100,000 files in the cache layout is at its end, and both at once raised it
  // from 147.3-147.5 to 148.6-149.5 MiB.
  const manifestStep = () => (opts.repairFromManifest ? undefined : writeModelManifest(opts, location, verified, journal, revision, listing))
  const indexStep = () => opts.hub.afterComplete?.({modelDir: location.modelDir, cacheRoot: location.cacheRoot, layout: location.layout, modelId: opts.modelId, listing: {...listing, files: verified}, emit: opts.emit})
  const done = verified.length > SIDE_BY_SIDE_MAX_FILES
    ? [...(await Promise.allSettled([manifestStep()])), ...(await Promise.allSettled([indexStep()]))]
    : await Promise.allSettled([manifestStep(), indexStep()])
  // Both were tried either way; the first failure is the pull's.
  for (const step of done) if (step.status === 'rejected') throw step.reason
}

/** Above this many files the manifest and the index are written one after the other (finishModel). */
const SIDE_BY_SIDE_MAX_FILES = 5000

async function writeModelManifest(opts: PullOptions, location: ModelLocation, files: HubFile[], journal: Journal, revision: string, listing: HubListing): Promise<void> {
  // From the listing: a pinned pull holds a size-only file to the pin's hash, but the hub still gave none.
  const listedSizeOnly = new Set(listing.files.filter(isSizeOnly).map((f) => f.path))
  const manifest = lazyManifest({
    hub: opts.hub.name,
    endpoint: opts.hub.endpoint,
    modelId: modelIdOf(location),
    repoKind: opts.hub.repoKind,
    revision,
    files,
    entry: (f) => {
      const r = journal.get(f.path)!
      const sha256 = r.sha256 || r.observedSha256 || f.sha256
      // A complete file's sums are all there: its journal's list is the manifest's, not a copy.
      const xxh64 = r.chunks.includes(null) ? r.chunks.map((c) => c ?? '') : r.chunks as string[]
      return listedSizeOnly.has(f.path)
        ? {path: f.path, size: f.size, sha256, sizeOnly: true as const, commit: f.commit, chunkSizeBytes: r.chunkSizeBytes, xxh64}
        : {path: f.path, size: f.size, sha256, commit: f.commit, chunkSizeBytes: r.chunkSizeBytes, xxh64}
    },
  })
  await writeManifest(path.join(location.stateDir, MANIFEST_FILE), manifest)
}
