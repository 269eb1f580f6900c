import type {FileHandle} from 'node:fs/promises'

import {chunkBounds} from '../integrity/chunks.js'
import type {FileRecord} from '../journal/schema.js'
import {readFully} from '../fs/read-fully.js'

/**
 * The chunks a checkpoint caught half-way (`record.partialChunks`) whose bytes are still on disk as
 * the journal says: index -> those bytes. An entry that is malformed, claims a complete chunk,
 * reaches past the file, or whose bytes no longer match their xxh64 is dropped (fetched again).
 */
export async function partialChunksOnDisk(fh: FileHandle, record: FileRecord, fileBytes: number, xxh: (data: Uint8Array) => string, altered?: (index: number) => void): Promise<Map<number, Buffer>> {
  const found = new Map<number, Buffer>()
  const entries = Array.isArray(record.partialChunks) ? record.partialChunks : []
  for (const p of entries.slice(0, record.chunks.length)) {
    if (!p || !Number.isSafeInteger(p.index) || p.index < 0 || p.index >= record.chunks.length || found.has(p.index)) continue
    if (record.chunks[p.index] !== null) continue
    const {start, end} = chunkBounds(p.index, record.size, record.chunkSizeBytes)
    if (!Number.isSafeInteger(p.bytes) || p.bytes <= 0 || p.bytes >= end - start || start + p.bytes > fileBytes) continue
    const data = Buffer.allocUnsafe(p.bytes)
    if ((await readFully(fh, data, p.bytes, start)) !== p.bytes || xxh(data) !== p.xxh64) {
      altered?.(p.index)
      continue
    }
    found.set(p.index, data)
  }
  return found
}

/** Bytes [0, n) on disk in a row: whole durable chunks, then the first bytes of a partial chunk. */
export function prefixBytes(chunks: ReadonlyArray<string | null>, partials: ReadonlyMap<number, {length: number}>, sizeBytes: number, chunkSizeBytes: number): number {
  let i = 0
  while (i < chunks.length && chunks[i] !== null) i++
  return Math.min(sizeBytes, i * chunkSizeBytes + (partials.get(i)?.length ?? 0))
}
