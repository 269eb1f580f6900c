import fs from 'node:fs/promises'
import path from 'node:path'

import {fromFsError} from '../fs/fs-errors.js'
import {TOOL_ENTRIES} from '../store/layout.js'

/**
 * Entries below modelDir that the manifest does not list ('/'-separated, sorted): files, symlinks
 * and anything else that is not a directory. Tool entries at the top (ms-resume's state, the
 * official client's index and temp folder) are skipped; symlinks are reported, never followed.
 * Only reported: a verification never deletes anything.
 */
export async function findExtraFiles(modelDir: string, listed: Iterable<string>): Promise<string[]> {
  const known = new Set(listed)
  const extra: string[] = []
  async function walk(rel: string): Promise<void> {
    let entries
    try {
      entries = await fs.readdir(rel ? path.join(modelDir, ...rel.split('/')) : modelDir, {withFileTypes: true})
    } catch (error) {
      const code = (error as NodeJS.ErrnoException).code
      if (code === 'ENOENT' || code === 'ENOTDIR') return
      throw fromFsError(error, 'listing the model directory', path.join(modelDir, rel))
    }
    for (const entry of entries) {
      if (rel === '' && TOOL_ENTRIES.has(entry.name)) continue
      const child = rel ? `${rel}/${entry.name}` : entry.name
      if (entry.isDirectory()) await walk(child)
      else if (!known.has(child)) extra.push(child)
    }
  }
  await walk('')
  return extra.sort()
}
