import fs from 'node:fs/promises'

/**
 * Files ms-resume reads back (the journal, the Python client's `.msc`) may have been replaced by
 * anything: a symlink to a file elsewhere, a FIFO (a plain open blocks forever on one, holding a
 * libuv thread), a device, or a multi-gigabyte file. They are opened without following a symlink
 * and without blocking, checked to be regular files, and read only up to a bound.
 */

/** Why a state file was not read; the caller treats it like unreadable content. */
export class RefusedStateFile extends Error {}

/** 0 where the platform has no such flag (Windows): the fstat check still refuses what is not a file. */
export const O_NOFOLLOW = fs.constants.O_NOFOLLOW ?? 0
const O_NONBLOCK = fs.constants.O_NONBLOCK ?? 0

/**
 * The bytes of `file`, or undefined when it (or its directory) does not exist. Throws
 * RefusedStateFile for a symlink, anything but a regular file, or more than `maxBytes`; other
 * errors (permissions, I/O) propagate.
 */
export async function readStateFile(file: string, maxBytes: number): Promise<Buffer | undefined> {
  let fh
  try {
    fh = await fs.open(file, fs.constants.O_RDONLY | O_NOFOLLOW | O_NONBLOCK)
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code
    if (code === 'ENOENT' || code === 'ENOTDIR') return undefined
    // ELOOP: the name is a symlink (O_NOFOLLOW); ENXIO: a socket or a FIFO without a writer.
    if (code === 'ELOOP' || code === 'EMLINK') throw new RefusedStateFile('a symlink, not a file')
    if (code === 'ENXIO' || code === 'EISDIR') throw new RefusedStateFile('not a regular file')
    throw error
  }
  try {
    const stat = await fh.stat()
    if (!stat.isFile()) throw new RefusedStateFile('not a regular file')
    if (stat.size > maxBytes) throw new RefusedStateFile(`larger than ${maxBytes} bytes`)
    const parts: Buffer[] = []
    let total = 0
    for (;;) {
      // Bounded even if the file grows while it is read.
      const buf = Buffer.allocUnsafe(Math.min(1 << 20, maxBytes + 1 - total))
      const {bytesRead} = await fh.read(buf, 0, buf.length, null)
      if (bytesRead === 0) break
      parts.push(buf.subarray(0, bytesRead))
      total += bytesRead
      if (total > maxBytes) throw new RefusedStateFile(`larger than ${maxBytes} bytes`)
    }
    return Buffer.concat(parts, total)
  } finally {
    await fh.close()
  }
}
