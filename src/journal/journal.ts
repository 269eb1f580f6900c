import {randomBytes} from 'node:crypto'
import fs from 'node:fs/promises'
import path from 'node:path'

import {Low} from 'lowdb'

import {knobs} from '../config.js'
import {MsrError, isMsrError} from '../errors.js'
import {crashPoint, crashPointArmed} from '../fs/crash-points.js'
import {fromFsError} from '../fs/fs-errors.js'
import {removeStrayTempFiles, writeFileDurable} from '../fs/durable-file.js'
import {repoLabel} from '../store/layout.js'
import {O_NOFOLLOW} from '../store/state-file.js'
import {MAX_JOURNAL_BYTES, SnapshotAdapter, UnreadableJournal, journalFiles, readJournalState, setAside} from './journal-files.js'
import {encodeBatch, logHeader} from './journal-log.js'
import {emptyJournal, type FileRecord, type JournalDoc, type JournalInit} from './schema.js'

export {MAX_JOURNAL_BYTES} from './journal-files.js'

/**
 * Refuses to pull one model into the directory of another: two models share file paths
 * (config.json), so their files and journal records would overwrite each other.
 */
export function assertSameModel(stateDir: string, found: string, wanted: string): void {
  if (found === wanted) return
  throw new MsrError('E_USAGE', `${path.dirname(stateDir)} already holds ${found}, not ${wanted}: refusing to mix two models in one directory.`, {
    hint: `Pull ${wanted} into another directory (--local-dir DIR); the files of ${found} there are left as they are.`,
  })
}

/** Longest wait before batched changes are written. */
const MAX_BATCH_MS = 2000
/**
 * The log is compacted into a new snapshot once it is larger than the snapshot and this. Each
 * checkpoint of a large file logs its whole record (a 4 GiB file: 3,700 chunk sums, 70 KB): at
 * 1 MiB a resume read, parsed and checked 40 such records to use the last (75 ms of its start-up,
 * a third of it in GC); at 256 KiB at most a few, for one compaction (a 70 KB snapshot) every few
 * checkpoints of the download.
 */
const MIN_COMPACT_BYTES = 256 * 1024
/** Above this snapshot size close() leaves the log to the running rule. */
const CLOSE_COMPACT_MAX_BYTES = 8 * 1024 * 1024

export interface JournalOpenResult {
  journal: Journal
  /** Set when an unreadable journal was moved aside and the state must be re-checked from disk. */
  recovered?: {reason: string; movedTo: string}
}

/**
 * One journal per model, guarded by the model lock: a snapshot, held and written whole by lowdb
 * (SnapshotAdapter), and an append-only log between snapshots (journal-log.ts). Callers change
 * records in memory and say which (`set`, `markDirty(record)`, `track` for a record that transfer
 * code changes in place while its file downloads); a write appends those records as one batch and
 * fdatasyncs it. Writes are coalesced: callers either wait for durability (checkpoints) or let a
 * timer batch many small changes into one append. Nothing changed, nothing written: a no-op pull
 * leaves the journal as it was.
 */
export class Journal {
  private chain: Promise<void> = Promise.resolve()
  private queued: Promise<void> | undefined
  private timer: NodeJS.Timeout | undefined
  private lastWriteMs = 0
  /** Paths whose record (or its removal) is not written yet. */
  private readonly dirty = new Set<string>()
  /** Paths whose record is written with every batch until untracked. */
  private readonly tracked = new Set<string>()
  private docDirty = false
  private logHandle: fs.FileHandle | undefined

  private constructor(
    private readonly db: Low<JournalDoc>,
    private readonly adapter: SnapshotAdapter,
    readonly file: string,
    private readonly logFile: string,
    readonly flushIntervalMs: number,
    private snapshotBytes: number,
    private logBytes: number,
    /** False: the next write compacts (no snapshot yet, another snapshot's log, a torn tail). */
    private logAppendable: boolean,
    private readonly beforeWrite?: () => Promise<void>,
  ) {}

  static async open(
    stateDir: string,
    init: JournalInit,
    opts: {
      flushIntervalMs?: number
      /** Runs before every write and stops it by throwing: a pull that lost its lock writes no journal. */
      beforeWrite?: () => Promise<void>
    } = {},
  ): Promise<JournalOpenResult> {
    const files = journalFiles(stateDir)
    await removeStrayTempFiles(files.snapshot)
    await removeStrayTempFiles(files.log)
    const adapter = new SnapshotAdapter(stateDir)
    const db = new Low<JournalDoc>(adapter, emptyJournal(init))
    let recovered: JournalOpenResult['recovered']
    try {
      await db.read()
    } catch (error) {
      if (!(error instanceof UnreadableJournal)) {
        throw new MsrError('E_JOURNAL', `Cannot read the journal ${files.snapshot}: ${(error as Error).message}.`, {cause: error, hint: 'Check the permissions of the state directory.'})
      }
      // Never trust it, never destroy it: keep it for a post-mortem and rebuild state from disk.
      recovered = {reason: error.message, movedTo: await setAside(stateDir)}
    }
    const doc = db.data
    // A model and a dataset may share an id (and a --cache-dir directory): the kind counts too.
    assertSameModel(stateDir, repoLabel(doc), repoLabel(init))
    const {found} = adapter
    const journal = new Journal(db, adapter, files.snapshot, files.log, opts.flushIntervalMs ?? 250, found.snapshotBytes, found.logBytes, found.logAppendable, opts.beforeWrite)
    if (doc.endpoint !== init.endpoint || doc.revision !== init.revision) {
      Object.assign(doc, {endpoint: init.endpoint, revision: init.revision})
      journal.docDirty = true
    }
    return {journal, recovered}
  }

  /** Reads a journal without locking or modifying anything (status, verify). */
  static async peek(stateDir: string): Promise<{doc?: JournalDoc; problem?: string}> {
    try {
      const state = await readJournalState(stateDir)
      return state ? {doc: state.doc} : {}
    } catch (error) {
      return {problem: (error as Error).message}
    }
  }

  /** Throws what a write would throw now from `beforeWrite` (the lock is lost), without writing. */
  async assertWritable(): Promise<void> {
    await this.beforeWrite?.()
  }

  get doc(): JournalDoc {
    return this.db.data
  }

  get(filePath: string): FileRecord | undefined {
    // Own keys only: `constructor` or `toString` must never find Object.prototype's.
    return Object.hasOwn(this.doc.files, filePath) ? this.doc.files[filePath] : undefined
  }

  /** Puts a record in place of the path's; it is written with the next batch. */
  set(record: FileRecord): void {
    this.doc.files[record.path] = record
    this.dirty.add(record.path)
  }

  /** Forgets a path's record; the removal is written with the next batch. */
  remove(filePath: string): void {
    delete this.doc.files[filePath]
    this.dirty.add(filePath)
  }

  /**
   * The record of `filePath` is changed in place by code that then only flushes (checkpoints):
   * every batch writes it until `untrack`, which writes its last state with the next batch.
   */
  track(filePath: string): void {
    this.tracked.add(filePath)
  }

  untrack(filePath: string): void {
    if (!this.tracked.delete(filePath)) return
    this.dirty.add(filePath)
    this.markDirty()
  }

  /**
   * Schedules a write of `record` (and of everything else changed), within flushIntervalMs, or
   * within 20 times the last write's duration when that is longer (at most 2 s): a slow disk gets
   * fewer, larger batches.
   */
  markDirty(record?: FileRecord): void {
    if (record) this.dirty.add(record.path)
    if (this.timer) return
    this.timer = setTimeout(() => {
      this.timer = undefined
      this.flush().catch(() => {
        /* the next flush reports it */
      })
    }, Math.min(MAX_BATCH_MS, Math.max(this.flushIntervalMs, 20 * this.lastWriteMs)))
  }

  /** Resolves once everything changed before the call is durable on disk. */
  flush(): Promise<void> {
    if (this.timer) {
      clearTimeout(this.timer)
      this.timer = undefined
    }
    // A write that has not started yet will serialise the records as they are then: join it.
    if (this.queued) return this.queued
    const write = this.chain.then(() => {
      this.queued = undefined
      return this.writeNow()
    })
    this.queued = write
    this.chain = write.catch(() => {})
    return write
  }

  private async writeNow(): Promise<void> {
    if (this.dirty.size === 0 && this.tracked.size === 0 && !this.docDirty) return
    // Serialised now, as the write starts: callers change records across awaits, and a snapshot
    // taken after the lock check below caught a record half updated (a journal set aside as bad).
    this.doc.updatedAt = new Date().toISOString()
    const lines = [JSON.stringify({doc: {endpoint: this.doc.endpoint, revision: this.doc.revision, updatedAt: this.doc.updatedAt}})]
    for (const p of new Set([...this.dirty, ...this.tracked])) {
      const record = this.get(p)
      lines.push(JSON.stringify(record ? {file: record} : {drop: p}))
    }
    this.dirty.clear()
    this.docDirty = false
    const batch = encodeBatch(lines)
    await this.beforeWrite?.()
    const started = performance.now()
    try {
      if (!this.logAppendable || this.logBytes + batch.length > MAX_JOURNAL_BYTES) await this.compact()
      else await this.append(batch)
      this.lastWriteMs = performance.now() - started
      if (this.logBytes > (knobs.journalCompactBytes ?? Math.max(MIN_COMPACT_BYTES, this.snapshotBytes))) await this.compact()
    } catch (error) {
      // Not written: written with the next batch, or found unclaimed by the next run.
      this.logAppendable = false
      throw this.writeError(error)
    }
  }

  private async append(batch: Buffer): Promise<void> {
    this.logHandle ??= await fs.open(this.logFile, fs.constants.O_WRONLY | fs.constants.O_APPEND | O_NOFOLLOW)
    if (crashPointArmed('mid-journal-append')) {
      // Tests: a kill with half a batch written (a torn tail the next run must ignore).
      const half = Math.floor(batch.length / 2)
      await this.logHandle.write(batch.subarray(0, half))
      crashPoint('mid-journal-append')
      await this.logHandle.write(batch.subarray(half))
    } else {
      await this.logHandle.write(batch)
    }
    crashPoint('after-journal-append')
    await this.logHandle.datasync()
    this.logBytes += batch.length
  }

  /**
   * A new snapshot of everything in memory, under a new log id, then an empty log with that id.
   * Killed in between, the new snapshot stands and ignores the old log (it holds all of it).
   */
  private async compact(): Promise<void> {
    await this.logHandle?.close()
    this.logHandle = undefined
    const logId = randomBytes(8).toString('hex')
    this.doc.logId = logId
    await this.db.write()
    this.snapshotBytes = this.adapter.writtenBytes
    crashPoint('after-journal-snapshot')
    const header = logHeader(logId)
    await writeFileDurable(this.logFile, header)
    this.logBytes = Buffer.byteLength(header)
    this.logAppendable = true
  }

  private writeError(error: unknown): MsrError {
    if (isMsrError(error)) return error
    // A full disk is E_DISK_FULL wherever it strikes first (data or journal): one code, one hint.
    const mapped = fromFsError(error, 'writing the journal', this.file)
    if (isMsrError(mapped)) return mapped
    return new MsrError('E_JOURNAL', `Cannot write the journal ${this.file}: ${(error as Error).message}.`, {
      cause: error,
      hint: 'Check free space and permissions of the model directory, then run again.',
    })
  }

  /**
   * Writes what is left, then, for a journal of a few MB, compacts when the log is larger than half
   * the snapshot: a small model at rest is one snapshot. A large journal keeps its log (compacted by
   * the running rule): rewriting 40 MB at the end of every pull of 100,000 files was its last peak.
   */
  async close(): Promise<void> {
    try {
      await this.flush()
      if (this.logAppendable && this.logBytes > this.snapshotBytes / 2 && this.snapshotBytes > 0 && this.snapshotBytes < CLOSE_COMPACT_MAX_BYTES) {
        const compacting = this.chain.then(async () => {
          await this.beforeWrite?.()
          await this.compact()
        })
        this.chain = compacting.catch(() => {})
        await compacting.catch((error: unknown) => {
          throw this.writeError(error)
        })
      }
    } finally {
      await this.logHandle?.close().catch(() => {})
      this.logHandle = undefined
    }
  }
}
