import {createHash} from 'node:crypto'
import fs from 'node:fs/promises'
import path from 'node:path'

import xxhash from 'xxhash-wasm'
import {readJournalOnDisk} from './journal-read.js'
import {statePaths} from './state-paths.js'

/**
 * The invariant behind every kill test: each chunk the journal calls durable is on disk with that
 * xxh64, so are the first bytes of each partial chunk it claims, and each file the journal calls
 * complete is at its final path with the listed SHA-256. `durablePrefix`: bytes [0, n) claimed in a
 * row (whole chunks, then a partial chunk's bytes). Returns the problems found.
 */
export async function journalClaimsProblems(modelDir: string): Promise<{problems: string[]; durablePrefix: Record<string, number>}> {
  const stateDir = statePaths(modelDir).dir
  const problems: string[] = []
  const durablePrefix: Record<string, number> = {}
  let doc: {files: Record<string, {path: string; size: number; sha256: string; observedSha256?: string; status: string; chunkSizeBytes: number; chunks: Array<string | null>; partialName?: string; partialChunks?: Array<{index: number; bytes: number; xxh64: string}>}>}
  try {
    const read = await readJournalOnDisk<typeof doc>(modelDir)
    if (!read) return {problems, durablePrefix}
    doc = read.doc
  } catch (error) {
    return {problems: [`journal unreadable: ${(error as Error).message}`], durablePrefix}
  }
  const {h64Raw} = await xxhash()
  for (const r of Object.values(doc.files)) {
    // A size-only file (no listed hash) is held to the hash of the bytes the pull placed.
    const expectedSha256 = r.sha256 || r.observedSha256
    let prefix = 0
    while (prefix < r.chunks.length && r.chunks[prefix] !== null) prefix++
    const partials = r.partialChunks ?? []
    durablePrefix[r.path] = Math.min(r.size, prefix * r.chunkSizeBytes + (partials.find((p) => p.index === prefix)?.bytes ?? 0))
    if (r.status === 'complete') {
      // Complete means verified at its final path: a regular file with the listed size and SHA-256.
      const finalPath = path.join(modelDir, ...r.path.split('/'))
      const stat = await fs.lstat(finalPath).catch(() => undefined)
      if (!stat?.isFile()) problems.push(`${r.path}: journal says complete but no file is at its final path`)
      else if (stat.size !== r.size) problems.push(`${r.path}: journal says complete but the file has ${stat.size} bytes, not ${r.size}`)
      else if (createHash('sha256').update(await fs.readFile(finalPath)).digest('hex') !== expectedSha256) problems.push(`${r.path}: journal says complete but the file's SHA-256 differs`)
      continue
    }
    if (!r.chunks.some((c) => c !== null) && partials.length === 0) continue
    const partial = path.join(stateDir, 'partial-v1', r.partialName ?? '')
    let data: Buffer
    try {
      data = await fs.readFile(partial)
    } catch {
      // Finalize renames the verified partial and marks the record complete in a batched write:
      // killed in between, the claimed bytes are at the final path (the next run adopts them).
      const final = await fs.readFile(path.join(modelDir, ...r.path.split('/'))).catch(() => undefined)
      if (!final || (expectedSha256 && createHash('sha256').update(final).digest('hex') !== expectedSha256)) problems.push(`${r.path}: journal claims chunks but the partial is missing`)
      continue
    }
    r.chunks.forEach((sum, i) => {
      if (sum === null) return
      const chunk = data.subarray(i * r.chunkSizeBytes, Math.min(r.size, (i + 1) * r.chunkSizeBytes))
      const expectedLen = Math.min(r.chunkSizeBytes, r.size - i * r.chunkSizeBytes)
      if (chunk.length !== expectedLen || h64Raw(chunk).toString(16).padStart(16, '0') !== sum) problems.push(`${r.path}: chunk ${i} claimed but not on disk`)
    })
    for (const p of partials) {
      const bytes = data.subarray(p.index * r.chunkSizeBytes, p.index * r.chunkSizeBytes + p.bytes)
      if (bytes.length !== p.bytes || h64Raw(bytes).toString(16).padStart(16, '0') !== p.xxh64) problems.push(`${r.path}: ${p.bytes} bytes of chunk ${p.index} claimed but not on disk`)
    }
  }
  return {problems, durablePrefix}
}
