import {crc32} from 'node:zlib'

import type {FileRecord} from './schema.js'

/**
 * The journal's append-only log, next to its snapshot (journal-v1.json). Rewriting the whole
 * journal at every batch made a 100,000-file pull quadratic: the snapshot is rewritten only when
 * the log outgrows it (compaction), and between compactions each batch of changed records is
 * appended and fdatasynced.
 *
 *   {"kind":"ms-resume/journal-log","version":1,"logId":"<16 hex>"}     the header
 *   {"doc":{"endpoint":"…","revision":"…","updatedAt":"…"}}             entries: journal fields,
 *   {"file":{…a whole FileRecord…}}                                     a record (replaces the last),
 *   {"drop":"<path>"}                                                   a record removed
 *   {"commit":<entries in the batch>,"crc32":"<8 hex>"}                 ends each batch
 *
 * One line each. The log applies to the snapshot whose `logId` is the header's: a compaction
 * writes the snapshot (with a new id) first and the new log second, so a kill in between leaves an
 * old log the new snapshot ignores. A batch counts only with its commit line, whose CRC-32 covers
 * the batch's bytes: a kill or a power loss in the middle of an append leaves a torn last batch,
 * which is ignored (it was never acknowledged). Damage followed by a good batch is not a torn
 * tail: the journal cannot be trusted then.
 */
export const JOURNAL_LOG_KIND = 'ms-resume/journal-log'
export const JOURNAL_LOG_VERSION = 1
export const LOG_ID = /^[0-9a-f]{16}$/

export type LogEntry =
  | {doc: {endpoint: string; revision: string; updatedAt: string}}
  | {file: FileRecord}
  | {drop: string}

export function logHeader(logId: string): string {
  return `${JSON.stringify({kind: JOURNAL_LOG_KIND, version: JOURNAL_LOG_VERSION, logId})}\n`
}

/** Entry lines, serialised (one JSON text each, without the newline). */
export function encodeBatch(lines: string[]): Buffer {
  const body = Buffer.from(lines.length > 0 ? `${lines.join('\n')}\n` : '')
  const commit = `${JSON.stringify({commit: lines.length, crc32: crc32Hex(body)})}\n`
  return Buffer.concat([body, Buffer.from(commit)])
}

function crc32Hex(data: Uint8Array): string {
  return crc32(data).toString(16).padStart(8, '0')
}

export interface ParsedLog {
  /** The header's id; undefined when there is no complete header. */
  logId?: string
  /** Entries of the committed batches, in order (each still to be validated by the caller). */
  entries: unknown[]
  /** Bytes up to the end of the last committed batch (the header included). */
  validBytes: number
  /** Bytes after validBytes that are not a committed batch: a torn last append. */
  tornBytes: number
  /** Why the log cannot be trusted at all (then nothing else is set). */
  problem?: string
}

interface Line {
  start: number
  end: number
  /** Index of the byte after the newline. */
  next: number
}

function commitOf(value: unknown): {commit: number; crc32: string} | undefined {
  if (typeof value !== 'object' || value === null || Array.isArray(value)) return undefined
  const v = value as Record<string, unknown>
  if (!Number.isSafeInteger(v.commit) || (v.commit as number) < 0 || typeof v.crc32 !== 'string' || !/^[0-9a-f]{8}$/.test(v.crc32)) return undefined
  return {commit: v.commit as number, crc32: v.crc32}
}

function parseJson(bytes: Buffer, line: Line): unknown {
  try {
    return JSON.parse(bytes.toString('utf8', line.start, line.end))
  } catch {
    return undefined
  }
}

/**
 * Whether line `at` is a commit line closing the lines before it with a matching CRC-32: exactly the
 * lines from `from` (`exact`), or any number of lines after `from`.
 */
function closesBatch(bytes: Buffer, lines: Line[], at: number, from: number, exact: boolean): boolean {
  const commit = commitOf(parseJson(bytes, lines[at]))
  if (!commit || at - commit.commit < from || (exact && at - commit.commit !== from)) return false
  const start = commit.commit === 0 ? lines[at].start : lines[at - commit.commit].start
  return crc32Hex(bytes.subarray(start, lines[at].start)) === commit.crc32
}

/** Splits, checks and returns the committed entries of a log file's bytes. Pure. */
export function parseLog(bytes: Buffer): ParsedLog {
  const lines: Line[] = []
  for (let at = 0; at < bytes.length;) {
    const nl = bytes.indexOf(10, at)
    if (nl < 0) break
    lines.push({start: at, end: nl, next: nl + 1})
    at = nl + 1
  }
  if (lines.length === 0) return {entries: [], validBytes: 0, tornBytes: bytes.length}
  const header = parseJson(bytes, lines[0]) as Record<string, unknown> | undefined
  if (typeof header !== 'object' || header === null || header.kind !== JOURNAL_LOG_KIND) return {entries: [], validBytes: 0, tornBytes: 0, problem: 'the log is not an ms-resume journal log'}
  if (typeof header.version !== 'number' || header.version > JOURNAL_LOG_VERSION) return {entries: [], validBytes: 0, tornBytes: 0, problem: `the log was written by a newer ms-resume (version ${String(header.version)})`}
  if (header.version !== JOURNAL_LOG_VERSION) return {entries: [], validBytes: 0, tornBytes: 0, problem: `old log version ${header.version}`}
  if (typeof header.logId !== 'string' || !LOG_ID.test(header.logId)) return {entries: [], validBytes: 0, tornBytes: 0, problem: 'the log has no valid id'}
  const entries: unknown[] = []
  // Each line parsed once: a batch's lines are kept until its commit line vouches for them.
  const batch: unknown[] = []
  let validBytes = lines[0].next
  let batchFrom = 1
  let i = 1
  for (; i < lines.length; i++) {
    const value = parseJson(bytes, lines[i])
    if (value === undefined) break
    if (commitOf(value) === undefined) {
      batch.push(value)
      continue
    }
    if (!closesBatch(bytes, lines, i, batchFrom, true)) break
    for (const entry of batch) entries.push(entry)
    batch.length = 0
    validBytes = lines[i].next
    batchFrom = i + 1
  }
  // Past the last committed batch: a torn append, unless a committed batch follows the damage.
  for (let k = Math.max(i, batchFrom); k < lines.length; k++) {
    if (closesBatch(bytes, lines, k, batchFrom, false)) return {entries: [], validBytes: 0, tornBytes: 0, problem: `the log is damaged before byte ${lines[k].start}`}
  }
  return {logId: header.logId, entries, validBytes, tornBytes: bytes.length - validBytes}
}
