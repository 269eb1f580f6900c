import {chunkBounds, chunkCount, chunkSizeFor} from '../integrity/chunks.js'
import {isSavedSha256State} from '../integrity/sha256-state.js'
import {parseModelId, partialNameFor} from '../store/layout.js'
import {reservedReason, unsafeReason} from '../store/safe-path.js'
import {LOG_ID, type LogEntry} from './journal-log.js'
import {JOURNAL_KIND, JOURNAL_VERSION, type FileRecord, type JournalDoc} from './schema.js'

/**
 * A journal is input: a model directory may be copied, restored from a backup, shared or committed.
 * Every field is checked here before it reaches a path, an allocation, a loop or a header; a journal
 * that fails is set aside by the caller, never trusted. A `partialName` of `../../../victim.txt`
 * once made a pull truncate, overwrite and move a file outside the model directory.
 */

const STATUSES = new Set(['pending', 'partial', 'complete', 'failed'])
const SHA256_HEX = /^[0-9a-f]{64}$/
const XXH64_HEX = /^[0-9a-f]{16}$/
/** Far above the 3 whole-file attempts a pull makes; a bound so the field cannot drive a loop. */
const MAX_INTEGRITY_FAILURES = 1000
/** Strings a journal carries for display or comparison (commit, timestamps, messages, engine). */
const MAX_TEXT = 64 * 1024
/** Saved SHA-256 states are ~150 bytes of base64; far more is not a state. */
const MAX_STATE_B64 = 4096
// An ETag goes into an If-Range header: printable ASCII only, no CR/LF (header injection).
const ETAG = /^[\x21-\x7e][\x20-\x7e]{0,1023}$/

function isObject(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v)
}

function isText(v: unknown, max = MAX_TEXT): v is string {
  return typeof v === 'string' && v.length <= max
}

function isIndex(v: unknown, below: number): v is number {
  return Number.isSafeInteger(v) && (v as number) >= 0 && (v as number) < below
}

/** Why one record cannot be trusted, or undefined. */
export function recordProblem(key: string, r: unknown): string | undefined {
  if (!isObject(r)) return 'not an object'
  if (r.path !== key) return 'path differs from its key'
  const unsafe = unsafeReason(key) ?? reservedReason(key)
  if (unsafe) return `unsafe path (${unsafe})`
  if (!Number.isSafeInteger(r.size) || (r.size as number) < 0) return 'bad size'
  const size = r.size as number
  // '' is a file the hub listed without a SHA-256 (size only); once complete it carries the hash we saw.
  if (typeof r.sha256 !== 'string' || (r.sha256 !== '' && !SHA256_HEX.test(r.sha256))) return 'bad sha256'
  if (r.observedSha256 !== undefined && (r.sha256 !== '' || typeof r.observedSha256 !== 'string' || !SHA256_HEX.test(r.observedSha256))) return 'bad observedSha256'
  if (r.sha256 === '' && r.status === 'complete' && r.observedSha256 === undefined) return 'a complete size-only file without observedSha256'
  if (!isText(r.commit, 256)) return 'bad commit'
  if (r.etag !== undefined && (typeof r.etag !== 'string' || !ETAG.test(r.etag))) return 'bad etag'
  if (typeof r.status !== 'string' || !STATUSES.has(r.status)) return 'bad status'
  if (r.chunkSizeBytes !== chunkSizeFor(size)) return `chunkSizeBytes ${String(r.chunkSizeBytes)} is not the grid for ${size} bytes`
  const chunkSize = r.chunkSizeBytes as number
  if (!Array.isArray(r.chunks) || r.chunks.length !== chunkCount(size, chunkSize)) return 'bad chunk table'
  if (!chunkSumsValid(r.chunks)) return 'bad chunk sum'
  if (r.partialName !== undefined && r.partialName !== partialNameFor(key)) return 'partialName is not the one ms-resume makes for this path'
  if (!Number.isSafeInteger(r.integrityFailures) || (r.integrityFailures as number) < 0 || (r.integrityFailures as number) > MAX_INTEGRITY_FAILURES) return 'bad integrityFailures'
  if (r.lastError !== undefined && !(isObject(r.lastError) && isText(r.lastError.code, 64) && isText(r.lastError.message) && isText(r.lastError.at, 64))) return 'bad lastError'
  for (const k of ['completedAt', 'checkedAt'] as const) if (r[k] !== undefined && !isText(r[k], 64)) return `bad ${k}`
  const partialProblem = partialChunksProblem(r.partialChunks, r.chunks as Array<string | null>, size, chunkSize)
  if (partialProblem) return partialProblem
  if (r.sha256State !== undefined) {
    const s = r.sha256State
    if (!isSavedSha256State(s) || s.engine.length > 256 || s.stateB64.length > MAX_STATE_B64) return 'bad sha256State'
    if (s.offsetBytes > size) return 'sha256State past the end of the file'
  }
  return undefined
}

/**
 * Each entry null or 16 lowercase hex digits. One regular expression over the sums joined, not one
 * per sum: the journal of a 4 GiB file 90 % done carries ~40 log records of 3,700 sums each, and a
 * test per sum was 10 ms of a resume's start-up.
 */
function chunkSumsValid(chunks: unknown[]): boolean {
  const sums: string[] = []
  for (const c of chunks) {
    if (c === null) continue
    if (typeof c !== 'string' || c.length !== 16) return false
    sums.push(c)
  }
  return HEX_ONLY.test(sums.join(''))
}
const HEX_ONLY = /^[0-9a-f]*$/

/**
 * Valid: an integer index in [0, chunks.length) of a chunk not yet durable, 0 < bytes < that chunk's
 * length, 16 lowercase hex digits, each index once.
 */
function partialChunksProblem(value: unknown, chunks: Array<string | null>, size: number, chunkSize: number): string | undefined {
  if (value === undefined) return undefined
  if (!Array.isArray(value) || value.length > chunks.length) return 'bad partialChunks'
  const seen = new Set<number>()
  for (const p of value) {
    if (!isObject(p) || !isIndex(p.index, chunks.length) || chunks[p.index] !== null || seen.has(p.index)) return 'bad partialChunks index'
    const {start, end} = chunkBounds(p.index, size, chunkSize)
    if (!Number.isSafeInteger(p.bytes) || (p.bytes as number) <= 0 || (p.bytes as number) >= end - start) return 'bad partialChunks bytes'
    if (typeof p.xxh64 !== 'string' || !XXH64_HEX.test(p.xxh64)) return 'bad partialChunks xxh64'
    seen.add(p.index)
  }
  return undefined
}

/**
 * Bytes [0, n) the record vouches for contiguously: its leading durable chunks plus, right after
 * them, a chunk filled from its start (partialChunks).
 */
export function contiguousDurableBytes(record: Pick<FileRecord, 'chunks' | 'chunkSizeBytes' | 'size' | 'partialChunks'>): number {
  let i = 0
  while (i < record.chunks.length && record.chunks[i] !== null) i++
  const prefix = Math.min(record.size, i * record.chunkSizeBytes)
  const tail = record.partialChunks?.find((p) => p.index === i)
  return prefix + (tail?.bytes ?? 0)
}

/** Why a parsed journal cannot be trusted, or undefined. */
export function journalProblem(doc: unknown): string | undefined {
  if (!isObject(doc)) return 'not a JSON object'
  if (doc.kind !== JOURNAL_KIND) return 'not an ms-resume journal'
  if (typeof doc.version !== 'number') return 'no schema version'
  if (doc.version > JOURNAL_VERSION) return `written by a newer ms-resume (schema version ${doc.version})`
  if (doc.version < JOURNAL_VERSION) return `old schema version ${doc.version}`
  for (const k of ['hub', 'endpoint', 'revision', 'createdAt', 'updatedAt'] as const) if (!isText(doc[k], 4096)) return `bad "${k}"`
  if (doc.logId !== undefined && (typeof doc.logId !== 'string' || !LOG_ID.test(doc.logId))) return 'bad "logId"'
  try {
    parseModelId(doc.modelId as string)
  } catch {
    return `bad modelId ${JSON.stringify(doc.modelId)}`
  }
  if (doc.repoKind !== undefined && doc.repoKind !== 'dataset') return `bad repoKind ${JSON.stringify(doc.repoKind)}`
  if (!isObject(doc.files)) return 'no file table'
  for (const [key, r] of Object.entries(doc.files)) {
    const problem = recordProblem(key, r)
    if (problem) return `bad entry for ${JSON.stringify(key)}: ${problem}`
  }
  return undefined
}

/**
 * The journal to use, or why it cannot be trusted. The file table is rebuilt without a prototype,
 * so a hub path named `constructor`, `toString` or `__proto__` is a key like any other. A saved hash
 * state that covers more than the record vouches for (chunks are unclaimed before the state is
 * replaced, and a batched write can land in between) is dropped: the prefix is re-hashed from disk.
 */
export function validateJournal(doc: unknown): {doc: JournalDoc; problem?: undefined} | {doc?: undefined; problem: string} {
  const problem = journalProblem(doc)
  if (problem) return {problem}
  const d = doc as JournalDoc
  const files = Object.create(null) as Record<string, FileRecord>
  for (const [key, r] of Object.entries(d.files)) putRecord(files, key, r)
  return {doc: {...d, files}}
}

function putRecord(files: Record<string, FileRecord>, key: string, r: FileRecord): void {
  if (r.sha256State && r.sha256State.offsetBytes > contiguousDurableBytes(r)) delete r.sha256State
  Object.defineProperty(files, key, {value: r, enumerable: true, writable: true, configurable: true})
}

/** Why one log entry cannot be trusted, or undefined (journal-log.ts has the shapes). */
export function logEntryProblem(entry: unknown): string | undefined {
  if (!isObject(entry)) return 'not an object'
  const keys = Object.keys(entry)
  if (keys.length !== 1) return 'not one of doc, file, drop'
  if (keys[0] === 'file') {
    const r = entry.file
    if (!isObject(r) || typeof r.path !== 'string') return 'a record without a path'
    const problem = recordProblem(r.path, r)
    return problem ? `bad entry for ${JSON.stringify(r.path)}: ${problem}` : undefined
  }
  if (keys[0] === 'drop') return isText(entry.drop, MAX_TEXT) ? undefined : 'bad drop'
  if (keys[0] === 'doc') {
    const d = entry.doc
    if (!isObject(d)) return 'bad doc'
    for (const k of ['endpoint', 'revision', 'updatedAt'] as const) if (!isText(d[k], 4096)) return `bad doc "${k}"`
    return undefined
  }
  return 'not one of doc, file, drop'
}

/**
 * A validated snapshot with the committed entries of its log applied, or why the log cannot be
 * trusted. Every entry is checked as the snapshot's records are, before any is applied.
 */
export function applyLog(doc: JournalDoc, entries: unknown[]): {doc: JournalDoc; problem?: undefined} | {doc?: undefined; problem: string} {
  for (const entry of entries) {
    const problem = logEntryProblem(entry)
    if (problem) return {problem: `log entry: ${problem}`}
  }
  for (const entry of entries as LogEntry[]) {
    if ('file' in entry) putRecord(doc.files, entry.file.path, entry.file)
    else if ('drop' in entry) delete doc.files[entry.drop]
    else Object.assign(doc, {endpoint: entry.doc.endpoint, revision: entry.doc.revision, updatedAt: entry.doc.updatedAt})
  }
  return {doc}
}
