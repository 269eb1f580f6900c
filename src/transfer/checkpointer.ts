import type {FileHandle} from 'node:fs/promises'

import type {SavedSha256State} from '../integrity/sha256.js'
import {crashPoint} from '../fs/crash-points.js'
import type {Journal} from '../journal/journal.js'
import type {FileRecord} from '../journal/schema.js'
import {prefixBytes} from './partial-chunks.js'

/** What a checkpoint may claim: every byte of it is written (not yet fsynced). */
export interface DurableView {
  chunks: ReadonlyArray<string | null>
  /**
   * First bytes of chunks being filled, with their xxh64; undefined when this checkpoint did not
   * write them (a fast link): the claims of the last one that did stay (those bytes are on disk).
   */
  partials: Array<{index: number; data: Buffer; xxh64: string}> | undefined
  /** A hash state whose bytes are all written. */
  state: SavedSha256State | undefined
}

/**
 * Data first, journal second: the partial is fsynced, and only then does the journal claim what
 * the view holds. A kill between the two loses the claim, never the truth.
 */
export async function checkpoint(fh: FileHandle, journal: Journal, record: FileRecord, view: DurableView): Promise<void> {
  await fh.datasync()
  crashPoint('after-data-fsync')
  for (let i = 0; i < view.chunks.length; i++) if (view.chunks[i] !== null) record.chunks[i] = view.chunks[i]
  const claims = view.partials ? view.partials.map(({index, data, xxh64}) => ({index, bytes: data.length, xxh64})) : record.partialChunks ?? []
  record.partialChunks = claims.filter((p) => record.chunks[p.index] === null)
  const reach = prefixBytes(record.chunks, new Map(record.partialChunks.map((p) => [p.index, {length: p.bytes}])), record.size, record.chunkSizeBytes)
  if (view.state && view.state.offsetBytes <= reach) record.sha256State = view.state
  if (record.status === 'pending') record.status = 'partial'
  await journal.flush()
}
