import type {SavedSha256State} from '../integrity/sha256.js'

/** The journal's format version; bump it with an explicit migration. */
export const JOURNAL_VERSION = 1
export const JOURNAL_KIND = 'ms-resume/journal'

export type FileStatus = 'pending' | 'partial' | 'complete' | 'failed'

export interface FileRecord {
  path: string
  /** As listed by the hub. */
  size: number
  sha256: string
  /** The file's 40-hex commit from the listing. */
  commit: string
  /** Strong ETag of the blob, when the server gave one. */
  etag?: string
  status: FileStatus
  /** Chunk grid of this file; `chunks[i]` is the xxh64 hex of chunk i once it is durable on disk. */
  chunkSizeBytes: number
  chunks: Array<string | null>
  /** Chunks filled from their start but not complete: bytes [index*chunkSizeBytes, +bytes) are durable, with their xxh64. */
  partialChunks?: Array<{index: number; bytes: number; xxh64: string}>
  /** SHA-256 state over the durable prefix [0, offsetBytes) (may end inside a partial chunk). */
  sha256State?: SavedSha256State
  /** Name of the partial file inside the state directory's partial folder. */
  partialName?: string
  /** Whole-file downloads that ended in a hash mismatch (bounded). */
  integrityFailures: number
  lastError?: {code: string; message: string; at: string}
  completedAt?: string
  /** When the completed file was last checked, and how. */
  checkedAt?: string
}

export interface JournalDoc {
  kind: typeof JOURNAL_KIND
  version: number
  hub: string
  endpoint: string
  modelId: string
  revision: string
  createdAt: string
  updatedAt: string
  files: Record<string, FileRecord>
}

export function emptyJournal(init: {hub: string; endpoint: string; modelId: string; revision: string}): JournalDoc {
  const now = new Date().toISOString()
  return {kind: JOURNAL_KIND, version: JOURNAL_VERSION, ...init, createdAt: now, updatedAt: now, files: {}}
}

/** Bytes [0, n) covered by consecutive durable chunks. */
export function durablePrefixBytes(record: Pick<FileRecord, 'chunks' | 'chunkSizeBytes' | 'size'>): number {
  let i = 0
  while (i < record.chunks.length && record.chunks[i] !== null) i++
  return Math.min(record.size, i * record.chunkSizeBytes)
}

export function durableBytes(record: Pick<FileRecord, 'chunks' | 'chunkSizeBytes' | 'size'>): number {
  let total = 0
  for (let i = 0; i < record.chunks.length; i++) {
    if (record.chunks[i] !== null) total += Math.min(record.chunkSizeBytes, record.size - i * record.chunkSizeBytes)
  }
  return total
}

/** Structural check of a parsed journal; returns a reason when it cannot be trusted. */
export function journalProblem(doc: unknown): string | undefined {
  if (!doc || typeof doc !== 'object') return 'not a JSON object'
  const d = doc as Partial<JournalDoc>
  if (d.kind !== JOURNAL_KIND) return 'not an ms-resume journal'
  if (typeof d.version !== 'number') return 'no schema version'
  if (d.version > JOURNAL_VERSION) return `written by a newer ms-resume (schema version ${d.version})`
  if (d.version < JOURNAL_VERSION) return `old schema version ${d.version}`
  if (!d.files || typeof d.files !== 'object') return 'no file table'
  for (const [key, r] of Object.entries(d.files)) {
    if (!r || r.path !== key || !Number.isSafeInteger(r.size) || !Array.isArray(r.chunks) || !Number.isSafeInteger(r.chunkSizeBytes) || r.chunkSizeBytes <= 0) {
      return `bad entry for ${JSON.stringify(key)}`
    }
    if (r.chunks.length !== Math.ceil(r.size / r.chunkSizeBytes)) return `bad chunk table for ${JSON.stringify(key)}`
  }
  return undefined
}
