import type {SavedSha256State} from '../integrity/sha256.js'
import type {RepoKind} from '../store/layout.js'

/** The journal's format version; bump it with an explicit migration. */
export const JOURNAL_VERSION = 1
export const JOURNAL_KIND = 'ms-resume/journal'

export type FileStatus = 'pending' | 'partial' | 'complete' | 'failed'

export interface FileRecord {
  path: string
  /** As listed by the hub. */
  size: number
  /** As listed; '' when the hub listed none (size only, see integrity/size-only.ts). */
  sha256: string
  /** Size-only files, once complete: the SHA-256 of the bytes we placed (what verify holds them to). */
  observedSha256?: string
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
  /** Absent for a model (journals before datasets have none). */
  repoKind?: Exclude<RepoKind, 'model'>
  revision: string
  createdAt: string
  updatedAt: string
  /** The append-only log that continues this snapshot (journal-log.ts); absent: no log applies. */
  logId?: string
  files: Record<string, FileRecord>
}

export interface JournalInit {
  hub: string
  endpoint: string
  modelId: string
  repoKind?: RepoKind
  revision: string
}

export function emptyJournal(init: JournalInit): JournalDoc {
  const now = new Date().toISOString()
  const {repoKind, ...rest} = init
  // No prototype: a hub path named `constructor` or `__proto__` must be an ordinary key.
  return {kind: JOURNAL_KIND, version: JOURNAL_VERSION, ...rest, ...(repoKind === 'dataset' ? {repoKind} : {}), createdAt: now, updatedAt: now, files: Object.create(null) as Record<string, FileRecord>}
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
