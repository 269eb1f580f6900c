import {readFileSync} from 'node:fs'
import type {FileHandle} from 'node:fs/promises'

/**
 * Modes for everything ms-resume creates: 0666 for files, 0777 for directories, narrowed by the
 * user's umask; in a setgid directory the kernel passes the directory's group on. A team cache (a
 * 2775 directory of group `team`, everyone at umask 002) then works with no chmod by hand: bob
 * resumes alice's partial, rewrites her journal, takes over her stale lock. Fixed 0600/0700 modes
 * made a group cache unusable for everyone but the first user. Nothing secret is in the state (the
 * token is never written), so the umask is the user's whole say: umask 077 keeps a cache private.
 */
export const FILE_MODE = 0o666
export const DIR_MODE = 0o777

let cachedUmask: number | undefined

/**
 * The process umask, read without changing it: process.umask() sets it to 0 for a moment, and a
 * file created by a thread-pool thread in that moment would be world-writable.
 */
export function currentUmask(): number {
  if (cachedUmask !== undefined) return cachedUmask
  try {
    const m = /^Umask:\s*([0-7]+)$/m.exec(readFileSync('/proc/self/status', 'utf8'))
    if (m) return (cachedUmask = Number.parseInt(m[1], 8) & 0o777)
  } catch {
    /* not Linux: ask the process below */
  }
  return (cachedUmask = process.umask() & 0o777)
}

/**
 * Gives a file we own the mode a new file gets (0666 minus the umask). A partial started by an
 * older ms-resume is 0600 and must not become a private file at its final path; a file of another
 * user (bob finishing alice's partial) is left as it is: chmod would fail, and her umask made it.
 */
export async function settleFileMode(fh: FileHandle): Promise<void> {
  const want = FILE_MODE & ~currentUmask()
  const stat = await fh.stat()
  if ((stat.mode & 0o777) === want) return
  if (typeof process.getuid === 'function' && stat.uid !== process.getuid()) return
  await fh.chmod(want).catch((error: NodeJS.ErrnoException) => {
    if (error.code !== 'EPERM' && error.code !== 'EACCES') throw error
  })
}
