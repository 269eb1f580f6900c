import type {FileHandle} from 'node:fs/promises'

/** Reads up to `length` bytes at `position` into `buffer`, looping over short reads; fewer only at EOF. */
export async function readFully(fh: FileHandle, buffer: Buffer, length: number, position: number): Promise<number> {
  let read = 0
  while (read < length) {
    const {bytesRead} = await fh.read(buffer, read, length - read, position + read)
    if (bytesRead === 0) break
    read += bytesRead
  }
  return read
}
