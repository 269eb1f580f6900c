import net from 'node:net'
import type tls from 'node:tls'

import {BodyFeed} from './body-feed.js'
import type {Body} from './body.js'
import {tlsModuleNow} from './tls-on-demand.js'

/**
 * A small HTTP/1.1 GET client for file bodies, read with `onread`: the kernel copies each read
 * straight into one buffer per connection, which the consumer copies into its block. Measured on
 * these machines (1 GiB from nginx, copy into 4 MiB blocks, CPU per GiB): undici 1.8 s plain and
 * 1.9 s over TLS, this reader 0.5 s and 0.85 s (undici copies every byte into its wasm parser's
 * memory, then a fresh 64 KiB Buffer per read is allocated, pushed and collected). On 2 cores
 * that is most of a pull's wall time. undici stays for everything this client refuses.
 *
 * What it does: keep-alive per origin (a bounded idle pool; TLS sessions resumed), a bounded head
 * parser, Content-Length bodies, its own error codes. What it refuses with RawUnsupported, before a
 * body byte is handed over, so the caller asks again through undici: 1xx, chunked or otherwise
 * encoded transfers, a 2xx without a length, anything but HTTP/1.x.
 */

export interface RawReply {
  status: number
  headers: Record<string, string | undefined>
  body: Body
}

/** This reply needs what this client does not do; nothing of its body was handed over. */
export class RawUnsupported extends Error {
  override readonly name = 'RawUnsupported'
}

/** Our own transport errors; `code` is what networkError maps (HPE_* = malformed reply). */
export class RawHttpError extends Error {
  override readonly name = 'RawHttpError'
  constructor(
    message: string,
    readonly code: 'HPE_RAW_HEAD' | 'HPE_RAW_LENGTH' | 'ERAW_CLOSED' | 'ETIMEDOUT',
  ) {
    super(message)
  }
}

const READ_BYTES = 1024 * 1024
const MAX_HEAD_BYTES = 64 * 1024
const MAX_HEADERS = 200
const HEAD_END = Buffer.from('\r\n\r\n')
/** Idle connections kept per origin, and for how long. */
const MAX_IDLE_PER_ORIGIN = 32
const IDLE_MS = 30_000

export interface RawHttpOptions {
  /** Connect (TCP and TLS) within this long. */
  connectTimeoutMs: number
  /** Extra TLS options (tests: a throwaway CA). */
  tls?: tls.ConnectionOptions
}

type ReadHandler = (data: Buffer) => void

/** One connection: its read buffer, and the exchange it serves now (none while idle). */
class Conn {
  readonly buffer = Buffer.allocUnsafeSlow(READ_BYTES)
  socket!: net.Socket
  onData: ReadHandler | undefined
  onGone: ((error: Error) => void) | undefined
  /** A whole exchange went through it: a failure before any reply byte may be a stale keep-alive. */
  used = false
  gone = false
  /** One listener for the idle timeout, taken off when the connection is taken again (a new one per release piled up: a MaxListeners warning after 11 reuses, and a leak). */
  readonly idleTimeout = () => this.socket.destroy()

  constructor(readonly key: string) {}

  read(n: number): void {
    const data = this.buffer.subarray(0, n)
    if (this.onData) this.onData(data)
    // Bytes nobody asked for on an idle connection: it cannot be trusted with another request.
    else this.socket.destroy()
  }

  lost(error: Error): void {
    if (this.gone) return
    this.gone = true
    this.onGone?.(error)
  }
}

export class RawHttpClient {
  private readonly idle = new Map<string, Conn[]>()
  private readonly sessions = new Map<string, Buffer>()
  private readonly warming = new Set<string>()

  constructor(private readonly o: RawHttpOptions) {}

  /**
   * One GET. Resolves at the response head; the body is paused until pumped. A reused connection
   * that fails before any reply byte (the server closed it while idle) is replaced once.
   */
  async get(url: URL, headers: Record<string, string>, signal: AbortSignal | undefined, headersTimeoutMs: number): Promise<RawReply> {
    const request = requestText(url, headers)
    const key = `${url.protocol}//${url.host}`
    const pooled = this.takeIdle(key)
    if (pooled) {
      try {
        return await this.exchange(pooled, request, signal, headersTimeoutMs)
      } catch (error) {
        if (!(error instanceof StaleConnection)) throw error
      }
    }
    const conn = await this.connect(url, key, signal)
    return this.exchange(conn, request, signal, headersTimeoutMs).catch((error: unknown) => {
      throw error instanceof StaleConnection ? error.cause : error
    })
  }

  /**
   * Opens a connection (TCP and TLS) to `url`'s origin and keeps it idle for the next request: on
   * a long link the first file request then skips two or three round trips, paid while the hub
   * lists the files. Failures are silent (the request itself will meet them).
   */
  preconnect(url: URL): void {
    const key = `${url.protocol}//${url.host}`
    if ((this.idle.get(key)?.length ?? 0) > 0 || this.warming.has(key)) return
    this.warming.add(key)
    this.connect(url, key, undefined, true).then((conn) => this.release(conn), () => {}).finally(() => this.warming.delete(key))
  }

  /** Closes every idle connection. */
  close(): void {
    for (const list of this.idle.values()) for (const c of list) c.socket.destroy()
    this.idle.clear()
  }

  private takeIdle(key: string): Conn | undefined {
    const list = this.idle.get(key)
    while (list && list.length > 0) {
      const conn = list.pop()!
      if (!conn.gone && !conn.socket.destroyed) {
        conn.socket.setTimeout(0, conn.idleTimeout)
        conn.socket.ref()
        return conn
      }
    }
    return undefined
  }

  private release(conn: Conn): void {
    conn.onData = undefined
    conn.onGone = undefined
    const list = this.idle.get(conn.key) ?? []
    if (conn.gone || list.length >= MAX_IDLE_PER_ORIGIN) return void conn.socket.destroy()
    this.idle.set(conn.key, list)
    list.push(conn)
    conn.used = true
    conn.socket.unref()
    conn.socket.setTimeout(IDLE_MS, conn.idleTimeout)
    conn.socket.resume()
  }

  /** `background`: holds nothing open (a preconnect must not keep the process alive). */
  private connect(url: URL, key: string, signal: AbortSignal | undefined, background = false): Promise<Conn> {
    const conn = new Conn(key)
    const host = url.hostname.replace(/^\[(.*)\]$/, '$1')
    const port = Number(url.port) || (url.protocol === 'https:' ? 443 : 80)
    // Pauses are asked for with socket.pause() (which stops reading at once), never by returning false.
    const onread = {buffer: conn.buffer, callback: (n: number) => {
      conn.read(n)
      return true
    }}
    return new Promise<Conn>((resolve, reject) => {
      let socket: net.Socket
      const fail = (error: Error) => {
        clearTimeout(timer)
        signal?.removeEventListener('abort', onAbort)
        socket.destroy()
        reject(error)
      }
      const onAbort = () => fail(signal?.reason instanceof Error ? signal.reason : new Error('aborted'))
      const ready = () => {
        clearTimeout(timer)
        signal?.removeEventListener('abort', onAbort)
        socket.off('error', fail)
        resolve(conn)
      }
      if (url.protocol === 'https:') {
        socket = tlsModuleNow().connect({
          ...this.o.tls, host, port, onread, ALPNProtocols: ['http/1.1'],
          servername: net.isIP(host) ? undefined : host,
          session: this.sessions.get(key),
        } as tls.ConnectionOptions, ready)
        socket.on('session', (session: Buffer) => this.sessions.set(key, session))
      } else {
        socket = net.connect({host, port, onread}, ready)
      }
      conn.socket = socket
      socket.setNoDelay(true)
      socket.once('error', fail)
      socket.on('error', (error) => conn.lost(error))
      socket.on('close', () => conn.lost(new RawHttpError('Connection closed early.', 'ERAW_CLOSED')))
      const timer = setTimeout(() => fail(new RawHttpError(`Connecting to ${url.host} took longer than ${this.o.connectTimeoutMs} ms.`, 'ETIMEDOUT')), this.o.connectTimeoutMs)
      if (background) {
        socket.unref()
        timer.unref()
      }
      if (signal?.aborted) return onAbort()
      signal?.addEventListener('abort', onAbort, {once: true})
    })
  }

  private exchange(conn: Conn, request: string, signal: AbortSignal | undefined, headersTimeoutMs: number): Promise<RawReply> {
    return new Promise<RawReply>((resolve, reject) => {
      const {socket} = conn
      let head: Buffer = Buffer.alloc(0)
      let headed = false
      let remaining = 0
      let reusable = false
      let sawByte = false
      let ended = false
      const feed = new BodyFeed({
        pause: () => socket.pause(),
        resume: () => socket.resume(),
        abort: () => {
          if (!ended) socket.destroy()
        },
      })
      const stop = () => {
        clearTimeout(timer)
        signal?.removeEventListener('abort', onAbort)
      }
      const failHead = (error: Error) => {
        stop()
        conn.onData = undefined
        conn.onGone = undefined
        socket.destroy()
        reject(error)
      }
      const onAbort = () => {
        const reason = signal?.reason instanceof Error ? signal.reason : new Error('aborted')
        if (headed) feed.abort(reason)
        else failHead(reason)
      }
      const finishBody = () => {
        ended = true
        stop()
        if (reusable) this.release(conn)
        else {
          conn.onData = undefined
          conn.onGone = undefined
          socket.destroy()
        }
        feed.end()
      }
      const body = (data: Buffer) => {
        const n = Math.min(data.length, remaining)
        // Bytes past the announced length: the connection is out of step; never reuse it.
        if (data.length > n) reusable = false
        remaining -= n
        if (n > 0) feed.data(data.subarray(0, n))
        if (remaining === 0 && !ended) finishBody()
      }
      conn.onData = (data) => {
        sawByte = true
        if (headed) return body(data)
        const scanFrom = Math.max(0, head.length - 3)
        head = head.length === 0 ? Buffer.from(data) : Buffer.concat([head, data])
        const end = head.indexOf(HEAD_END, scanFrom)
        if (end < 0 ? head.length > MAX_HEAD_BYTES : end > MAX_HEAD_BYTES) return failHead(new RawHttpError(`Response head longer than ${MAX_HEAD_BYTES} bytes.`, 'HPE_RAW_HEAD'))
        if (end < 0) return
        let parsed: ParsedHead
        try {
          parsed = parseHead(head.subarray(0, end).toString('latin1'))
        } catch (error) {
          return failHead(error as Error)
        }
        const rest = head.subarray(end + HEAD_END.length)
        head = Buffer.alloc(0)
        if ('unsupported' in parsed) return failHead(new RawUnsupported(parsed.unsupported))
        headed = true
        clearTimeout(timer)
        remaining = parsed.length
        reusable = parsed.keepAlive
        // Paused until the consumer pumps (BodyFeed queues what is already here).
        socket.pause()
        resolve({status: parsed.status, headers: parsed.headers, body: feed.body})
        if (rest.length > 0) body(rest)
        else if (remaining === 0) finishBody()
      }
      conn.onGone = (error) => {
        if (ended) return
        if (!headed) {
          // A kept-alive connection the server closed while it was idle: not this request's fault.
          if (conn.used && !sawByte) return failHead(new StaleConnection(error))
          return failHead(error)
        }
        stop()
        feed.error(error)
      }
      const timer = setTimeout(() => failHead(new RawHttpError(`No response head within ${headersTimeoutMs} ms.`, 'ETIMEDOUT')), headersTimeoutMs)
      if (signal?.aborted) return onAbort()
      signal?.addEventListener('abort', onAbort, {once: true})
      if (conn.gone) return conn.onGone(new RawHttpError('Connection closed early.', 'ERAW_CLOSED'))
      socket.resume()
      socket.write(request)
    })
  }
}

class StaleConnection extends Error {
  constructor(override readonly cause: Error) {
    super(cause.message)
  }
}

function requestText(url: URL, headers: Record<string, string>): string {
  const lines = [`GET ${url.pathname || '/'}${url.search} HTTP/1.1`, `Host: ${url.host}`]
  const given = new Set(Object.keys(headers).map((k) => k.toLowerCase()))
  if (!given.has('user-agent')) lines.push('User-Agent: ms-resume')
  if (!given.has('accept')) lines.push('Accept: */*')
  for (const [name, value] of Object.entries(headers)) {
    // A line break would let a header value write a request of its own.
    if (!/^[!#$%&'*+.^_`|~0-9A-Za-z-]+$/.test(name) || /[\r\n\0]/.test(String(value))) throw new RawHttpError(`Refusing to send header ${JSON.stringify(name)}: not a valid header.`, 'HPE_RAW_HEAD')
    if (['host', 'connection', 'content-length', 'transfer-encoding'].includes(name.toLowerCase())) continue
    lines.push(`${name}: ${value}`)
  }
  return `${lines.join('\r\n')}\r\n\r\n`
}

type ParsedHead =
  | {status: number; headers: Record<string, string | undefined>; length: number; keepAlive: boolean}
  | {unsupported: string}

/** Status line and headers (names lower-cased, repeats joined with ", "), and how the body ends. */
export function parseHead(text: string): ParsedHead {
  const lines = text.split('\r\n')
  const m = /^HTTP\/1\.([01]) (\d{3})(?: .*)?$/.exec(lines[0] ?? '')
  if (!m) throw new RawHttpError(`Bad status line ${JSON.stringify((lines[0] ?? '').slice(0, 80))}.`, 'HPE_RAW_HEAD')
  if (lines.length - 1 > MAX_HEADERS) throw new RawHttpError(`More than ${MAX_HEADERS} response headers.`, 'HPE_RAW_HEAD')
  const status = Number(m[2])
  const headers: Record<string, string | undefined> = {}
  for (const line of lines.slice(1)) {
    const colon = line.indexOf(':')
    const name = line.slice(0, colon)
    if (colon <= 0 || !/^[!#$%&'*+.^_`|~0-9A-Za-z-]+$/.test(name)) throw new RawHttpError(`Bad header line ${JSON.stringify(line.slice(0, 80))}.`, 'HPE_RAW_HEAD')
    const key = name.toLowerCase()
    const value = line.slice(colon + 1).trim()
    headers[key] = headers[key] === undefined ? value : `${headers[key]}, ${value}`
  }
  if (status < 200) return {unsupported: `HTTP ${status}`}
  if (headers['transfer-encoding'] !== undefined) return {unsupported: `Transfer-Encoding: ${headers['transfer-encoding']}`}
  const keepAlive = m[1] === '1' && !/(^|,)\s*close\s*(,|$)/i.test(headers.connection ?? '')
  if (status === 204 || status === 304) return {status, headers, length: 0, keepAlive}
  const lengthText = headers['content-length']
  if (lengthText === undefined) return {unsupported: 'no Content-Length'}
  // Repeated identical values are allowed (RFC 9110 8.6); anything else is a malformed reply.
  const values = new Set(lengthText.split(',').map((v) => v.trim()))
  const only = values.size === 1 ? [...values][0] : ''
  if (!/^\d{1,15}$/.test(only)) throw new RawHttpError(`Bad Content-Length ${JSON.stringify(lengthText.slice(0, 40))}.`, 'HPE_RAW_LENGTH')
  return {status, headers, length: Number(only), keepAlive}
}
