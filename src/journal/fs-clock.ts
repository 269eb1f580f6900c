import {randomBytes} from 'node:crypto'
import fs from 'node:fs/promises'
import path from 'node:path'

import {FILE_MODE} from '../fs/file-modes.js'

/** `.clock-probe-<pid>-<hex>.tmp`: swept by the next lock holder and by `clean` if a kill leaves one. */
export const CLOCK_PROBE = /^\.clock-probe-\d+-[0-9a-f]+\.tmp$/

/**
 * The time on the clock that stamps this directory's files: a new file is written here and its
 * mtime read back. On a network filesystem the server sets that mtime, the same way it stamps a lock
 * holder's heartbeat, so the two can be compared; comparing Date.now() with a remote mtime is off by
 * the clock skew between the hosts (a live lock stolen, or a dead one waited for all day).
 * Throws when the directory cannot be written (a reader without write access).
 */
export async function fsNowMs(dir: string): Promise<number> {
  const probe = path.join(dir, `.clock-probe-${process.pid}-${randomBytes(4).toString('hex')}.tmp`)
  const fh = await fs.open(probe, fs.constants.O_WRONLY | fs.constants.O_CREAT | fs.constants.O_EXCL | fs.constants.O_NOFOLLOW, FILE_MODE)
  try {
    // Data written and synced: an NFS client sends the WRITE and takes the server's attributes back.
    await fh.write(Buffer.from('t'))
    await fh.sync().catch(() => {})
    return (await fh.stat()).mtimeMs
  } finally {
    await fh.close().catch(() => {})
    await fs.unlink(probe).catch(() => {})
  }
}
