import {expect} from 'chai'
import {execFileSync} from 'node:child_process'
import {randomBytes} from 'node:crypto'
import fs from 'node:fs'
import http from 'node:http'
import https from 'node:https'
import net from 'node:net'
import os from 'node:os'
import path from 'node:path'

import {STOP} from '../../src/transfer/pump.js'
import {RawUnsupported, rawGet} from '../../src/transfer/raw-http.js'

/**
 * The raw body reader against real servers on 127.0.0.1: plain and TLS, Content-Length and
 * close-delimited bodies, back-pressure, STOP, and the replies it must hand back to axios or refuse.
 * (The fault matrix runs through it end to end in transport-faults.test.ts.)
 */
const body = randomBytes(3 * 1024 * 1024 + 17)

/** Collects a body through pump(), pausing now and then as a busy disk would. */
async function collect(res: Awaited<ReturnType<typeof rawGet>>): Promise<{data: Buffer; outcome: string}> {
  const parts: Buffer[] = []
  let n = 0
  const outcome = await res.body.pump((d) => {
    parts.push(Buffer.from(d))
    if (++n % 7 === 0) return new Promise((r) => setTimeout(r, 5))
  })
  return {data: Buffer.concat(parts), outcome}
}

function listen(server: net.Server): Promise<number> {
  return new Promise((resolve) => server.listen(0, '127.0.0.1', () => resolve((server.address() as net.AddressInfo).port)))
}

describe('raw-http: the body reader for large files', function () {
  this.timeout(20_000)
  const servers: net.Server[] = []
  after(() => servers.forEach((s) => s.close()))

  async function plain(handler: http.RequestListener): Promise<string> {
    const server = http.createServer(handler)
    servers.push(server)
    return `http://127.0.0.1:${await listen(server)}`
  }

  /** A raw TCP server that answers every connection with `reply` (for replies http.Server will not send). */
  async function rawServer(reply: string | Buffer, end = true): Promise<string> {
    const server = net.createServer((socket) => {
      socket.once('data', () => {
        socket.write(reply)
        if (end) socket.end()
      })
      socket.on('error', () => {})
    })
    servers.push(server)
    return `http://127.0.0.1:${await listen(server)}`
  }

  it('reads a 206 with Content-Length byte-exact, with back-pressure, and sends our headers', async () => {
    let seen: http.IncomingHttpHeaders = {}
    const base = await plain((req, res) => {
      seen = req.headers
      res.writeHead(206, {'Content-Length': body.length, 'Content-Range': `bytes 0-${body.length - 1}/${body.length}`})
      res.end(body)
    })
    const res = await rawGet(new URL(`${base}/f?x=1`), {Range: 'bytes=0-', Authorization: 'Bearer t'}, {headersTimeoutMs: 5000})
    expect(res.status).to.equal(206)
    expect(res.headers['content-range']).to.equal(`bytes 0-${body.length - 1}/${body.length}`)
    const {data, outcome} = await collect(res)
    expect(outcome).to.equal('end')
    expect(res.body.ended).to.equal(true)
    expect(data.equals(body)).to.equal(true)
    expect(seen.range).to.equal('bytes=0-')
    expect(seen.authorization).to.equal('Bearer t')
    expect(seen.connection).to.equal('close')
  })

  it('reads a close-delimited body (no Content-Length) to the end of the connection', async () => {
    const base = await rawServer(Buffer.concat([Buffer.from('HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n'), body]))
    const {data, outcome} = await collect(await rawGet(new URL(base), {}, {headersTimeoutMs: 5000}))
    expect(outcome).to.equal('end')
    expect(data.equals(body)).to.equal(true)
  })

  it('works over TLS', async function () {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'ms-resume-tls-'))
    try {
      execFileSync('openssl', ['req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-days', '1', '-subj', '/CN=127.0.0.1',
        '-addext', 'subjectAltName=IP:127.0.0.1', '-keyout', path.join(dir, 'key.pem'), '-out', path.join(dir, 'cert.pem')], {stdio: 'ignore'})
    } catch {
      this.skip()
    }
    const cert = fs.readFileSync(path.join(dir, 'cert.pem'))
    const server = https.createServer({key: fs.readFileSync(path.join(dir, 'key.pem')), cert}, (_req, res) => {
      res.writeHead(200, {'Content-Length': body.length})
      res.end(body)
    })
    servers.push(server)
    fs.rmSync(dir, {recursive: true, force: true})
    const url = new URL(`https://127.0.0.1:${await listen(server)}/f`)
    const {data, outcome} = await collect(await rawGet(url, {}, {headersTimeoutMs: 5000, tls: {ca: cert}}))
    expect(outcome).to.equal('end')
    expect(data.equals(body)).to.equal(true)
    // Without the certificate's CA: refused, never read.
    const error = await rawGet(url, {}, {headersTimeoutMs: 5000}).then(() => null, (e: Error) => e)
    expect(error?.message).to.match(/self.signed|certificate/i)
  })

  it('STOP ends the exchange early and closes the connection', async () => {
    const base = await plain((_req, res) => {
      res.writeHead(200, {'Content-Length': body.length})
      res.end(body)
    })
    const res = await rawGet(new URL(base), {}, {headersTimeoutMs: 5000})
    let got = 0
    const outcome = await res.body.pump((d) => {
      got += d.length
      return got > 100_000 ? STOP : undefined
    })
    expect(outcome).to.equal('stopped')
    expect(res.body.ended).to.equal(false)
  })

  it('hands chunked replies and 1xx to axios (RawUnsupported)', async () => {
    const chunked = await plain((_req, res) => {
      res.writeHead(200, {'Transfer-Encoding': 'chunked'})
      res.end('abc')
    })
    expect(await rawGet(new URL(chunked), {}, {headersTimeoutMs: 5000}).then(() => null, (e) => e)).to.be.instanceOf(RawUnsupported)
    const early = await rawServer('HTTP/1.1 103 Early Hints\r\nLink: </x>\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\nx')
    expect(await rawGet(new URL(early), {}, {headersTimeoutMs: 5000}).then(() => null, (e) => e)).to.be.instanceOf(RawUnsupported)
  })

  for (const [name, reply] of [
    ['a garbage status line', 'HTTP/1.1 2OO OK\r\n\r\n'],
    ['a header line without a colon', 'HTTP/1.1 200 OK\r\nContent-Length 3\r\n\r\nabc'],
    ['a negative Content-Length', 'HTTP/1.1 200 OK\r\nContent-Length: -3\r\n\r\nabc'],
    ['not HTTP at all', 'SSH-2.0-OpenSSH_9.6\r\n\r\n'],
  ] as const) {
    it(`refuses ${name} as a parse error (HPE_*: a protocol error, retried by the caller)`, async () => {
      const base = await rawServer(reply)
      const error = (await rawGet(new URL(base), {}, {headersTimeoutMs: 5000}).then(() => null, (e) => e)) as NodeJS.ErrnoException | null
      expect(error?.code).to.equal('HPE_INVALID_RESPONSE')
    })
  }

  it('a body cut short of its Content-Length rejects the pump (never "end")', async () => {
    const base = await rawServer(Buffer.concat([Buffer.from('HTTP/1.1 200 OK\r\nContent-Length: 100000\r\n\r\n'), body.subarray(0, 5000)]))
    const res = await rawGet(new URL(base), {}, {headersTimeoutMs: 5000})
    const error = await collect(res).then(() => null, (e: NodeJS.ErrnoException) => e)
    expect(error?.code).to.equal('ECONNRESET')
  })

  it('times out when no reply head arrives, and honours an abort signal', async () => {
    const silent = await rawServer('', false)
    const timeout = (await rawGet(new URL(silent), {}, {headersTimeoutMs: 200}).then(() => null, (e) => e)) as NodeJS.ErrnoException | null
    expect(timeout?.code).to.equal('ETIMEDOUT')
    const controller = new AbortController()
    const pending = rawGet(new URL(silent), {}, {headersTimeoutMs: 5000, signal: controller.signal})
    controller.abort(new Error('stop now'))
    expect(((await pending.then(() => null, (e) => e)) as Error | null)?.message).to.equal('stop now')
  })

  it('refuses header values with line breaks (no request splitting)', () => {
    expect(() => rawGet(new URL('http://127.0.0.1:1/'), {'X-A': 'a\r\nX-Injected: 1'}, {headersTimeoutMs: 100})).to.throw(/line break/)
  })
})
