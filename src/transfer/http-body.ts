import {Agent, type Dispatcher, EnvHttpProxyAgent} from 'undici'

import {knobs} from '../config.js'
import type {Body, Take} from './body.js'
import {STOP} from './body.js'
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

export function dispatcherFor(url: URL): Dispatcher {
  direct ??= new Agent(agentOptions)
  const loopback = ['127.0.0.1', 'localhost', '[::1]', '::1'].includes(url.hostname)
  const proxyVars = ['http_proxy', 'https_proxy', 'HTTP_PROXY', 'HTTPS_PROXY']
  if (loopback || !proxyVars.some((name) => process.env[name])) return direct
  proxied ??= new EnvHttpProxyAgent(agentOptions)
  return proxied
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
      reply = await get(opts.dispatcher ?? dispatcherFor(url), url, {...opts.headers, ...opts.headersFor(url)}, opts.signal, opts.headersTimeoutMs)
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

/** Transport errors met while pumping become MsrErrors too (retryable E_NETWORK and friends). */
function wrapErrors(body: Body, url: URL, signal?: AbortSignal): Body {
  return {
    pump: (take) => body.pump(take).catch((error: unknown) => {
      throw networkError(error, url, signal)
    }),
    destroy: (error) => body.destroy(error),
    get ended() {
      return body.ended
    },
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
 * caller pumps, and whenever `take` returns a promise, until that settles. Pieces that still
 * arrive while paused are copied and queued, never dropped and never handed over out of order.
 */
function get(dispatcher: Dispatcher, url: URL, headers: Record<string, string>, signal: AbortSignal | undefined, headersTimeoutMs: number): Promise<Reply> {
  return new Promise<Reply>((resolve, reject) => {
    let controller: Dispatcher.DispatchController | undefined
    let take: Take | undefined
    let settle: ((outcome: 'end' | 'stopped' | Error) => void) | undefined
    let busy: Promise<void> | undefined
    const queued: Buffer[] = []
    let complete = false
    let failure: Error | undefined
    let finished: 'end' | 'stopped' | Error | undefined
    let headed = false

    let inTake = false
    let settled = false
    /** Settles the pump once the consumer is idle: not inside `take`, no wait of its pending. */
    const settleWhenIdle = () => {
      if (settled || finished === undefined || busy || inTake || !settle) return
      settled = true
      // undici marks the connection free only after this callback returns: a request made as soon
      // as the body ended would open another connection (a TCP and TLS handshake per piece).
      if (finished === 'end') {
        const outcome = finished
        const done = settle
        setImmediate(() => done(outcome))
      } else {
        settle(finished)
      }
    }

    const finish = (outcome: 'end' | 'stopped' | Error) => {
      if (finished !== undefined) return
      finished = outcome
      signal?.removeEventListener('abort', onAbort)
      if (outcome !== 'end' && !complete && controller && !controller.aborted) controller.abort(outcome instanceof Error ? outcome : new Error('body not wanted'))
      settleWhenIdle()
    }

    /** Hands queued pieces to the consumer until it asks to wait; true when all were taken. */
    const flush = (): boolean => {
      while (queued.length > 0 && finished === undefined) {
        if (busy) return false
        const data = queued.shift()!
        let result: ReturnType<Take>
        inTake = true
        try {
          result = take!(data)
        } catch (error) {
          inTake = false
          finish(error as Error)
          return false
        }
        inTake = false
        if (result === STOP) {
          finish('stopped')
          return false
        }
        if (result) {
          const wait: Promise<void> = result.then(
            () => {
              if (busy !== wait) return
              busy = undefined
              if (finished !== undefined) return settleWhenIdle()
              if (flush()) afterFlush()
            },
            (error: Error) => {
              busy = undefined
              finish(error)
              settleWhenIdle()
            },
          )
          busy = wait
          controller?.pause()
          return false
        }
        // Finished while the consumer ran (an abort from inside `take`): settle now it returned.
        if (finished !== undefined) settleWhenIdle()
      }
      return finished === undefined
    }

    const afterFlush = () => {
      if (failure) finish(failure)
      else if (complete) finish('end')
      else controller?.resume()
    }

    const body: Body = {
      pump(fn) {
        return new Promise((res, rej) => {
          if (take) throw new Error('body pumped twice')
          take = fn
          settle = (outcome) => (outcome instanceof Error ? rej(outcome) : res(outcome))
          if (finished !== undefined) return settleWhenIdle()
          if (flush()) afterFlush()
        })
      },
      destroy(error?: Error) {
        finish(error ?? 'stopped')
      },
      get ended() {
        return complete && finished === 'end'
      },
    }

    const onAbort = () => {
      const reason = signal?.reason instanceof Error ? signal.reason : new Error('aborted')
      if (!headed) reject(reason)
      finish(reason)
    }

    const handler: Dispatcher.DispatchHandler = {
      onRequestStart(c) {
        controller = c
        if (signal?.aborted) c.abort(signal.reason instanceof Error ? signal.reason : new Error('aborted'))
      },
      onResponseStart(c, statusCode, rawHeaders) {
        headed = true
        c.pause()
        resolve({status: statusCode, headers: normaliseHeaders(rawHeaders as Record<string, string | string[] | undefined>), body})
      },
      onResponseData(c, chunk) {
        // undici hands over an empty piece on every resume: taking it would pause again (forever).
        if (finished !== undefined || chunk.length === 0) return
        // Fast path: nothing waiting, the consumer copies the piece before it returns.
        if (take && !busy && queued.length === 0) {
          queued.push(chunk)
          flush()
          return
        }
        queued.push(Buffer.from(chunk))
        c.pause()
      },
      onResponseEnd() {
        complete = true
        if (take && !busy && queued.length === 0) finish('end')
      },
      onResponseError(_c, error) {
        if (!headed) {
          signal?.removeEventListener('abort', onAbort)
          reject(error)
          return
        }
        failure = error
        if (take && !busy && queued.length === 0) finish(error)
      },
    }
    if (signal?.aborted) return reject(signal.reason instanceof Error ? signal.reason : new Error('aborted'))
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
