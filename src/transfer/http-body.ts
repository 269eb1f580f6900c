import type {Agent, Dispatcher} from 'undici'

import {knobs} from '../config.js'
import {abortReason} from './abort-reason.js'
import type {Body, Take} from './body.js'
import {BodyFeed} from './body-feed.js'
import {RawHttpClient, RawUnsupported} from './raw-http.js'
import {networkError, statusError} from './http.js'
import {checkRedirect, MAX_REDIRECTS} from './redirect-policy.js'

/**
 * File bodies travel on undici: one keep-alive pool per origin (TLS sessions are reused, so a
 * 16 MiB piece on a 100 ms link does not pay a new handshake), and its dispatch handler API, which
 * pauses the socket itself when we ask. Proxies come from HTTPS_PROXY / HTTP_PROXY / NO_PROXY
 * (EnvHttpProxyAgent); loopback never goes through one. The API (listing, revisions) is in http.ts.
 */
const agentOptions = {
  keepAliveTimeout: 30_000,
  keepAliveMaxTimeout: 120_000,
  // Idle body reads are judged by our StallDetector, which does not count our own pauses.
  bodyTimeout: 0,
  connect: {timeout: knobs.connectTimeoutMs},
}
let direct: Agent | undefined
let proxied: Dispatcher | undefined

/** Whether requests to `url` go through a proxy (HTTP(S)_PROXY set; loopback never). */
function usesProxy(url: URL): boolean {
  const loopback = ['127.0.0.1', 'localhost', '[::1]', '::1'].includes(url.hostname)
  return !loopback && ['http_proxy', 'https_proxy', 'HTTP_PROXY', 'HTTPS_PROXY'].some((name) => process.env[name])
}

/**
 * The process-wide undici dispatcher for `url`. undici is loaded on the first call: a pull whose
 * bodies all go through the onread reader (no proxy), or a no-op pull, never initialises it.
 */
export async function dispatcherFor(url: URL): Promise<Dispatcher> {
  const {Agent, EnvHttpProxyAgent} = await import('undici')
  if (!usesProxy(url)) return (direct ??= new Agent(agentOptions))
  return (proxied ??= new EnvHttpProxyAgent(agentOptions))
}

export interface OpenOptions {
  url: string
  /** Request headers that travel every hop (Range, Accept-Encoding). */
  headers: Record<string, string>
  /** Credentials per hop: the hub gives them only to its own origin. */
  headersFor: (url: URL) => Record<string, string>
  signal?: AbortSignal
  /** Connect + response headers. */
  headersTimeoutMs: number
  maxRedirects?: number
  /** Cap for Retry-After. */
  maxRetryAfterMs: number
  /** Another dispatcher than the process-wide pools (tests: one that trusts a throwaway CA). */
  dispatcher?: Dispatcher
  /**
   * The onread reader for bodies: by default the process-wide one, when no proxy applies, no
   * dispatcher is given and MS_RESUME_HTTP_CLIENT is not `undici`; false: undici only.
   */
  raw?: RawHttpClient | false
  /**
   * `url` is where an earlier request was redirected (a signed CDN URL kept for the next pieces):
   * a 401/403 there means the signature expired (retryable), as on any redirect target.
   */
  resolvedUrl?: boolean
}

export interface OpenedResponse {
  status: number
  headers: Record<string, string | undefined>
  body: Body
  url: URL
}

/**
 * Opens a GET and follows redirects ourselves, so that each hop is checked: only http(s), never
 * https→http, at most `maxRedirects`, and credentials only where `headersFor` allows. Error statuses
 * (but 416) become MsrErrors with a retry verdict.
 */
export async function openBody(opts: OpenOptions): Promise<OpenedResponse> {
  const first = new URL(opts.url)
  let url = first
  const maxRedirects = opts.maxRedirects ?? MAX_REDIRECTS
  for (let hop = 0; ; hop++) {
    let reply: Reply
    try {
      reply = await request(url, {...opts.headers, ...opts.headersFor(url)}, opts)
    } catch (error) {
      throw networkError(error, url, opts.signal)
    }
    const {status, headers, body} = reply
    if (status >= 300 && status < 400 && status !== 304) {
      // Read a short redirect body to its end before the next hop: the socket then goes back to
      // the pool and carries that hop (else every piece's two requests took two connections).
      const length = Number(headers['content-length'])
      if (Number.isFinite(length) && length <= 64 * 1024) {
        await body.pump(() => undefined).catch(() => {})
      } else {
        body.destroy()
      }
      url = checkRedirect(url, headers.location, hop, maxRedirects)
      continue
    }
    // A 416 goes back to the caller: only it knows the listed size (judgeRangeReply).
    if (status >= 400 && status !== 416) {
      body.destroy()
      throw statusError(status, headers, url, hop > 0 || Boolean(opts.resolvedUrl), opts.maxRetryAfterMs)
    }
    return {status, headers, body: wrapErrors(body, url, opts.signal), url}
  }
}

/**
 * Warms a connection to `url`'s origin for the first file request, when the onread reader will
 * carry it (no proxy, MS_RESUME_HTTP_CLIENT not `undici`).
 */
export function preconnect(url: string): void {
  let target: URL
  try {
    target = new URL(url)
  } catch {
    return
  }
  if (!['http:', 'https:'].includes(target.protocol) || usesProxy(target) || knobs.httpClient !== 'raw') return
  defaultRaw().preconnect(target)
}

/** One hop: through the onread reader where it applies, else (or when it declines the reply) undici. */
async function request(url: URL, headers: Record<string, string>, opts: OpenOptions): Promise<Reply> {
  const raw = opts.raw ?? (opts.dispatcher === undefined && !usesProxy(url) && knobs.httpClient === 'raw' ? defaultRaw() : false)
  if (raw) {
    try {
      return await raw.get(url, headers, opts.signal, opts.headersTimeoutMs)
    } catch (error) {
      if (!(error instanceof RawUnsupported)) throw error
    }
  }
  return get(opts.dispatcher ?? await dispatcherFor(url), url, headers, opts.signal, opts.headersTimeoutMs)
}

let raw: RawHttpClient | undefined
function defaultRaw(): RawHttpClient {
  raw ??= new RawHttpClient({connectTimeoutMs: knobs.connectTimeoutMs})
  return raw
}

/** Transport errors met while pumping become MsrErrors too (retryable E_NETWORK and friends). */
function wrapErrors(body: Body, url: URL, signal?: AbortSignal): Body {
  return new ErrorMappedBody(body, url, signal)
}

/** One object per reply rather than three closures and a getter. */
class ErrorMappedBody implements Body {
  constructor(private readonly body: Body, private readonly url: URL, private readonly signal: AbortSignal | undefined) {}

  pump(take: Take): Promise<'end' | 'stopped'> {
    return this.body.pump(take).catch((error: unknown) => {
      throw networkError(error, this.url, this.signal)
    })
  }

  destroy(error?: Error): void {
    this.body.destroy(error)
  }

  get ended(): boolean {
    return this.body.ended
  }
}

interface Reply {
  status: number
  headers: Record<string, string | undefined>
  body: Body
}

function normaliseHeaders(raw: Record<string, string | string[] | undefined>): Record<string, string | undefined> {
  const out: Record<string, string | undefined> = {}
  for (const [k, v] of Object.entries(raw ?? {})) out[k.toLowerCase()] = Array.isArray(v) ? v.join(', ') : v
  return out
}

/**
 * One GET through undici's dispatch API. The socket is paused from the response head until the
 * caller pumps, and whenever the consumer waits (BodyFeed).
 */
function get(dispatcher: Dispatcher, url: URL, headers: Record<string, string>, signal: AbortSignal | undefined, headersTimeoutMs: number): Promise<Reply> {
  return new Promise<Reply>((resolve, reject) => {
    let controller: Dispatcher.DispatchController | undefined
    let headed = false
    const feed = new BodyFeed({
      pause: () => controller?.pause(),
      resume: () => controller?.resume(),
      abort: (reason) => {
        signal?.removeEventListener('abort', onAbort)
        if (controller && !controller.aborted) controller.abort(reason)
      },
    })
    const onAbort = () => {
      const reason = abortReason(signal)
      if (!headed) reject(reason)
      feed.abort(reason)
    }
    const handler: Dispatcher.DispatchHandler = {
      onRequestStart(c) {
        controller = c
        if (signal?.aborted) c.abort(abortReason(signal))
      },
      onResponseStart(c, statusCode, rawHeaders) {
        headed = true
        c.pause()
        resolve({status: statusCode, headers: normaliseHeaders(rawHeaders as Record<string, string | string[] | undefined>), body: feed.body})
      },
      onResponseData(_c, chunk) {
        feed.data(chunk)
      },
      onResponseEnd() {
        signal?.removeEventListener('abort', onAbort)
        feed.end()
      },
      onResponseError(_c, error) {
        signal?.removeEventListener('abort', onAbort)
        if (!headed) return reject(error)
        feed.error(error)
      },
    }
    if (signal?.aborted) return reject(abortReason(signal))
    signal?.addEventListener('abort', onAbort, {once: true})
    dispatcher.dispatch({
      origin: url.origin,
      path: `${url.pathname || '/'}${url.search}`,
      method: 'GET',
      headers,
      headersTimeout: headersTimeoutMs,
      bodyTimeout: 0,
    }, handler)
  })
}
