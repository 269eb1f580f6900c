import fs from 'node:fs/promises'
import {crc32} from 'node:zlib'

import {statePaths} from './state-paths.js'

/**
 * The journal as it stands on disk, read the way the format is documented (src/journal/journal-log.ts)
 * but without ms-resume's code, so a test checks the product's reader and writer against a second
 * reading: the snapshot, then every committed batch of a log whose header names the snapshot's
 * logId, in order; a batch counts only with its commit line and a matching CRC-32; reading stops
 * at the first that does not. Throws when the snapshot is not JSON; undefined when there is none.
 */
export interface LogReading {
  /** Committed batches applied. */
  batches: number
  /** Bytes after the last committed batch (a torn append). */
  tornBytes: number
}

export async function readJournalOnDisk<T extends {files: Record<string, unknown>; logId?: string}>(modelDir: string): Promise<{doc: T; log: LogReading} | undefined> {
  const paths = statePaths(modelDir)
  const text = await fs.readFile(paths.journal, 'utf8').catch((error: NodeJS.ErrnoException) => {
    if (error.code === 'ENOENT') return undefined
    throw error
  })
  if (text === undefined) return undefined
  const doc = JSON.parse(text) as T
  const log: LogReading = {batches: 0, tornBytes: 0}
  const bytes = doc.logId ? await fs.readFile(paths.journalLog).catch(() => undefined) : undefined
  if (!bytes) return {doc, log}
  const lines: Array<{start: number; end: number}> = []
  for (let at = 0; ;) {
    const nl = bytes.indexOf(10, at)
    if (nl < 0) break
    lines.push({start: at, end: nl + 1})
    at = nl + 1
  }
  const json = (i: number) => {
    try {
      return JSON.parse(bytes.toString('utf8', lines[i].start, lines[i].end))
    } catch {
      return undefined
    }
  }
  if (lines.length === 0 || json(0)?.logId !== doc.logId) return {doc, log}
  let valid = lines[0].end
  let from = 1
  for (let i = 1; i < lines.length; i++) {
    const line = json(i)
    if (line === undefined) break
    if (!('commit' in line)) continue
    const batch = bytes.subarray(lines[from].start, lines[i].start)
    if (line.commit !== i - from || crc32(batch).toString(16).padStart(8, '0') !== line.crc32) break
    for (let k = from; k < i; k++) {
      const entry = json(k)
      if (entry.file) doc.files[entry.file.path] = entry.file
      else if (entry.drop !== undefined) delete doc.files[entry.drop]
      else Object.assign(doc, entry.doc)
    }
    log.batches++
    valid = lines[i].end
    from = i + 1
  }
  log.tornBytes = bytes.length - valid
  return {doc, log}
}
