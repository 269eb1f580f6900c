import fs from 'node:fs/promises'
import path from 'node:path'

import type {Adapter} from 'lowdb'

import {writeFileDurable} from '../fs/durable-file.js'
import {JOURNAL_FILE} from '../store/layout.js'
import {RefusedStateFile, readStateFile} from '../store/state-file.js'
import {parseLog} from './journal-log.js'
import type {JournalDoc} from './schema.js'
import {applyLog, validateJournal} from './validate.js'

/** The log next to the snapshot (journal-log.ts). */
export const JOURNAL_LOG_FILE = JOURNAL_FILE.replace(/\.json$/, '.log')

/** 10,000 files with full chunk tables take a few MB; a journal far larger is not one of ours. */
export const MAX_JOURNAL_BYTES = 256 * 1024 * 1024

/** Records serialised per piece of a snapshot write (pieces of about 200 KB). */
const RECORDS_PER_PIECE = 500

export function journalFiles(stateDir: string): {snapshot: string; log: string} {
  return {snapshot: path.join(stateDir, JOURNAL_FILE), log: path.join(stateDir, JOURNAL_LOG_FILE)}
}

export interface JournalState {
  doc: JournalDoc
  snapshotBytes: number
  /** Bytes of the log that belong to the snapshot (header and committed batches). */
  logBytes: number
  /** Appending may continue: the log is the snapshot's and has no torn tail. */
  logAppendable: boolean
}

/** Why the journal on disk is not to be trusted; the caller sets it aside. */
export class UnreadableJournal extends Error {}

async function readBounded(file: string): Promise<Buffer | undefined> {
  try {
    return await readStateFile(file, MAX_JOURNAL_BYTES)
  } catch (error) {
    if (error instanceof RefusedStateFile) throw new UnreadableJournal(`${path.basename(file)}: ${error.message}`)
    throw error
  }
}

/**
 * The journal as it stands on disk: the snapshot, validated, with the committed batches of its log
 * applied. Undefined when there is no snapshot (a log without one belongs to nothing). Throws
 * UnreadableJournal when either cannot be trusted; other errors (permissions, I/O) propagate.
 */
export async function readJournalState(stateDir: string): Promise<JournalState | undefined> {
  const files = journalFiles(stateDir)
  const bytes = await readBounded(files.snapshot)
  if (!bytes) return undefined
  let parsed: unknown
  try {
    parsed = JSON.parse(bytes.toString('utf8'))
  } catch {
    throw new UnreadableJournal(bytes.length === 0 ? 'empty file' : 'invalid JSON')
  }
  const valid = validateJournal(parsed)
  if (valid.problem !== undefined) throw new UnreadableJournal(valid.problem)
  const doc = valid.doc
  const state: JournalState = {doc, snapshotBytes: bytes.length, logBytes: 0, logAppendable: false}
  const logBytes = doc.logId ? await readBounded(files.log) : undefined
  if (!logBytes) return state
  const log = parseLog(logBytes)
  if (log.problem) throw new UnreadableJournal(log.problem)
  // Another snapshot's log: a compaction was killed before it replaced the log, or an older
  // ms-resume rewrote the snapshot. The snapshot holds everything; the log is not appended to.
  if (log.logId !== doc.logId) return state
  const applied = applyLog(doc, log.entries)
  if (applied.problem !== undefined) throw new UnreadableJournal(applied.problem)
  return {doc: applied.doc, snapshotBytes: bytes.length, logBytes: log.validBytes, logAppendable: log.tornBytes === 0}
}

/** Moves an untrusted journal (snapshot and log) aside for a post-mortem; returns where the snapshot went. */
export async function setAside(stateDir: string): Promise<string> {
  const files = journalFiles(stateDir)
  const stamp = Date.now()
  const movedTo = `${files.snapshot}.unreadable-${stamp}`
  await fs.rename(files.snapshot, movedTo).catch((error: NodeJS.ErrnoException) => {
    if (error.code !== 'ENOENT') throw error
  })
  await fs.rename(files.log, `${files.log}.unreadable-${stamp}`).catch((error: NodeJS.ErrnoException) => {
    if (error.code !== 'ENOENT') throw error
  })
  return movedTo
}

/**
 * lowdb's adapter for the journal's snapshot: lowdb (`Low<JournalDoc>`, journal.ts) holds the
 * document and writes it whole through `write()`. lowdb's own JSONFile adapter never fsyncs (a power
 * cut can leave an empty journal), shares one temp name between processes and makes the whole JSON
 * one string (35 MB at 100,000 files, twice the peak memory of such a pull). Here `read()` is the
 * snapshot validated with its log applied (readJournalState) and `write()` a durable write in
 * pieces. The append-only log between snapshots (journal-log.ts) is ours: lowdb has no appends.
 */
export class SnapshotAdapter implements Adapter<JournalDoc> {
  /** What the last read found besides the document (zeros and false when there was none). */
  found: Omit<JournalState, 'doc'> = {snapshotBytes: 0, logBytes: 0, logAppendable: false}
  /** Bytes of the last snapshot written. */
  writtenBytes = 0

  constructor(readonly stateDir: string) {}

  get file(): string {
    return journalFiles(this.stateDir).snapshot
  }

  async read(): Promise<JournalDoc | null> {
    const state = await readJournalState(this.stateDir)
    if (!state) return null
    const {doc, ...found} = state
    this.found = found
    return doc
  }

  async write(doc: JournalDoc): Promise<void> {
    let bytes = 0
    await writeFileDurable(this.file, snapshotPieces(doc, (n) => (bytes += n)))
    this.writtenBytes = bytes
  }
}

/**
 * The snapshot's JSON (what JSON.stringify(doc) gives), made a piece at a time as it is written:
 * the journal of 100,000 files is 35 MB, and as one string it doubled the peak memory of a pull.
 */
export function* snapshotPieces(doc: JournalDoc, count: (bytes: number) => void): Generator<string> {
  const {files, ...head} = doc
  const emit = (text: string) => {
    count(Buffer.byteLength(text))
    return text
  }
  yield emit(`${JSON.stringify(head).slice(0, -1)},"files":{`)
  let piece: string[] = []
  let first = true
  for (const key of Object.keys(files)) {
    const record = files[key]
    if (!record) continue
    piece.push(`${first ? '' : ','}${JSON.stringify(key)}:${JSON.stringify(record)}`)
    first = false
    if (piece.length >= RECORDS_PER_PIECE) {
      yield emit(piece.join(''))
      piece = []
    }
  }
  yield emit(`${piece.join('')}}}`)
}
