import fs from 'node:fs/promises'
import path from 'node:path'

/**
 * Names in a directory, read once per pull: whether a file may be at its final path is then known
 * without a lstat per file (3,000 new files cost 3,000 thread-pool round trips for ENOENT). Only a
 * filter: a name found is lstat'ed as before; a name not found was not there when the directory
 * was first read in this pull, which holds the model lock (a file another tool puts there later is
 * replaced by the verified download, as it would be had it appeared after a lstat). `scope` is
 * what one pull owns (its journal): `serve` runs many pulls in one process.
 */
const listings = new WeakMap<object, Map<string, Promise<Set<string> | undefined>>>()

/** False when `file` was not in its directory's listing; true when it may be there (or unknown). */
export async function mayExist(file: string, scope: object): Promise<boolean> {
  let dirs = listings.get(scope)
  if (!dirs) listings.set(scope, (dirs = new Map()))
  const dir = path.dirname(file)
  let listing = dirs.get(dir)
  if (!listing) {
    listing = fs.readdir(dir).then(
      (names) => new Set(names),
      (error: NodeJS.ErrnoException) => (error.code === 'ENOENT' ? new Set<string>() : undefined),
    )
    dirs.set(dir, listing)
  }
  const names = await listing
  return names === undefined || names.has(path.basename(file))
}
