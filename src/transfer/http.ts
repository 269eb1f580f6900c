import http from 'node:http'
import {promisify} from 'node:util'
import type {Readable} from 'node:stream'
import zlib from 'node:zlib'
import type {AxiosResponse} from 'axios'
import type {Dispatcher} from 'undici'

import {MsrError} from '../errors.js'
import {JsonItemScanner, parseWithItems} from '../json-items.js'
import {abortReason} from './abort-reason.js'
import {parseRetryAfterMs} from './retry-policy.js'
import {httpsModuleNow} from './tls-on-demand.js'

/** A listing of 100,000 files is about 35 MB of JSON; far more is not a listing. */
export const MAX_JSON_BYTES = 256 * 1024 * 1024

const tooLarge = (url: URL, cause?: unknown) => new MsrError('E_PROTOCOL', `The reply from ${url.origin} is larger than ${MAX_JSON_BYTES} bytes.`, {cause})

const DECODERS: Record<string, (data: Buffer, o: zlib.ZlibOptions & zlib.BrotliOptions) => Promise<Buffer>> = {
  gzip: promisify(zlib.gunzip),
  deflate: promisify(zlib.inflate),
  br: promisify(zlib.brotliDecompress),
}

const LOOPBACK = new Set(['127.0.0.1', 'localhost', '[::1]', '::1'])
const PROXY_VARS = ['http_proxy', 'https_proxy', 'HTTP_PROXY', 'HTTPS_PROXY']
const httpAgent = new http.Agent({keepAlive: true, maxSockets: 64})
let httpsAgentMade: import('node:https').Agent | undefined
const httpsAgent = () => (httpsAgentMade ??= new (httpsModuleNow().Agent)({keepAlive: true, maxSockets: 64}))

interface Reply {
  status: number
  headers: Record<string, string | undefined>
  /** axios's decoded (no content-encoding left in `headers`); the dispatcher's as received, decoded by decode(). */
  body: Buffer
  /** The body already parsed as it arrived (ItemCollector), instead of `body`; absent when it was not JSON. */
  parsed?: {json: unknown}
}

type GetOptions = {signal?: AbortSignal; timeoutMs: number; maxRetryAfterMs: number; items?: JsonItems}

/**
 * JSON GET against the hub API (listing, revisions), on axios, the product's chosen client for the
 * API. axios is imported on the first call (a lazy require in the bundle), so that a command that
 * never asks the hub anything never initialises it.
 *
 * Through a proxy (HTTPS_PROXY / HTTP_PROXY apply, NO_PROXY honoured, loopback never), the request
 * goes on undici's EnvHttpProxyAgent, the dispatcher that carries the file bodies, not on axios:
 * axios before 1.16 sent an HTTPS request to the proxy as plain HTTP instead of tunnelling it with
 * CONNECT (axios issue #4531, fixed by its PR #10858), and even now it has its own proxy code
 * (proxy-from-env's NO_PROXY rules, https-proxy-agent's tunnel): one proxy implementation for the
 * API and the bodies means a proxy set-up that lets the listing through lets the files through too,
 * and the other way round.
 *
 * Redirects are not followed: the status goes back to the caller, as 401/403/404 do; other
 * statuses >= 400 throw with a retry verdict.
 */
export async function getJson<T>(url: string, headers: Record<string, string>, opts: GetOptions): Promise<{status: number; body: T}> {
  const target = new URL(url)
  const all = {Accept: 'application/json', 'Accept-Encoding': 'gzip, deflate, br', ...headers}
  let res: Reply
  try {
    if (!LOOPBACK.has(target.hostname) && PROXY_VARS.some((name) => process.env[name])) {
      const {dispatcherFor} = await import('./http-body.js')
      res = await getViaDispatcher(await dispatcherFor(target), target, all, opts)
    } else {
      res = await getWithAxios(target, all, opts)
    }
  } catch (error) {
    // Ours (a body over the bound, one that does not decode) as it is; a cancel as the signal's reason.
    throw error instanceof MsrError && !opts.signal?.aborted ? error : networkError(error, target, opts.signal)
  }
  if (res.status >= 400 && res.status !== 404 && res.status !== 401 && res.status !== 403) {
    throw statusError(res.status, res.headers, target, false, opts.maxRetryAfterMs)
  }
  res = await decode(res, target)
  const encoding = (res.headers['content-encoding'] ?? 'identity').trim().toLowerCase()
  if (encoding !== 'identity') {
    throw new MsrError('E_PROTOCOL', `Malformed reply from ${target.origin}: unknown content encoding ${encoding}.`, {retryable: true})
  }
  const bytes = res.body
  let body: T
  try {
    body = (res.parsed ? res.parsed.json : opts.items ? parseWithItems(bytes, opts.items.path, opts.items.each) : JSON.parse(bytes.toString('utf8'))) as T
  } catch {
    // Not JSON (an HTML error page, a redirect body): the caller finds no envelope in it.
    body = bytes.toString('utf8') as T
  }
  return {status: res.status, body}
}

/** The array at `path` (object keys) handed to `each` element by element, and left empty in the body. */
export interface JsonItems {
  path: string[]
  each: (item: unknown) => void
}

const everyStatus = (): boolean => true

async function getWithAxios(url: URL, headers: Record<string, string>, opts: GetOptions): Promise<Reply> {
  const {default: axios} = await import('axios')
  let res: AxiosResponse<Readable>
  try {
    res = await axios.request<Readable>({
      method: 'GET',
      url: url.href,
      // Node's http/https, never the fetch adapter (its probe would load Node's bundled undici).
      adapter: 'http',
      headers,
      // A stream into our Collector, not 'arraybuffer': axios gathers an arraybuffer body in pieces
      // and joins them, twice a 35 MB listing at once, and the heap never gave the pieces' memory
      // back (a pull of 100,000 files held 190 MiB from the listing on, 128 MiB with one buffer).
      responseType: 'stream',
      // gzip, deflate and br are decoded by axios as the body arrives; the Collector bounds the
      // decoded bytes, so a small compressed reply cannot make us hold more than MAX_JSON_BYTES.
      decompress: true,
      maxBodyLength: MAX_JSON_BYTES,
      // A redirect (and any status) goes back to the caller as it is: Node's own http, no follow-redirects.
      maxRedirects: 0,
      // A function of the module, not a closure: axios keeps its config (on a kept-alive socket), and a
      // closure here would keep this call's context with it, and through `opts` the caller's items
      // callback (a listing's 100,000 entries).
      validateStatus: everyStatus,
      // The reply's head within timeoutMs (connecting included), then no body byte for timeoutMs: the socket's idle timeout.
      timeout: opts.timeoutMs,
      signal: opts.signal,
      httpAgent,
      // Made (and TLS loaded) for the first https: request only.
      ...(url.protocol === 'https:' ? {httpsAgent: httpsAgent()} : {}),
      // Proxies are getJson's business (above): axios must not read HTTP(S)_PROXY on its own.
      proxy: false,
    })
  } catch (error) {
    throw axiosFailure(error, url)
  }
  const head = normaliseHeaders(res.headers as Record<string, unknown>)
  // The announced length is the body's only when nothing was decoded (axios drops content-encoding
  // from the headers it hands over; the raw ones still have it).
  const raw = (res.request as {res?: {rawHeaders?: string[]}} | undefined)?.res?.rawHeaders ?? []
  const encoded = raw.some((name, i) => i % 2 === 0 && name.toLowerCase() === 'content-encoding')
  // A listing (a 2xx reply the caller wants element by element) is parsed as it arrives, never held whole.
  const body = opts.items && res.status >= 200 && res.status < 300
    ? new ItemCollector(opts.items)
    : new Collector(encoded ? undefined : head['content-length'])
  const stream = res.data
  await new Promise<void>((resolve, reject) => {
    // No body byte for timeoutMs: axios's timeout ends with the head once the body is a stream.
    // A cancel through the signal: axios destroys the stream (an 'error' here; networkError gives the reason).
    let idle: NodeJS.Timeout | undefined
    const fail = (error: unknown) => {
      clearTimeout(idle)
      reject(error)
      stream.destroy()
    }
    const arm = () => {
      clearTimeout(idle)
      idle = setTimeout(() => fail(Object.assign(new Error('timed out'), {code: 'ETIMEDOUT'})), opts.timeoutMs)
    }
    arm()
    stream.on('data', (chunk: Buffer) => {
      const tooLong = body.add(chunk, url)
      if (tooLong) fail(tooLong)
      else arm()
    })
    stream.once('end', () => {
      clearTimeout(idle)
      resolve()
    })
    stream.once('error', (error) => fail(axiosFailure(error, url)))
    stream.once('close', () => fail(Object.assign(new Error('the connection closed before the reply was complete'), {code: 'ECONNRESET'})))
  })
  return body instanceof ItemCollector
    ? {status: res.status, headers: head, body: Buffer.alloc(0), parsed: body.parsed()}
    : {status: res.status, headers: head, body: body.bytes()}
}

/** The failures of axios's own making, in our terms; the others (socket, timeout, parser) keep their code for networkError. */
function axiosFailure(error: unknown, url: URL): unknown {
  const e = error as {code?: string; message?: string; cause?: {code?: string}}
  // A body that does not decode (bad gzip/deflate/br data, cut short): zlib's error, with its code.
  const zcode = e?.code ?? e?.cause?.code ?? ''
  if (zcode.startsWith('Z_') || zcode.startsWith('ERR__ERROR') || zcode.startsWith('ERR_BROTLI')) {
    return new MsrError('E_PROTOCOL', `Malformed reply from ${url.origin}: ${e.message}.`, {retryable: true, cause: error})
  }
  return error
}

/** A proxied reply decoded as axios decodes a direct one (a direct one has no content-encoding left), with the same bound on the decoded bytes. */
async function decode(res: Reply, url: URL): Promise<Reply> {
  const encoding = (res.headers['content-encoding'] ?? 'identity').trim().toLowerCase()
  if (encoding === 'identity') return res
  const run = DECODERS[encoding]
  if (!run) return res
  let body: Buffer
  try {
    body = await run(res.body, {maxOutputLength: MAX_JSON_BYTES + 1})
  } catch (error) {
    if ((error as {code?: string}).code === 'ERR_BUFFER_TOO_LARGE') throw tooLarge(url, error)
    throw new MsrError('E_PROTOCOL', `Malformed reply from ${url.origin}: ${(error as Error).message}.`, {retryable: true, cause: error})
  }
  if (body.length > MAX_JSON_BYTES) throw tooLarge(url)
  const headers = {...res.headers}
  delete headers['content-encoding']
  return {...res, headers, body}
}

/**
 * Collects a body of at most MAX_JSON_BYTES (a longer one fails the request), into one buffer of
 * the announced length when there is one: pieces and their concatenation were twice a 35 MB listing.
 */
class Collector {
  private parts: Buffer[] = []
  private whole: Buffer | undefined
  private total = 0

  constructor(contentLength?: string) {
    const length = Number(contentLength)
    if (contentLength !== undefined && Number.isSafeInteger(length) && length > 0 && length <= MAX_JSON_BYTES) this.whole = Buffer.allocUnsafe(length)
  }

  add(chunk: Buffer, url: URL): Error | undefined {
    if (this.total + chunk.length > MAX_JSON_BYTES) return tooLarge(url)
    if (this.whole && this.total + chunk.length <= this.whole.length) chunk.copy(this.whole, this.total)
    else {
      // Longer than announced: pieces from here on (the parser decides what the body is worth).
      if (this.whole) this.parts = [this.whole.subarray(0, this.total)]
      this.whole = undefined
      this.parts.push(chunk)
    }
    this.total += chunk.length
    return undefined
  }

  /**
   * The body, handed over: the collector lets go of it, since whatever still holds the collector
   * (a listener's closure on a keep-alive socket's reply) must not keep a 35 MB listing alive.
   */
  bytes(): Buffer {
    const bytes = this.whole ? this.whole.subarray(0, this.total) : Buffer.concat(this.parts, this.total)
    this.whole = undefined
    this.parts = []
    return bytes
  }
}

/**
 * A Collector's bound, but the body goes through a JsonItemScanner as it arrives: elements to the
 * caller, the rest kept. Bytes that turn out not to be JSON are counted and dropped (the caller then
 * finds no envelope, as in a body that does not parse).
 */
class ItemCollector {
  private readonly scanner: JsonItemScanner
  private total = 0
  private notJson = false

  constructor(items: JsonItems) {
    this.scanner = new JsonItemScanner(items.path, items.each)
  }

  add(chunk: Buffer, url: URL): Error | undefined {
    if (this.total + chunk.length > MAX_JSON_BYTES) return tooLarge(url)
    this.total += chunk.length
    if (this.notJson) return undefined
    try {
      this.scanner.push(chunk)
    } catch {
      this.notJson = true
    }
    return undefined
  }

  /** The document, or undefined when the bytes were not JSON (the reply's body is then empty: no envelope). */
  parsed(): {json: unknown} | undefined {
    if (this.notJson) return undefined
    try {
      return {json: this.scanner.end()}
    } catch {
      return undefined
    }
  }
}

function getViaDispatcher(dispatcher: Dispatcher, url: URL, headers: Record<string, string>, opts: {signal?: AbortSignal; timeoutMs: number}): Promise<Reply> {
  return new Promise((resolve, reject) => {
    let body = new Collector()
    let status = 0
    let head: Record<string, string | undefined> = {}
    let controller: Dispatcher.DispatchController | undefined
    const onAbort = () => controller?.abort(abortReason(opts.signal))
    const done = (error?: Error) => {
      opts.signal?.removeEventListener('abort', onAbort)
      if (error) reject(error)
      else resolve({status, headers: head, body: body.bytes()})
    }
    if (opts.signal?.aborted) return reject(opts.signal.reason)
    opts.signal?.addEventListener('abort', onAbort, {once: true})
    dispatcher.dispatch({
      origin: url.origin,
      path: `${url.pathname || '/'}${url.search}`,
      method: 'GET',
      headers,
      headersTimeout: opts.timeoutMs,
      bodyTimeout: opts.timeoutMs,
    }, {
      onRequestStart(c) {
        controller = c
        if (opts.signal?.aborted) onAbort()
      },
      onResponseStart(_c, statusCode, rawHeaders) {
        status = statusCode
        head = normaliseHeaders(rawHeaders as Record<string, unknown>)
        body = new Collector(head['content-length'])
      },
      onResponseData(c, chunk) {
        const tooLong = body.add(chunk, url)
        if (tooLong) c.abort(tooLong)
      },
      onResponseEnd() {
        done()
      },
      onResponseError(_c, error) {
        done(error)
      },
    })
  })
}

function normaliseHeaders(raw: Record<string, unknown>): Record<string, string | undefined> {
  const out: Record<string, string | undefined> = {}
  for (const [k, v] of Object.entries(raw ?? {})) {
    out[k.toLowerCase()] = Array.isArray(v) ? v.join(', ') : v === undefined || v === null ? undefined : String(v)
  }
  return out
}

/** `redirected`: the URL was reached through a redirect (a signed CDN/blob URL), not the hub API URL itself. */
export function statusError(status: number, headers: Record<string, string | undefined>, url: URL, redirected: boolean, maxRetryAfterMs: number): MsrError {
  const retryAfterMs = parseRetryAfterMs(headers['retry-after'], Date.now(), maxRetryAfterMs)
  if (status === 429 || status === 503 || status === 502 || status === 504 || status === 500 || status === 408) {
    return new MsrError('E_NETWORK', `HTTP ${status} from ${url.origin}.`, {retryable: true, retryAfterMs, hint: 'The server is busy; run again later.'})
  }
  if ((status === 403 || status === 401) && redirected) {
    // A signed CDN URL expired (about an hour on some mirrors): resolve again through the hub. The
    // blob host may share the hub's origin, so "reached by a redirect" decides, not the origin:
    // keying on cross-origin made an expired same-origin signature a fatal E_AUTH mid-file.
    return new MsrError('E_NETWORK', `HTTP ${status} from the download host ${url.origin} (signed URL expired?).`, {retryable: true})
  }
  if (status === 401 || status === 403) {
    return new MsrError('E_AUTH', `HTTP ${status}: the hub refused access.`, {
      hint: 'Pass a valid token with --token or MODELSCOPE_API_TOKEN, and check that it may read this model.',
    })
  }
  if (status === 404 || status === 410) {
    return new MsrError('E_NOT_FOUND', `HTTP ${status}: not found at ${url.origin}${url.pathname}.`, {hint: 'Check the model id, --revision and the file name.'})
  }
  if (status === 416) {
    return new MsrError('E_PROTOCOL', `HTTP 416 from ${url.origin}.`, {retryable: true, found: headers['content-range']})
  }
  return new MsrError('E_REMOTE', `Unexpected HTTP ${status} from ${url.origin}.`, {retryable: status >= 500})
}

export function networkError(error: unknown, url: URL, signal?: AbortSignal): unknown {
  if (signal?.aborted) return signal.reason instanceof Error ? signal.reason : error
  const e = error as {code?: string; message?: string}
  const code = e?.code ?? ''
  if (['ECONNABORTED', 'ETIMEDOUT', 'UND_ERR_CONNECT_TIMEOUT', 'UND_ERR_HEADERS_TIMEOUT', 'UND_ERR_BODY_TIMEOUT'].includes(code)) {
    return new MsrError('E_TIMEOUT', `Timed out waiting for ${url.origin}.`, {retryable: true, cause: error})
  }
  if (code.startsWith('HPE_') || code === 'UND_ERR_RES_CONTENT_LENGTH_MISMATCH' || (error as Error)?.name === 'HTTPParserError' || /parse error|does not match the HTTP\/1\.1 protocol/i.test(e?.message ?? '')) {
    return new MsrError('E_PROTOCOL', `Malformed HTTP reply from ${url.origin}: ${e.message}.`, {retryable: true, cause: error})
  }
  if (code === 'ENOTFOUND' || code === 'EAI_AGAIN') {
    return new MsrError('E_NETWORK', `Cannot resolve ${url.hostname}.`, {retryable: true, cause: error, hint: 'Check the network and --endpoint.'})
  }
  return new MsrError('E_NETWORK', `Network error talking to ${url.origin}: ${e?.message ?? String(error)}.`, {retryable: true, cause: error, hint: 'Check the network; run again to resume.'})
}
