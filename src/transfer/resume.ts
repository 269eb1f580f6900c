import type {FileHandle} from 'node:fs/promises'

import type {EventSink} from '../events.js'
import {chunkSumsOfOpenFile} from '../integrity/check.js'
import {chunkBounds} from '../integrity/chunks.js'
import {createResumableSha256, restoreSha256, type ResumableSha256} from '../integrity/sha256.js'
import type {FileRecord} from '../journal/schema.js'
import {readFully} from '../fs/read-fully.js'
import {partialChunksOnDisk, prefixBytes} from './partial-chunks.js'

/**
 * Reconciles the journal with the partial on disk before a download continues: claims past the
 * end of the file are forgotten, the last kept chunk and every partial chunk are checked against
 * their xxh64, bytes the journal does not vouch for are cut off, and the saved hash state is
 * loaded, or a fresh one made (the caller re-hashes the prefix from disk). Mutates `record` to
 * what is true on disk. Returns the verified first bytes of chunks a checkpoint caught half-way.
 */
export async function reconcileWithDisk(record: FileRecord, fh: FileHandle, emit: EventSink, adoptUnknown: boolean, xxh: (data: Uint8Array) => string): Promise<{prefills: Map<number, Buffer>; hasher: ResumableSha256}> {
    const size = (await fh.stat()).size
    if (size > record.size) await fh.truncate(record.size)
    const fileBytes = Math.min(size, record.size)
    const chunks = record.chunks
    const C = record.chunkSizeBytes
    for (let i = 0; i < chunks.length; i++) if (chunks[i] !== null && chunkBounds(i, record.size, C).end > fileBytes) chunks[i] = null
    if (adoptUnknown && fileBytes > 0 && !chunks.some((c) => c !== null)) {
      // The journal was lost: take the whole chunks on disk on trust, the final SHA-256 decides.
      const sums = await chunkSumsOfOpenFile(fh, record.size, C)
      for (let i = 0; i < chunks.length; i++) chunks[i] = sums[i]
    }
    let prefix = 0
    while (prefix < chunks.length && chunks[prefix] !== null) prefix++
    if (prefix > 0 && (await readChunkSum(fh, record, prefix - 1, xxh)) !== chunks[prefix - 1]) {
      // The tail the journal vouches for changed on disk: check every chunk, keep the good ones.
      const sums = await chunkSumsOfOpenFile(fh, record.size, C)
      for (let i = 0; i < chunks.length; i++) if (chunks[i] !== null && sums[i] !== chunks[i]) chunks[i] = null
      emit({type: 'warning', path: record.path, message: `partial of ${record.path} did not match its journal; falling back to the last good chunk`})
    }
    // Chunks a checkpoint caught half-way: their bytes so far, if the disk still has them.
    const prefills = await partialChunksOnDisk(fh, record, fileBytes, xxh, (i) => {
      emit({type: 'warning', path: record.path, message: `the first bytes of chunk ${i} of the partial of ${record.path} did not match its journal; fetching that chunk again`})
    })
    record.partialChunks = [...prefills].map(([index, data]) => ({index, bytes: data.length, xxh64: xxh(data)}))
    // Bytes past what the journal vouches for (written after the last checkpoint, or by something
    // else) are never trusted: cut them off, so the partial says no more than the journal.
    let claimedEnd = 0
    for (let i = chunks.length - 1; i >= 0 && claimedEnd === 0; i--) if (chunks[i] !== null) claimedEnd = chunkBounds(i, record.size, C).end
    for (const [index, data] of prefills) claimedEnd = Math.max(claimedEnd, index * C + data.length)
    if (fileBytes > claimedEnd) await fh.truncate(claimedEnd)

    // A restored hash state vouches for the bytes an earlier process hashed off the network. The
    // journal claims only what was fsynced, and the last kept chunk (where a crash on storage that
    // lies about fsync loses data) was checked above: by default the rest is trusted, as a complete
    // file is at `--check size`. At `--check fast|full` every chunk the state covers is read back
    // (alongside the download); a bad one is fetched again and the hash started over.
    const saved = record.sha256State
    const reach = prefixBytes(record.chunks, prefills, record.size, C)
    let hasher: ResumableSha256 | null = null
    if (saved && Number.isSafeInteger(saved.offsetBytes) && saved.offsetBytes >= 0 && saved.offsetBytes <= reach) hasher = await restoreSha256(saved)
    if (!hasher) {
      hasher = await createResumableSha256()
      if (reach > 0) emit({type: 'rehash', path: record.path, bytes: reach, reason: saved ? 'saved hash state unusable' : 'no saved hash state'})
    }
    return {prefills, hasher}
}

async function readChunkSum(fh: FileHandle, record: FileRecord, index: number, xxh: (d: Uint8Array) => string): Promise<string | null> {
  const {start, end} = chunkBounds(index, record.size, record.chunkSizeBytes)
  const buf = Buffer.allocUnsafe(end - start)
  const read = await readFully(fh, buf, buf.length, start)
  return read === buf.length ? xxh(buf) : null
}
