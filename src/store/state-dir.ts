import {randomBytes} from 'node:crypto'
import fs from 'node:fs/promises'
import path from 'node:path'

import {MsrError} from '../errors.js'
import {STRAY_AFTER_MS, isOlderThan, writerIsAlive} from '../fs/durable-file.js'
import {DIR_MODE, FILE_MODE} from '../fs/file-modes.js'
import {PARTIAL_DIR, QUARANTINE_DIR} from './layout.js'
import {O_NOFOLLOW} from './state-file.js'

/**
 * ms-resume's state directory (`<model dir>/.ms-resume`) and its partial and quarantine folders
 * must be real directories: `mkdir -p` accepts a symlink to a directory elsewhere, and every
 * partial, probe and quarantined download would then be written (and `clean` would delete) there.
 */
export async function prepareStateDir(stateDir: string): Promise<void> {
  await fs.mkdir(stateDir, {recursive: true, mode: DIR_MODE})
  await assertRealDirectory(stateDir, true)
  const partials = path.join(stateDir, PARTIAL_DIR)
  await fs.mkdir(partials, {recursive: true, mode: DIR_MODE})
  await assertRealDirectory(partials, true)
  await assertRealDirectory(path.join(stateDir, QUARANTINE_DIR), false)
  await sweepStrayProbes(stateDir)
  await probeWritable(stateDir)
}

/** Refuses (E_UNSAFE_PATH) a symlink or anything but a directory at `dir`; a missing one passes unless required. */
export async function assertRealDirectory(dir: string, required: boolean): Promise<void> {
  const stat = await fs.lstat(dir).catch((error: NodeJS.ErrnoException) => {
    if (error.code === 'ENOENT' && !required) return undefined
    throw error
  })
  if (!stat || stat.isDirectory()) return
  throw new MsrError('E_UNSAFE_PATH', `Refusing to use ${dir}: it is ${stat.isSymbolicLink() ? 'a symlink' : 'not a directory'}, and ms-resume keeps its state only in a real directory.`, {
    hint: `Nothing was written there. Remove ${dir} (ms-resume did not make it) and run again.`,
  })
}

/** `.write-probe-<pid>-<tag>`; older versions wrote `.write-probe-<pid>`. */
export const PROBE = /^\.write-probe-(\d+)(-[0-9a-f]{8})?$/
/**
 * Pids repeat across the hosts and containers that share a cache (every container's first CLI may
 * be pid 3): with the pid alone, two pulls created, and removed, one another's probe.
 */
const PROCESS_TAG = randomBytes(4).toString('hex')

/** The write probe's name for this process. */
export function probeName(): string {
  return `.write-probe-${process.pid}-${PROCESS_TAG}`
}

/**
 * Proves the state directory is writable before the first byte is fetched (a read-only target fails
 * here, clearly). Created exclusively and without following a symlink: a link planted at this name
 * must not make us create or truncate a file elsewhere.
 */
export async function probeWritable(stateDir: string): Promise<void> {
  const probe = path.join(stateDir, probeName())
  // A probe of an earlier process that had our pid (a killed pull, a container restart).
  await fs.rm(probe, {force: true})
  const fh = await fs.open(probe, fs.constants.O_WRONLY | fs.constants.O_CREAT | fs.constants.O_EXCL | O_NOFOLLOW, FILE_MODE)
  await fh.close()
  // Another pull's sweep may have removed it already: harmless.
  await fs.rm(probe, {force: true})
}

/** Removes `.write-probe-<pid>` files whose process is gone, or that are older than any probe lives. */
export async function sweepStrayProbes(stateDir: string): Promise<number> {
  let removed = 0
  for (const name of await fs.readdir(stateDir).catch(() => [] as string[])) {
    const m = PROBE.exec(name)
    if (!m) continue
    const file = path.join(stateDir, name)
    if (writerIsAlive(m[1]) && !(await isOlderThan(file, STRAY_AFTER_MS))) continue
    await fs.rm(file, {force: true}).catch(() => {})
    removed++
  }
  return removed
}
