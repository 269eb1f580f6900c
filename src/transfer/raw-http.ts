import net from 'node:net'
import tls from 'node:tls'

import {STOP} from './pump.js'

/**
 * A minimal HTTP/1.1 GET for the bodies of large files, read with `onread`: the kernel copies
 * each read (up to 1 MiB) into one buffer per connection, which the caller copies into its block.
 * Node's http client costs about 1 s of main-thread CPU per GiB on these machines (a parser
 * callback, a fresh 64 KiB Buffer and a stream push per read, and the GC of all of it); this path
 * costs about a fifth of that. Used only where it can be exact: plain or TLS connections without
 * a proxy, a Content-Length or close-delimited body. Anything else (chunked bodies, 1xx, a
 * proxy) is left to axios (RawUnsupported), and so is every small file and every API call.
 *
 * One connection per request (`Connection: close`): the requests this serves fetch 16 MiB or more.
 */

export interface RawBody {
  /**
   * Feeds the body to `take`, in order; `take` copies synchronously what it keeps (the buffer is
   * reused by the next read), returns a promise to pause reading until it settles, or STOP.
   */
  pump(take: (data: Buffer) => void | Promise<void> | typeof STOP): Promise<'end' | 'stopped'>
  destroy(error?: Error): void
  readonly ended: boolean
}

export interface RawResponse {
  status: number
  headers: Record<string, string | undefined>
  body: RawBody
}

/** The reply cannot be read by this client (chunked, 1xx...): ask again through axios. */
export class RawUnsupported extends Error {}

const READ_BYTES = 1024 * 1024
const MAX_HEAD_BYTES = 64 * 1024
const HEAD_END = Buffer.from('\r\n\r\n')

function protocolError(message: string): Error {
  return Object.assign(new Error(`Parse Error: ${message}`), {code: 'HPE_INVALID_RESPONSE'})
}

/** Status line and headers; header names lower-cased, repeated ones joined with ", ". */
function parseHead(text: string): {status: number; headers: Record<string, string | undefined>} {
  const lines = text.split('\r\n')
  const m = /^HTTP\/1\.[01] (\d{3})(?: .*)?$/.exec(lines[0] ?? '')
  if (!m) throw protocolError(`bad status line ${JSON.stringify((lines[0] ?? '').slice(0, 80))}`)
  const headers: Record<string, string | undefined> = {}
  for (const line of lines.slice(1)) {
    if (line === '') continue
    const colon = line.indexOf(':')
    if (colon <= 0 || /[\s]/.test(line.slice(0, colon))) throw protocolError(`bad header line ${JSON.stringify(line.slice(0, 80))}`)
    const name = line.slice(0, colon).toLowerCase()
    const value = line.slice(colon + 1).trim()
    headers[name] = headers[name] === undefined ? value : `${headers[name]}, ${value}`
  }
  return {status: Number(m[1]), headers}
}

export function rawGet(url: URL, headers: Record<string, string>, opts: {signal?: AbortSignal; headersTimeoutMs: number; tls?: tls.ConnectionOptions}): Promise<RawResponse> {
  const lines = [`GET ${url.pathname || '/'}${url.search} HTTP/1.1`, `Host: ${url.host}`, 'Connection: close']
  const given = new Set(Object.keys(headers).map((k) => k.toLowerCase()))
  if (!given.has('user-agent')) lines.push('User-Agent: ms-resume')
  if (!given.has('accept')) lines.push('Accept: */*')
  for (const [name, value] of Object.entries(headers)) {
    if (/[\r\n]/.test(name) || /[\r\n]/.test(String(value))) throw new Error(`header ${name} holds a line break`)
    if (['host', 'connection'].includes(name.toLowerCase())) continue
    lines.push(`${name}: ${value}`)
  }
  const request = `${lines.join('\r\n')}\r\n\r\n`

  return new Promise<RawResponse>((resolve, reject) => {
    const readBuffer = Buffer.allocUnsafeSlow(READ_BYTES)
    let head: Buffer[] = []
    let headBytes = 0
    let phase: 'head' | 'body' | 'done' = 'head'
    let remaining = Number.POSITIVE_INFINITY
    let leftover: Buffer | undefined
    let ended = false
    let failure: Error | undefined
    // The pump in progress, once the caller reads the body.
    let take: ((data: Buffer) => void | Promise<void> | typeof STOP) | undefined
    let settle: ((outcome: 'end' | 'stopped' | Error) => void) | undefined
    let paused = false

    const port = Number(url.port) || (url.protocol === 'https:' ? 443 : 80)
    const host = url.hostname.replace(/^\[|\]$/g, '')
    const onread = {buffer: readBuffer, callback: (n: number, buf: Uint8Array) => onRead(n, buf as Buffer)}
    const socket: net.Socket = url.protocol === 'https:'
      ? tls.connect({...opts.tls, host, port, servername: net.isIP(host) ? undefined : host, ALPNProtocols: ['http/1.1'], onread} as tls.ConnectionOptions)
      : net.connect({host, port, onread})
    socket.setNoDelay(true)

    const headTimer = setTimeout(() => fail(Object.assign(new Error(`no reply headers within ${opts.headersTimeoutMs} ms`), {code: 'ETIMEDOUT'})), opts.headersTimeoutMs)
    const onAbort = () => fail(opts.signal?.reason instanceof Error ? opts.signal.reason : new Error('aborted'))
    if (opts.signal?.aborted) {
      queueMicrotask(onAbort)
    } else {
      opts.signal?.addEventListener('abort', onAbort, {once: true})
    }

    const cleanup = () => {
      clearTimeout(headTimer)
      opts.signal?.removeEventListener('abort', onAbort)
    }

    /** Ends the exchange: rejects the head promise or settles the pump. */
    function fail(error: Error): void {
      if (phase === 'done') return
      failure = error
      const wasHead = phase === 'head'
      phase = 'done'
      cleanup()
      socket.destroy()
      if (wasHead) reject(error)
      else settle?.(error)
    }

    function finish(outcome: 'end' | 'stopped'): void {
      if (phase === 'done') return
      phase = 'done'
      ended = outcome === 'end'
      cleanup()
      socket.destroy()
      settle?.(outcome)
    }

    /** Hands body bytes to the pump; false pauses the socket. */
    function deliver(data: Buffer): boolean {
      if (phase !== 'body') return false
      if (!take) {
        // Not pumped yet (a read already under way when the socket paused): keep it, in order.
        leftover = leftover ? Buffer.concat([leftover, data]) : Buffer.from(data)
        return false
      }
      const n = Math.min(data.length, remaining)
      const piece = n === data.length ? data : data.subarray(0, n)
      if (n > 0) remaining -= n
      let result: void | Promise<void> | typeof STOP
      try {
        result = take(piece)
      } catch (error) {
        fail(error as Error)
        return false
      }
      if (result === STOP) {
        finish('stopped')
        return false
      }
      if (result) {
        paused = true
        result.then(() => {
          paused = false
          if (phase !== 'body') return
          if (remaining === 0) finish('end')
          else socket.resume()
        }, (error: Error) => fail(error))
        return false
      }
      if (remaining === 0) {
        finish('end')
        return false
      }
      return true
    }

    function onRead(n: number, buf: Buffer): boolean {
      if (phase === 'done') return false
      if (phase === 'body') return deliver(buf.subarray(0, n))
      // Head: gather until the blank line.
      head.push(Buffer.from(buf.subarray(0, n)))
      headBytes += n
      const all = head.length === 1 ? head[0] : Buffer.concat(head, headBytes)
      head = [all]
      const at = all.indexOf(HEAD_END)
      if (at < 0) {
        if (headBytes > MAX_HEAD_BYTES) fail(protocolError('reply headers too large'))
        return true
      }
      let parsed
      try {
        parsed = parseHead(all.subarray(0, at).toString('latin1'))
      } catch (error) {
        fail(error as Error)
        return false
      }
      const te = parsed.headers['transfer-encoding']
      if ((parsed.status >= 100 && parsed.status < 200) || (te !== undefined && te.toLowerCase() !== 'identity')) {
        fail(new RawUnsupported(`reply ${parsed.status}${te ? ` with Transfer-Encoding ${te}` : ''}`))
        return false
      }
      const cl = parsed.headers['content-length']
      if (cl !== undefined) {
        if (!/^\d+$/.test(cl)) {
          fail(protocolError(`bad Content-Length ${JSON.stringify(cl.slice(0, 40))}`))
          return false
        }
        remaining = Number(cl)
      }
      clearTimeout(headTimer)
      phase = 'body'
      const rest = all.subarray(at + HEAD_END.length)
      leftover = rest.length > 0 ? Buffer.from(rest) : undefined
      head = []
      const body: RawBody = {
        pump(fn) {
          return new Promise((res, rej) => {
            if (take) throw new Error('raw body pumped twice')
            take = fn
            settle = (outcome) => (outcome instanceof Error ? rej(outcome) : res(outcome))
            if (failure) return settle(failure)
            if (phase === 'done') return settle(ended ? 'end' : 'stopped')
            if (remaining === 0) return finish('end')
            const first = leftover
            leftover = undefined
            if (first && !deliver(first)) return
            if (!paused && phase === 'body') socket.resume()
          })
        },
        destroy(error?: Error) {
          if (error) fail(error)
          else if (phase !== 'done') {
            phase = 'done'
            cleanup()
            socket.destroy()
            settle?.('stopped')
          }
        },
        get ended() {
          return ended
        },
      }
      resolve({status: parsed.status, headers: parsed.headers, body})
      // Nothing more is read until the caller pumps the body.
      return false
    }

    socket.on(url.protocol === 'https:' ? 'secureConnect' : 'connect', () => socket.write(request))
    socket.on('end', () => {
      if (phase === 'body' && remaining === Number.POSITIVE_INFINITY) finish('end')
      else fail(Object.assign(new Error('The connection closed before the reply ended.'), {code: 'ECONNRESET'}))
    })
    socket.on('error', (error) => fail(error))
    socket.on('close', () => fail(Object.assign(new Error('The connection closed before the reply ended.'), {code: 'ECONNRESET'})))
  })
}
