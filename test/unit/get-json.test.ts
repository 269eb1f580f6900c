import {execFile} from 'node:child_process'
import http from 'node:http'
import https from 'node:https'
import type {AddressInfo} from 'node:net'
import path from 'node:path'
import {promisify} from 'node:util'
import zlib from 'node:zlib'

import {expect} from 'chai'

import {MsrError} from '../../src/errors.js'
import {MAX_JSON_BYTES, getJson} from '../../src/transfer/http.js'
import {REPO_ROOT} from '../support/cli.js'
import {TRANSPORTS, type Transport, makeTestCertificate} from '../support/tls.js'

/**
 * The hub API's JSON GET (listing, revisions) against a real server on 127.0.0.1, over HTTP and
 * TLS: encodings decoded, statuses and failures mapped to our codes, redirects handed back, the
 * bound on a body held. Over TLS getJson runs in a child process that trusts the test certificate.
 */
const MiB = 1024 * 1024
const LISTING = {Code: 200, Data: {Files: [{Path: 'a.bin', Size: 1}, {Path: 'b/c.json', Size: 2}], Total: 2}}
const ENCODERS: Record<string, (b: Buffer) => Buffer> = {gzip: zlib.gzipSync, deflate: zlib.deflateSync, br: zlib.brotliCompressSync}

interface Outcome {
  status?: number
  body?: unknown
  items?: unknown[]
  error?: {name?: string; code?: string; message: string; retryable?: boolean; retryAfterMs?: number}
}

type Handler = (req: http.IncomingMessage, res: http.ServerResponse) => void

async function startServer(kind: Transport, handler: Handler): Promise<{url: string; hits: string[]; close(): Promise<void>}> {
  const hits: string[] = []
  const onRequest: Handler = (req, res) => {
    hits.push(req.url ?? '')
    handler(req, res)
  }
  const c = kind === 'https' ? makeTestCertificate() : undefined
  const server = c ? https.createServer({key: c.key, cert: c.cert}, onRequest) : http.createServer(onRequest)
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
  const {port} = server.address() as AddressInfo
  return {
    url: `${kind}://127.0.0.1:${port}`,
    hits,
    close: () => new Promise<void>((resolve) => {
      server.closeAllConnections()
      server.close(() => resolve())
    }),
  }
}

/** getJson here (HTTP), or in a child process trusting the test certificate (TLS). */
async function get(kind: Transport, url: string, o: {timeoutMs?: number; items?: string[]} = {}): Promise<Outcome> {
  const timeoutMs = o.timeoutMs ?? 10_000
  if (kind === 'https') {
    const arg = JSON.stringify({url, timeoutMs, items: o.items})
    const {stdout} = await promisify(execFile)(process.execPath, ['--import', 'tsx', path.join(REPO_ROOT, 'test', 'support', 'get-json-child.ts'), arg], {
      cwd: REPO_ROOT,
      env: {...process.env, NODE_EXTRA_CA_CERTS: makeTestCertificate().certPath},
      maxBuffer: 16 * MiB,
    })
    return JSON.parse(stdout) as Outcome
  }
  const items: unknown[] = []
  try {
    const res = await getJson(url, {}, {timeoutMs, maxRetryAfterMs: 60_000, items: o.items ? {path: o.items, each: (i) => items.push(i)} : undefined})
    return {...res, items}
  } catch (error) {
    const e = error as MsrError
    return {error: {name: e.name, code: e.code, message: e.message, retryable: e instanceof MsrError ? e.retryable : undefined, retryAfterMs: e instanceof MsrError ? e.retryAfterMs : undefined}}
  }
}

describe('getJson: the hub API over a real connection', function () {
  this.timeout(60_000)
  let server: Awaited<ReturnType<typeof startServer>> | undefined
  afterEach(async () => {
    await server?.close()
    server = undefined
  })

  for (const kind of TRANSPORTS) {
    for (const encoding of ['gzip', 'deflate', 'br']) {
      it(`${kind}: a ${encoding} listing is decoded, its files handed over one by one`, async () => {
        server = await startServer(kind, (_req, res) => {
          res.writeHead(200, {'Content-Type': 'application/json', 'Content-Encoding': encoding})
          res.end(ENCODERS[encoding](Buffer.from(JSON.stringify(LISTING))))
        })
        const out = await get(kind, `${server.url}/api/v1/models/a/b/repo/files`, {items: ['Data', 'Files']})
        expect(out.error).to.equal(undefined)
        expect(out.status).to.equal(200)
        expect(out.items).to.deep.equal(LISTING.Data.Files)
        expect(out.body).to.deep.equal({Code: 200, Data: {Files: [], Total: 2}})
      })
    }

    it(`${kind}: an encoding we did not ask for is a retryable E_PROTOCOL; a body that is not JSON comes back as text`, async () => {
      server = await startServer(kind, (req, res) => {
        if (req.url === '/zstd') res.writeHead(200, {'Content-Encoding': 'zstd'}).end('xxxx')
        else res.writeHead(200, {'Content-Type': 'text/html'}).end('<html>maintenance</html>')
      })
      const odd = await get(kind, `${server.url}/zstd`)
      expect(odd.error).to.include({code: 'E_PROTOCOL', retryable: true})
      const html = await get(kind, `${server.url}/html`)
      expect(html).to.include({status: 200, body: '<html>maintenance</html>'})
    })

    it(`${kind}: a gzip body that does not decode is a retryable E_PROTOCOL`, async () => {
      server = await startServer(kind, (_req, res) => {
        const gz = zlib.gzipSync(Buffer.from(JSON.stringify(LISTING)))
        res.writeHead(200, {'Content-Encoding': 'gzip'}).end(Buffer.concat([gz.subarray(0, 12), Buffer.from('not deflate data at all')]))
      })
      const out = await get(kind, `${server.url}/bad`)
      expect(out.error).to.include({code: 'E_PROTOCOL', retryable: true})
    })

    it(`${kind}: a redirect is not followed; its status and body go back to the caller`, async () => {
      server = await startServer(kind, (req, res) => {
        if (req.url === '/moved') res.writeHead(302, {Location: '/elsewhere', 'Content-Type': 'text/plain'}).end('Found')
        else res.writeHead(200, {'Content-Type': 'application/json'}).end('{"Code": 200}')
      })
      const out = await get(kind, `${server.url}/moved`)
      expect(out).to.include({status: 302, body: 'Found'})
      expect(server.hits).to.deep.equal(['/moved'])
    })

    it(`${kind}: 401, 403, 404 come back as statuses; 503 is a retryable E_NETWORK with its Retry-After; 400 E_REMOTE`, async () => {
      server = await startServer(kind, (req, res) => {
        const status = Number(req.url!.slice(1))
        res.writeHead(status, {'Content-Type': 'application/json', 'Retry-After': '7'}).end(JSON.stringify({Code: status, Message: 'no'}))
      })
      for (const status of [401, 403, 404]) expect(await get(kind, `${server.url}/${status}`)).to.deep.include({status, body: {Code: status, Message: 'no'}})
      expect((await get(kind, `${server.url}/503`)).error).to.include({code: 'E_NETWORK', retryable: true, retryAfterMs: 7000})
      expect((await get(kind, `${server.url}/400`)).error).to.include({code: 'E_REMOTE', retryable: false})
    })

    it(`${kind}: no reply within the timeout, or a body that stops, is a retryable E_TIMEOUT`, async () => {
      server = await startServer(kind, (req, res) => {
        if (req.url === '/stall-body') {
          res.writeHead(200, {'Content-Type': 'application/json', 'Content-Length': '100'})
          res.write('{"Code": 200, ')
        }
        // '/silent': never answers.
      })
      for (const route of ['/silent', '/stall-body']) {
        const t0 = Date.now()
        const out = await get(kind, `${server.url}${route}`, {timeoutMs: 400})
        expect(out.error, route).to.include({code: 'E_TIMEOUT', retryable: true})
        if (kind === 'http') expect(Date.now() - t0, route).to.be.within(350, 5000)
      }
    })

    it(`${kind}: a connection closed mid-body is a retryable E_NETWORK; a reply that is not HTTP a retryable E_PROTOCOL`, async () => {
      server = await startServer(kind, (req, res) => {
        if (req.url === '/cut') {
          res.writeHead(200, {'Content-Type': 'application/json', 'Content-Length': '1000'})
          res.write('{"Code": 200, "Data": [', () => res.socket?.destroy())
        } else {
          res.socket?.end('HTTP/1.1 abc\r\nwhat: \x01\r\n\r\n')
        }
      })
      expect((await get(kind, `${server.url}/cut`)).error).to.include({code: 'E_NETWORK', retryable: true})
      expect((await get(kind, `${server.url}/garbage`)).error).to.include({code: 'E_PROTOCOL', retryable: true})
    })
  }

  it('a cancel through the signal surfaces as the signal\'s reason, not as a network error', async () => {
    server = await startServer('http', () => {})
    const controller = new AbortController()
    const reason = new Error('the pull was interrupted')
    setTimeout(() => controller.abort(reason), 100)
    const error = await getJson(`${server.url}/silent`, {}, {signal: controller.signal, timeoutMs: 10_000, maxRetryAfterMs: 1000}).catch((e: unknown) => e)
    expect(error).to.equal(reason)
    const already = await getJson(`${server.url}/silent`, {}, {signal: controller.signal, timeoutMs: 10_000, maxRetryAfterMs: 1000}).catch((e: unknown) => e)
    expect(already).to.equal(reason)
  })

  it('a cancel while the body arrives surfaces at once as the signal\'s reason', async () => {
    // The head and a first piece, then nothing: only the signal (not the 10 s timeout) can end it.
    server = await startServer('http', (_req, res) => {
      res.writeHead(200, {'Content-Type': 'application/json', 'Content-Length': '1000'})
      res.write('{"Data": ')
    })
    const controller = new AbortController()
    const reason = new Error('the pull was interrupted')
    setTimeout(() => controller.abort(reason), 300)
    const started = performance.now()
    const error = await getJson(`${server.url}/half`, {}, {signal: controller.signal, timeoutMs: 10_000, maxRetryAfterMs: 1000}).catch((e: unknown) => e)
    expect(error).to.equal(reason)
    expect(performance.now() - started).to.be.lessThan(5000)
  })

  it(`a body over ${MAX_JSON_BYTES / MiB} MiB is refused with E_PROTOCOL, counted decoded (a small gzip of a larger body too)`, async function () {
    this.timeout(120_000)
    const zeros = Buffer.alloc(MiB, 0x20)
    const bomb = zlib.gzipSync(Buffer.alloc(MAX_JSON_BYTES + MiB, 0x20), {level: 1})
    expect(bomb.length).to.be.lessThan(2 * MiB)
    server = await startServer('http', (req, res) => {
      if (req.url === '/bomb') return void res.writeHead(200, {'Content-Encoding': 'gzip', 'Content-Length': String(bomb.length)}).end(bomb)
      res.writeHead(200, {'Content-Type': 'application/json'})
      let sent = 0
      const more = () => {
        while (sent <= MAX_JSON_BYTES && !res.destroyed) {
          sent += zeros.length
          if (!res.write(zeros)) return void res.once('drain', more)
        }
        res.end()
      }
      res.on('error', () => {})
      more()
    })
    for (const route of ['/plain', '/bomb']) {
      const out = await get('http', `${server.url}${route}`)
      expect(out.error, route).to.include({code: 'E_PROTOCOL'})
      expect(out.error!.message, route).to.match(/larger than/)
    }
  })
})
