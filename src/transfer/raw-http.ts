import net from 'node:net'
import type tls from 'node:tls'

import {BodyFeed, type FeedSource} from './body-feed.js'
import type {Body} from './body.js'
import {abortReason} from './abort-reason.js'
import {type Deadlined, DeadlineWatch} from './deadline-watch.js'
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
  /** How long an idle connection is kept (default IDLE_MS). */
  idleMs?: number
}

/** Idle connections are looked at this often (or at their idle time, if shorter); one idle longer is closed. */
const SWEEP_MS = 5_000

/** One connection: its read buffer, and the exchange it serves now (none while idle). */
class Conn {
  readonly buffer = Buffer.allocUnsafeSlow(READ_BYTES)
  socket!: net.Socket
  exchange: Exchange | undefined
  /** A whole exchange went through it: a failure before any reply byte may be a stale keep-alive. */
  used = false
  gone = false
  /** When it last went idle (performance.now()). */
  idleSince = 0

  constructor(readonly key: string) {}

  read(n: number): void {
    const data = this.buffer.subarray(0, n)
    if (this.exchange) this.exchange.data(data)
    // Bytes nobody asked for on an idle connection: it cannot be trusted with another request.
    else this.socket.destroy()
  }

  lost(error: Error): void {
    if (this.gone) return
    this.gone = true
    this.exchange?.lost(error)
  }
}

export class RawHttpClient {
  private readonly idle = new Map<string, Conn[]>()
  private readonly sessions = new Map<string, Buffer>()
  private readonly warming = new Set<string>()
  /** Exchanges in flight per abort signal: one listener per signal, not one per request. */
  private readonly bySignal = new WeakMap<AbortSignal, Set<Exchange>>()
  private sweeper: NodeJS.Timeout | undefined
  /** Exchanges waiting for their reply's head: one interval for all their deadlines. */
  readonly awaitingHead = new DeadlineWatch<Exchange>()

  private readonly idleMs: number

  constructor(private readonly o: RawHttpOptions) {
    this.idleMs = o.idleMs ?? IDLE_MS
  }

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
    clearInterval(this.sweeper)
    this.sweeper = undefined
  }

  private takeIdle(key: string): Conn | undefined {
    const list = this.idle.get(key)
    while (list && list.length > 0) {
      const conn = list.pop()!
      if (!conn.gone && !conn.socket.destroyed) {
        conn.socket.ref()
        return conn
      }
    }
    return undefined
  }

  /** Back to the pool (by its exchange): kept idleMs, unreferenced, read so that a close or stray bytes are seen. */
  release(conn: Conn): void {
    conn.exchange = undefined
    const list = this.idle.get(conn.key) ?? []
    if (conn.gone || list.length >= MAX_IDLE_PER_ORIGIN) return void conn.socket.destroy()
    this.idle.set(conn.key, list)
    list.push(conn)
    conn.used = true
    conn.idleSince = performance.now()
    conn.socket.unref()
    conn.socket.resume()
    // One timer for the pool, not one per connection re-armed at every release.
    this.sweeper ??= setInterval(() => this.sweep(), Math.min(SWEEP_MS, this.idleMs)).unref()
  }

  private sweep(): void {
    const now = performance.now()
    let left = 0
    for (const [key, list] of this.idle) {
      const kept: Conn[] = []
      for (const c of list) {
        if (c.gone || c.socket.destroyed) continue
        if (now - c.idleSince < this.idleMs) kept.push(c)
        else c.socket.destroy()
      }
      if (kept.length > 0) this.idle.set(key, kept)
      else this.idle.delete(key)
      left += kept.length
    }
    if (left === 0) {
      clearInterval(this.sweeper)
      this.sweeper = undefined
    }
  }

  /** Exchanges on `signal` are aborted with it (one listener per signal for the client's life). */
  watch(signal: AbortSignal, exchange: Exchange): void {
    let live = this.bySignal.get(signal)
    if (!live) {
      const set = new Set<Exchange>()
      live = set
      this.bySignal.set(signal, set)
      signal.addEventListener('abort', () => {
        for (const e of [...set]) e.signalled()
      }, {once: true})
    }
    live.add(exchange)
  }

  unwatch(signal: AbortSignal, exchange: Exchange): void {
    this.bySignal.get(signal)?.delete(exchange)
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
      const onAbort = () => fail(abortReason(signal))
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
      const exchange = new Exchange(this, conn, signal, resolve, reject)
      if (signal?.aborted) return exchange.failHead(abortReason(signal))
      if (conn.gone) return exchange.lost(new RawHttpError('Connection closed early.', 'ERAW_CLOSED'))
      exchange.send(request, headersTimeoutMs)
    })
  }
}

/**
 * One request and its reply on a connection: the head parsed as it arrives, then the body handed to
 * a BodyFeed. An object with methods rather than a dozen closures per request (3.5 KB each; with
 * two requests per small file, a large share of what the garbage collector did).
 */
class Exchange implements FeedSource, Deadlined {
  /** Head bytes from earlier reads (a head split across reads); undefined while none. */
  private head: Buffer | undefined
  private headed = false
  private remaining = 0
  private reusable = false
  private sawByte = false
  private ended = false
  /** When the head must have arrived (performance.now()): see DeadlineWatch. */
  deadline = 0
  private headTimeoutMs = 0
  private readonly feed: BodyFeed

  constructor(
    private readonly client: RawHttpClient,
    private readonly conn: Conn,
    private readonly signal: AbortSignal | undefined,
    private readonly resolve: (reply: RawReply) => void,
    private readonly reject: (error: Error) => void,
  ) {
    this.feed = new BodyFeed(this, 'now')
  }

  send(request: string, headersTimeoutMs: number): void {
    this.conn.exchange = this
    this.headTimeoutMs = headersTimeoutMs
    this.deadline = performance.now() + headersTimeoutMs
    this.client.awaitingHead.add(this, headersTimeoutMs)
    if (this.signal) this.client.watch(this.signal, this)
    this.conn.socket.resume()
    this.conn.socket.write(request)
  }

  // FeedSource: how the body steers the socket.
  pause(): void {
    this.conn.socket.pause()
  }

  resume(): void {
    this.conn.socket.resume()
  }

  /** The consumer does not want the rest (STOP, destroy, its own failure). */
  abort(): void {
    if (!this.ended) this.conn.socket.destroy()
  }

  /** The abort signal fired. */
  signalled(): void {
    const error = abortReason(this.signal)
    if (this.headed) this.feed.abort(error)
    else this.failHead(error)
  }

  data(data: Buffer): void {
    this.sawByte = true
    if (this.headed) return this.body(data)
    const earlier = this.head
    const head = earlier === undefined ? data : Buffer.concat([earlier, data])
    const end = head.indexOf(HEAD_END, earlier === undefined ? 0 : Math.max(0, earlier.length - 3))
    if (end < 0 ? head.length > MAX_HEAD_BYTES : end > MAX_HEAD_BYTES) return this.failHead(new RawHttpError(`Response head longer than ${MAX_HEAD_BYTES} bytes.`, 'HPE_RAW_HEAD'))
    if (end < 0) {
      // The connection's buffer is read into again: what is kept is copied.
      this.head = earlier === undefined ? Buffer.from(data) : head
      return
    }
    this.head = undefined
    let parsed: ParsedHead
    try {
      parsed = parseHead(head.toString('latin1', 0, end))
    } catch (error) {
      return this.failHead(error as Error)
    }
    if ('unsupported' in parsed) return this.failHead(new RawUnsupported(parsed.unsupported))
    const rest = head.subarray(end + HEAD_END.length)
    this.headed = true
    this.client.awaitingHead.delete(this)
    this.remaining = parsed.length
    this.reusable = parsed.keepAlive
    // Paused until the consumer pumps (BodyFeed queues what is already here), unless the whole
    // body is already here: then the connection goes straight back to the pool.
    if (rest.length < this.remaining) this.conn.socket.pause()
    this.resolve({status: parsed.status, headers: parsed.headers, body: this.feed.body})
    if (rest.length > 0) this.body(rest)
    else if (this.remaining === 0) this.finishBody()
  }

  lost(error: Error): void {
    if (this.ended) return
    if (!this.headed) {
      // A kept-alive connection the server closed while it was idle: not this request's fault.
      if (this.conn.used && !this.sawByte) return this.failHead(new StaleConnection(error))
      return this.failHead(error)
    }
    this.stop()
    this.feed.error(error)
  }

  failHead(error: Error): void {
    this.stop()
    this.conn.exchange = undefined
    this.conn.socket.destroy()
    this.reject(error)
  }

  private body(data: Buffer): void {
    const n = Math.min(data.length, this.remaining)
    // Bytes past the announced length: the connection is out of step; never reuse it.
    if (data.length > n) this.reusable = false
    this.remaining -= n
    if (n > 0) this.feed.data(n < data.length ? data.subarray(0, n) : data, false, this.remaining === 0)
    if (this.remaining === 0 && !this.ended) this.finishBody()
  }

  private finishBody(): void {
    this.ended = true
    this.stop()
    if (this.reusable) this.client.release(this.conn)
    else {
      this.conn.exchange = undefined
      this.conn.socket.destroy()
    }
    this.feed.end()
  }

  /** No head by the deadline. */
  expire(): void {
    this.failHead(new RawHttpError(`No response head within ${this.headTimeoutMs} ms.`, 'ETIMEDOUT'))
  }

  private stop(): void {
    this.client.awaitingHead.delete(this)
    if (this.signal) this.client.unwatch(this.signal, this)
  }
}

class StaleConnection extends Error {
  constructor(override readonly cause: Error) {
    super(cause.message)
  }
}

const TOKEN = /^[!#$%&'*+.^_`|~0-9A-Za-z-]+$/
// eslint-disable-next-line no-control-regex
const LINE_BREAK_OR_NUL = /[\r\n\0]/
/** Headers this client writes itself (Host) or that would change how the request is framed. */
const NOT_PASSED = new Set(['host', 'connection', 'content-length', 'transfer-encoding'])

function requestText(url: URL, headers: Record<string, string>): string {
  let given = ''
  let agent = false
  let accept = false
  for (const name of Object.keys(headers)) {
    const value = String(headers[name])
    // A line break would let a header value write a request of its own.
    if (!TOKEN.test(name) || LINE_BREAK_OR_NUL.test(value)) throw new RawHttpError(`Refusing to send header ${JSON.stringify(name)}: not a valid header.`, 'HPE_RAW_HEAD')
    const lower = headerKey(name)
    if (lower === 'user-agent') agent = true
    else if (lower === 'accept') accept = true
    else if (NOT_PASSED.has(lower)) continue
    given += `${name}: ${value}\r\n`
  }
  return `GET ${url.pathname || '/'}${url.search} HTTP/1.1\r\nHost: ${url.host}\r\n${agent ? '' : 'User-Agent: ms-resume\r\n'}${accept ? '' : 'Accept: */*\r\n'}${given}\r\n`
}

/** Header names as met on the wire, lower-cased: the same dozen names come in every reply. */
const headerKeys = new Map<string, string>()

/** `name` lower-cased (a valid token; checked by the caller or here). */
function headerKey(name: string): string {
  let key = headerKeys.get(name)
  if (key === undefined) {
    key = name.toLowerCase()
    if (headerKeys.size < 1000) headerKeys.set(name, key)
  }
  return key
}

type ParsedHead =
  | {status: number; headers: Record<string, string | undefined>; length: number; keepAlive: boolean}
  | {unsupported: string}

const DIGITS = /^\d{1,15}$/
const isOws = (c: number): boolean => c === 0x20 || c === 0x09

/** Status line and headers (names lower-cased, repeats joined with ", "), and how the body ends. */
export function parseHead(text: string): ParsedHead {
  let eol = text.indexOf('\r\n')
  if (eol < 0) eol = text.length
  const statusLine = text.slice(0, eol)
  const m = /^HTTP\/1\.([01]) (\d{3})(?: .*)?$/.exec(statusLine)
  if (!m) throw new RawHttpError(`Bad status line ${JSON.stringify(statusLine.slice(0, 80))}.`, 'HPE_RAW_HEAD')
  const status = Number(m[2])
  const headers: Record<string, string | undefined> = {}
  let count = 0
  for (let at = eol + 2; at <= text.length; at = eol + 2) {
    eol = text.indexOf('\r\n', at)
    if (eol < 0) eol = text.length
    if (++count > MAX_HEADERS) throw new RawHttpError(`More than ${MAX_HEADERS} response headers.`, 'HPE_RAW_HEAD')
    const colon = text.indexOf(':', at)
    const name = colon > at && colon < eol ? text.slice(at, colon) : ''
    // A name seen before was a valid token then.
    let key = headerKeys.get(name)
    if (key === undefined) {
      if (!TOKEN.test(name)) throw new RawHttpError(`Bad header line ${JSON.stringify(text.slice(at, Math.min(eol, at + 80)))}.`, 'HPE_RAW_HEAD')
      key = headerKey(name)
    }
    // Optional whitespace around the value (RFC 9110 5.5): cut in one slice, not slice then trim.
    let from = colon + 1
    let to = eol
    while (from < to && isOws(text.charCodeAt(from))) from++
    while (to > from && isOws(text.charCodeAt(to - 1))) to--
    const value = text.slice(from, to)
    const before = headers[key]
    headers[key] = before === undefined ? value : `${before}, ${value}`
  }
  if (status < 200) return {unsupported: `HTTP ${status}`}
  if (headers['transfer-encoding'] !== undefined) return {unsupported: `Transfer-Encoding: ${headers['transfer-encoding']}`}
  const keepAlive = m[1] === '1' && !/(^|,)\s*close\s*(,|$)/i.test(headers.connection ?? '')
  if (status === 204 || status === 304) return {status, headers, length: 0, keepAlive}
  const lengthText = headers['content-length']
  if (lengthText === undefined) return {unsupported: 'no Content-Length'}
  if (DIGITS.test(lengthText)) return {status, headers, length: Number(lengthText), keepAlive}
  // Repeated identical values are allowed (RFC 9110 8.6); anything else is a malformed reply.
  const values = new Set(lengthText.split(',').map((v) => v.trim()))
  const only = values.size === 1 ? [...values][0] : ''
  if (!DIGITS.test(only)) throw new RawHttpError(`Bad Content-Length ${JSON.stringify(lengthText.slice(0, 40))}.`, 'HPE_RAW_LENGTH')
  return {status, headers, length: Number(only), keepAlive}
}
