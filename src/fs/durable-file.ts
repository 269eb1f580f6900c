import {randomBytes} from 'node:crypto'
import fs from 'node:fs/promises'
import path from 'node:path'

import {crashPoint} from './crash-points.js'
import {FILE_MODE} from './file-modes.js'

/**
 * Writes a file so that after a crash or power loss it holds either the old or the new content,
 * never a torn mix: a temp file with a per-process name (two writers never share one), fsync,
 * rename over the target, fsync the directory so the rename itself is durable. `data` may come in
 * pieces, made one at a time as they are written (a 35 MB journal need not be one string).
 */
export async function writeFileDurable(target: string, data: string | Uint8Array | Iterable<string | Uint8Array>, mode = FILE_MODE): Promise<void> {
  const dir = path.dirname(target)
  const tmp = path.join(dir, `.${path.basename(target)}.${process.pid}.${randomBytes(4).toString('hex')}.tmp`)
  const handle = await fs.open(tmp, 'wx', mode)
  try {
    if (typeof data === 'string' || data instanceof Uint8Array) await handle.writeFile(data)
    else for (const piece of data) await handle.writeFile(piece)
    await handle.sync()
  } catch (error) {
    await handle.close().catch(() => {})
    await fs.rm(tmp, {force: true})
    throw error
  }
  await handle.close()
  crashPoint('after-journal-temp')
  crashPoint('before-journal-rename')
  try {
    await fs.rename(tmp, target)
  } catch (error) {
    await fs.rm(tmp, {force: true})
    throw error
  }
  await fsyncDir(dir)
}

export async function fsyncDir(dir: string): Promise<void> {
  const handle = await fs.open(dir, 'r')
  try {
    await handle.sync()
  } catch (error) {
    // Some filesystems (some NFS and FUSE servers, and all of Windows) refuse fsync on a directory;
    // the rename is still atomic.
    if (!['EINVAL', 'ENOTSUP', 'EOPNOTSUPP', 'ENOSYS', 'EISDIR', 'EPERM'].includes((error as NodeJS.ErrnoException).code ?? '')) throw error
  } finally {
    await handle.close()
  }
}

/**
 * A writer's temp file lives for one write (milliseconds); one this old is stray whatever its pid
 * says (pids are reused, and on a shared filesystem the pid may be another host's).
 */
export const STRAY_AFTER_MS = 60 * 60 * 1000

/** Removes temp files a killed writer left next to `target` (`.<name>.<pid>.<rand>.tmp`). */
export async function removeStrayTempFiles(target: string): Promise<number> {
  const dir = path.dirname(target)
  const prefix = `.${path.basename(target)}.`
  let removed = 0
  let names: string[]
  try {
    names = await fs.readdir(dir)
  } catch {
    return 0
  }
  for (const name of names) {
    if (name.startsWith(prefix) && name.endsWith('.tmp')) {
      // A writer that does not hold the model lock (verify --repair keeping a manifest) may be
      // mid-write: removing its temp would fail its rename. Only a dead writer's temp, or one far
      // older than any write takes, is stray.
      if (writerIsAlive(name.slice(prefix.length).split('.')[0]) && !(await isOlderThan(path.join(dir, name), STRAY_AFTER_MS))) continue
      await fs.rm(path.join(dir, name), {force: true})
      removed++
    }
  }
  return removed
}

/** Whether the entry's mtime (not following a symlink) is more than `ms` ago; false when it is gone. */
export async function isOlderThan(file: string, ms: number): Promise<boolean> {
  const stat = await fs.lstat(file).catch(() => undefined)
  return stat !== undefined && Date.now() - stat.mtimeMs > ms
}

/** Whether a process with this pid (as written in a temp file's name) runs on this host; never for our own. */
export function writerIsAlive(pidText: string): boolean {
  const pid = Number(pidText)
  if (!Number.isSafeInteger(pid) || pid <= 0 || pid === process.pid) return false
  try {
    process.kill(pid, 0)
    return true
  } catch (error) {
    return (error as NodeJS.ErrnoException).code === 'EPERM'
  }
}
