import fs from 'node:fs/promises'
import path from 'node:path'

import {Low} from 'lowdb'
import type {Adapter} from 'lowdb'

import {MsrError, isMsrError} from '../errors.js'
import {fromFsError} from '../fs/fs-errors.js'
import {JOURNAL_FILE, repoLabel} from '../store/layout.js'
import {RefusedStateFile, readStateFile} from '../store/state-file.js'
import {removeStrayTempFiles, writeFileDurable} from '../fs/durable-file.js'
import {emptyJournal, type FileRecord, type JournalDoc, type JournalInit} from './schema.js'
import {validateJournal} from './validate.js'

class UnreadableJournal extends Error {}

/** 10,000 files with full chunk tables take a few MB; a journal far larger is not one of ours. */
export const MAX_JOURNAL_BYTES = 256 * 1024 * 1024

/** lowdb's own JSONFile adapter never fsyncs (power loss) and shares one temp name between processes. */
class DurableJsonAdapter implements Adapter<JournalDoc> {
  constructor(readonly file: string) {}

  async read(): Promise<JournalDoc | null> {
    let bytes: Buffer | undefined
    try {
      bytes = await readStateFile(this.file, MAX_JOURNAL_BYTES)
    } catch (error) {
      if (error instanceof RefusedStateFile) throw new UnreadableJournal(error.message)
      throw error
    }
    if (!bytes) return null
    let doc: unknown
    try {
      doc = JSON.parse(bytes.toString('utf8'))
    } catch {
      throw new UnreadableJournal(bytes.length === 0 ? 'empty file' : 'invalid JSON')
    }
    const valid = validateJournal(doc)
    if (valid.problem !== undefined) throw new UnreadableJournal(valid.problem)
    return valid.doc
  }

  async write(doc: JournalDoc): Promise<void> {
    await writeFileDurable(this.file, JSON.stringify(doc))
  }
}

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

export interface JournalOpenResult {
  journal: Journal
  /** Set when an unreadable journal was moved aside and the state must be re-checked from disk. */
  recovered?: {reason: string; movedTo: string}
}

/**
 * One journal per model, guarded by the model lock. Writes are coalesced: callers mark the
 * document dirty and either wait for durability (checkpoints) or let a timer batch many small
 * changes into one rewrite (thousands of small files must not mean thousands of rewrites).
 */
export class Journal {
  private chain: Promise<void> = Promise.resolve()
  private queued: Promise<void> | undefined
  private timer: NodeJS.Timeout | undefined
  private lastWriteMs = 0

  private constructor(
    private readonly db: Low<JournalDoc>,
    readonly file: string,
    readonly flushIntervalMs: number,
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
    const file = path.join(stateDir, JOURNAL_FILE)
    await removeStrayTempFiles(file)
    const adapter = new DurableJsonAdapter(file)
    const db = new Low<JournalDoc>(adapter, emptyJournal(init))
    let recovered: JournalOpenResult['recovered']
    try {
      await db.read()
    } catch (error) {
      if (!(error instanceof UnreadableJournal)) {
        throw new MsrError('E_JOURNAL', `Cannot read the journal ${file}: ${(error as Error).message}.`, {cause: error, hint: 'Check the permissions of the state directory.'})
      }
      // Never trust it, never destroy it: keep it for a post-mortem and rebuild state from disk.
      const movedTo = `${file}.unreadable-${Date.now()}`
      await fs.rename(file, movedTo)
      db.data = emptyJournal(init)
      recovered = {reason: error.message, movedTo}
    }
    // A model and a dataset may share an id (and a --cache-dir directory): the kind counts too.
    assertSameModel(stateDir, repoLabel(db.data), repoLabel(init))
    const journal = new Journal(db, file, opts.flushIntervalMs ?? 250, opts.beforeWrite)
    Object.assign(journal.doc, {endpoint: init.endpoint, revision: init.revision})
    return {journal, recovered}
  }

  /** Reads a journal without locking or modifying anything (status, verify). */
  static async peek(stateDir: string): Promise<{doc?: JournalDoc; problem?: string}> {
    try {
      const doc = await new DurableJsonAdapter(path.join(stateDir, JOURNAL_FILE)).read()
      return doc ? {doc} : {}
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
    return Object.hasOwn(this.db.data.files, filePath) ? this.db.data.files[filePath] : undefined
  }

  set(record: FileRecord): void {
    this.db.data.files[record.path] = record
  }

  /**
   * Batches: the change is written within flushIntervalMs, or within 20 times the last write's
   * duration when that is longer (at most 2 s): rewriting a 1.3 MB journal for 3,000 files every
   * 250 ms took a tenth of the run's main thread and filled the heap with megabyte strings.
   */
  markDirty(): void {
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
    // A write that has not started yet will serialise the document as it is then: join it.
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
    this.db.data.updatedAt = new Date().toISOString()
    // Serialised now, as the write starts: callers change records across awaits, and a snapshot
    // taken after the lock check below caught a record half updated (a journal set aside as bad).
    const text = JSON.stringify(this.db.data)
    await this.beforeWrite?.()
    const started = performance.now()
    try {
      await writeFileDurable(this.file, text)
      this.lastWriteMs = performance.now() - started
    } catch (error) {
      // A full disk is E_DISK_FULL wherever it strikes first (data or journal): one code, one hint.
      const mapped = fromFsError(error, 'writing the journal', this.file)
      if (isMsrError(mapped)) throw mapped
      throw new MsrError('E_JOURNAL', `Cannot write the journal ${this.file}: ${(error as Error).message}.`, {
        cause: error,
        hint: 'Check free space and permissions of the model directory, then run again.',
      })
    }
  }

  async close(): Promise<void> {
    await this.flush()
  }
}
