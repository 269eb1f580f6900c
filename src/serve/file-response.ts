import fs from 'node:fs'
import type {IncomingMessage, ServerResponse} from 'node:http'
import {promisify} from 'node:util'

import {decideRange, noneMatch} from './range.js'

const read = promisify(fs.read)

/**
 * Read size for file bodies: each response reads into two buffers of this size, in turn (see
 * pumpFile). Measured on 1 GiB from the page cache to curl (docs/serve.md): 0.40 s of server CPU
 * per GiB at 256 KiB, 0.46-0.50 at 512 KiB and 1 MiB; all at curl's 1.6 GB/s like nginx.
 */
export const FILE_READ_BYTES = 256 * 1024

export interface OpenedFile {
  /** A plain fd: the read stream owns it from the first body byte (see below). */
  fd: number
  size: number
  sha256: string
  mtime: Date
}

/**
 * A verified file with the headers a resuming client relies on: a strong ETag (the SHA-256, so it
 * names the content and not the mtime), Range/If-Range (206, 416 with `*\/size`), If-None-Match
 * (304) and HEAD. Closes `file.fd` in every case. `counter.bytes` counts body bytes as they are
 * handed to the socket (the access log reads it when the response closes, also when cut off).
 */
export async function sendFile(req: IncomingMessage, res: ServerResponse, file: OpenedFile, counter: {bytes: number}, readBytes = FILE_READ_BYTES): Promise<void> {
  try {
    const etag = `"${file.sha256}"`
    const lastModified = file.mtime.toUTCString()
    res.setHeader('ETag', etag)
    res.setHeader('Last-Modified', lastModified)
    res.setHeader('Accept-Ranges', 'bytes')
    const inm = header(req, 'if-none-match')
    if (inm !== undefined && noneMatch(inm, etag)) {
      res.writeHead(304).end()
      return
    }
    const decision = decideRange({range: header(req, 'range'), ifRange: header(req, 'if-range'), size: file.size, etag, lastModified})
    if (decision.kind === 'unsatisfiable') {
      res.writeHead(416, {'Content-Range': `bytes */${file.size}`, 'Content-Length': 0}).end()
      return
    }
    const [status, start, end] = decision.kind === 'partial' ? [206, decision.start, decision.endInclusive] : [200, 0, file.size - 1]
    const length = end - start + 1
    res.setHeader('Content-Type', 'application/octet-stream')
    res.setHeader('Content-Length', length)
    if (status === 206) res.setHeader('Content-Range', `bytes ${start}-${end}/${file.size}`)
    res.writeHead(status)
    if (req.method === 'HEAD' || length === 0) {
      res.end()
      return
    }
    await pumpFile(file.fd, start, length, res, counter, readBytes)
  } finally {
    fs.close(file.fd, () => {})
  }
}

function header(req: IncomingMessage, name: string): string | undefined {
  const v = req.headers[name]
  return Array.isArray(v) ? v.join(', ') : v
}

/**
 * Sends bytes [start, start + length) of fd: one buffer is read while the other is on its way to
 * the socket, and a buffer is reused only once the socket took it (the write callback). Nothing is
 * allocated per chunk: fs.createReadStream allocates a new buffer per read and, with the rest of
 * the CLI loaded, spent about as much CPU in garbage collection as in copying. A slow client holds
 * exactly two buffers: we read only when the socket accepted the last write (backpressure); a
 * client that stops reading is dropped by the server's idle timeout ('close' ends the loop).
 */
async function pumpFile(fd: number, start: number, length: number, res: ServerResponse, counter: {bytes: number}, bufBytes: number): Promise<void> {
  let gone = false
  const closed = new Promise<void>((resolve) => res.once('close', () => {
    gone = true
    resolve()
  }))
  const bufs = [Buffer.allocUnsafeSlow(Math.min(bufBytes, length)), Buffer.allocUnsafeSlow(Math.min(bufBytes, length))]
  const taken: Array<Promise<unknown>> = [Promise.resolve(), Promise.resolve()]
  let sent = 0
  for (let i = 0; sent < length && !gone; i ^= 1) {
    await Promise.race([taken[i], closed])
    if (gone) break
    const want = Math.min(bufs[i].length, length - sent)
    const {bytesRead} = await read(fd, bufs[i], 0, want, start + sent)
    // The file shrank under us (replaced by hand): the client gets a short body, never other bytes.
    if (bytesRead === 0 || gone) break
    const chunk = bytesRead === bufs[i].length ? bufs[i] : bufs[i].subarray(0, bytesRead)
    let accepted = true
    taken[i] = new Promise<void>((resolve) => {
      accepted = res.write(chunk, () => resolve())
    })
    sent += bytesRead
    counter.bytes = sent
    if (!accepted) await Promise.race([new Promise((resolve) => res.once('drain', resolve)), closed])
  }
  if (gone) return
  if (sent < length) {
    res.destroy()
    return
  }
  // 'finish' never comes for a socket destroyed meanwhile: 'close' does.
  await Promise.race([new Promise<void>((resolve) => res.end(() => resolve())), closed])
}
