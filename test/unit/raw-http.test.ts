import {getEventListeners} from 'node:events'
import net from 'node:net'
import tls from 'node:tls'
import type {AddressInfo} from 'node:net'

import {expect} from 'chai'
import {Agent} from 'undici'

import {isMsrError} from '../../src/errors.js'
import {openBody} from '../../src/transfer/http-body.js'
import {STOP} from '../../src/transfer/body.js'
import {RawHttpClient, RawHttpError, parseHead} from '../../src/transfer/raw-http.js'
import {TRANSPORTS, makeTestCertificate} from '../support/tls.js'

/** What the scripted server does with one request: bytes to write, then maybe close. */
type Script = (ctx: {request: number; connection: number; head: string}) => {write: Buffer | string; close?: boolean; hold?: boolean}

interface Scripted {
  url: string
  connections: number
  /** Connections that have closed. */
  closed: number
  requests: string[]
  /** Per connection: whether its TLS session was resumed. */
  resumed: boolean[]
  close(): Promise<void>
}

/** A server that answers each request on a connection as `script` says (keep-alive unless told to close). */
async function scripted(kind: 'http' | 'https', script: Script): Promise<Scripted> {
  const sockets = new Set<net.Socket>()
  const state: Scripted = {url: '', connections: 0, closed: 0, requests: [], resumed: [], close: async () => {}}
  const onSocket = (socket: net.Socket) => {
    const connection = state.connections++
    if (socket instanceof tls.TLSSocket) state.resumed[connection] = socket.isSessionReused()
    sockets.add(socket)
    socket.on('close', () => {
      sockets.delete(socket)
      state.closed++
    })
    socket.on('error', () => {})
    let pending = ''
    socket.on('data', (d: Buffer) => {
      pending += d.toString('latin1')
      let end
      while ((end = pending.indexOf('\r\n\r\n')) >= 0) {
        const head = pending.slice(0, end)
        pending = pending.slice(end + 4)
        state.requests.push(head)
        const reply = script({request: state.requests.length - 1, connection, head})
        if (reply.hold) continue
        socket.write(reply.write)
        if (reply.close) socket.end()
      }
    })
  }
  const cert = makeTestCertificate()
  const server = kind === 'https' ? tls.createServer({key: cert.key, cert: cert.cert}, onSocket) : net.createServer(onSocket)
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
  state.url = `${kind}://127.0.0.1:${(server.address() as AddressInfo).port}/blob`
  state.close = () => new Promise<void>((resolve) => {
    for (const s of sockets) s.destroy()
    server.close(() => resolve())
  })
  return state
}

const ok = (body: string, extra = '') => `HTTP/1.1 200 OK\r\nContent-Length: ${Buffer.byteLength(body)}\r\n${extra}\r\n${body}`

async function readAll(client: RawHttpClient, url: string, headers: Record<string, string> = {}): Promise<{status: number; text: string}> {
  const res = await openBody({url, headers, headersFor: () => ({}), headersTimeoutMs: 2000, maxRetryAfterMs: 1000, raw: client, dispatcher: undiciFor()})
  const parts: Buffer[] = []
  await res.body.pump((d) => void parts.push(Buffer.from(d)))
  return {status: res.status, text: Buffer.concat(parts).toString()}
}

// undici, for the replies the raw reader declines (it must trust the throwaway CA too).
let undici: Agent | undefined
const undiciFor = () => (undici ??= new Agent({connect: {ca: makeTestCertificate().cert}}))

async function failure(p: Promise<unknown>): Promise<{code?: string; message: string}> {
  return p.then(() => ({message: 'no error'}), (error: {code?: string; message: string}) => error)
}

describe('raw-http: the onread body reader', function () {
  this.timeout(30_000)
  let server: Scripted | undefined
  let client: RawHttpClient
  beforeEach(() => {
    client = new RawHttpClient({connectTimeoutMs: 2000, tls: {ca: makeTestCertificate().cert}})
  })
  afterEach(async () => {
    client.close()
    await server?.close()
    server = undefined
  })
  after(() => undici?.close())

  it('parseHead: status, headers, length, keep-alive; refuses what it does not do', () => {
    expect(parseHead('HTTP/1.1 206 Partial\r\nContent-Length: 5\r\nX-A: 1\r\nx-a: 2')).to.deep.equal({status: 206, headers: {'content-length': '5', 'x-a': '1, 2'}, length: 5, keepAlive: true})
    expect(parseHead('HTTP/1.0 200 OK\r\nContent-Length: 0')).to.include({keepAlive: false})
    expect(parseHead('HTTP/1.1 200 OK\r\nConnection: keep-alive, close\r\nContent-Length: 0')).to.include({keepAlive: false})
    expect(parseHead('HTTP/1.1 200 OK\r\nContent-Length: 7, 7')).to.include({length: 7})
    expect(parseHead('HTTP/1.1 304 Not Modified')).to.include({length: 0})
    expect(parseHead('HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked')).to.have.property('unsupported')
    expect(parseHead('HTTP/1.1 200 OK')).to.have.property('unsupported')
    expect(parseHead('HTTP/1.1 100 Continue')).to.have.property('unsupported')
    for (const bad of ['HTTP/2 200', 'HTTP/1.1 20 OK', 'HTTP/1.1 200 OK\r\nContent-Length: 7, 8', 'HTTP/1.1 200 OK\r\nContent-Length: -1', 'HTTP/1.1 200 OK\r\nBad Name: x\r\nContent-Length: 1', 'HTTP/1.1 200 OK\r\nno colon']) {
      expect(() => parseHead(bad), bad).to.throw(RawHttpError).with.property('code').that.match(/^HPE_RAW_/)
    }
  })

  for (const kind of TRANSPORTS) {
    it(`${kind}: requests in a row share one connection; after the pool is closed the TLS session is resumed`, async () => {
      server = await scripted(kind, ({request}) => ({write: ok(`reply ${request}`)}))
      for (let i = 0; i < 3; i++) expect(await readAll(client, server.url)).to.deep.equal({status: 200, text: `reply ${i}`})
      expect(server.connections).to.equal(1)
      client.close()
      expect((await readAll(client, server.url)).text).to.equal('reply 3')
      expect(server.connections).to.equal(2)
      if (kind === 'https') expect(server.resumed).to.deep.equal([false, true])
    })

    it(`${kind}: preconnect opens the connection ahead; the first request then uses it`, async () => {
      server = await scripted(kind, ({request}) => ({write: ok(`reply ${request}`)}))
      client.preconnect(new URL(server.url))
      client.preconnect(new URL(server.url))
      for (let i = 0; i < 50 && server.connections === 0; i++) await new Promise((resolve) => setTimeout(resolve, 10))
      expect(server.connections, 'connected before any request').to.equal(1)
      expect(server.requests).to.deep.equal([])
      await new Promise((resolve) => setTimeout(resolve, 50))
      expect((await readAll(client, server.url)).text).to.equal('reply 0')
      expect(server.connections).to.equal(1)
    })

    it(`${kind}: a connection the server closed while idle is replaced without an error`, async () => {
      server = await scripted(kind, ({request}) => ({write: ok(`reply ${request}`), close: true}))
      expect((await readAll(client, server.url)).text).to.equal('reply 0')
      await new Promise((resolve) => setTimeout(resolve, 50))
      expect((await readAll(client, server.url)).text).to.equal('reply 1')
      expect(server.connections).to.equal(2)
    })

    it(`${kind}: a kept-alive connection closed as the request arrives is replaced once; a new one failing so is an error`, async () => {
      server = await scripted(kind, ({request, connection}) => (connection === 0 && request === 1 ? {write: '', close: true} : {write: ok(`reply ${request}`)}))
      expect((await readAll(client, server.url)).text).to.equal('reply 0')
      expect((await readAll(client, server.url)).text).to.equal('reply 2')
      expect(server.connections).to.equal(2)
      await server.close()
      server = await scripted(kind, () => ({write: '', close: true}))
      const e = await failure(readAll(client, server.url))
      expect(isMsrError(e) && e.code === 'E_NETWORK', e.message).to.equal(true)
      expect(server.requests.length, 'a fresh connection is not retried').to.equal(1)
    })

    it(`${kind}: a body stopped half-way closes its connection (the next request gets a new one)`, async () => {
      const big = 'x'.repeat(4 * 1024 * 1024)
      server = await scripted(kind, ({request}) => ({write: request === 0 ? ok(big) : ok('small')}))
      const res = await openBody({url: server.url, headers: {}, headersFor: () => ({}), headersTimeoutMs: 2000, maxRetryAfterMs: 1000, raw: client})
      expect(await res.body.pump(() => STOP)).to.equal('stopped')
      expect((await readAll(client, server.url)).text).to.equal('small')
      expect(server.connections).to.equal(2)
    })

    it(`${kind}: bytes past Content-Length are not handed over, and that connection is not reused`, async () => {
      server = await scripted(kind, ({request}) => ({write: ok(`r${request}`) + 'GARBAGE'}))
      expect((await readAll(client, server.url)).text).to.equal('r0')
      expect((await readAll(client, server.url)).text).to.equal('r1')
      expect(server.connections).to.equal(2)
    })

    it(`${kind}: a chunked reply goes to undici instead (same bytes)`, async () => {
      server = await scripted(kind, () => ({write: 'HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n'}))
      expect(await readAll(client, server.url)).to.deep.equal({status: 200, text: 'hello world'})
      expect(server.requests.length, 'asked once by each reader').to.equal(2)
    })

    it(`${kind}: a connection lost mid-body is a retryable E_NETWORK`, async () => {
      server = await scripted(kind, () => ({write: 'HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nonly this', close: true}))
      const e = await failure(readAll(client, server.url))
      expect(isMsrError(e) && e.code === 'E_NETWORK' && e.retryable, e.message).to.equal(true)
    })

    it(`${kind}: a head over 64 KiB, and a bad Content-Length, are a retryable E_PROTOCOL`, async () => {
      server = await scripted(kind, ({request}) => ({write: request === 0 ? `HTTP/1.1 200 OK\r\nX-Big: ${'a'.repeat(70 * 1024)}\r\nContent-Length: 1\r\n\r\nx` : 'HTTP/1.1 200 OK\r\nContent-Length: 3, 4\r\n\r\nabc'}))
      for (let i = 0; i < 2; i++) {
        const e = await failure(readAll(client, server.url))
        expect(isMsrError(e) && e.code === 'E_PROTOCOL' && e.retryable, e.message).to.equal(true)
      }
    })

    it(`${kind}: no head within the head timeout is a retryable E_TIMEOUT`, async () => {
      server = await scripted(kind, () => ({write: '', hold: true}))
      const started = Date.now()
      const e = await failure(openBody({url: server.url, headers: {}, headersFor: () => ({}), headersTimeoutMs: 300, maxRetryAfterMs: 1000, raw: client}))
      expect(isMsrError(e) && e.code === 'E_TIMEOUT', e.message).to.equal(true)
      expect(Date.now() - started).to.be.within(295, 5000)
    })
  }

  it('an idle connection is closed after idleMs; the next request opens a new one', async () => {
    client.close()
    client = new RawHttpClient({connectTimeoutMs: 2000, idleMs: 100})
    let closed = 0
    server = await scripted('http', ({request}) => ({write: ok(`reply ${request}`)}))
    expect((await readAll(client, server.url)).text).to.equal('reply 0')
    expect((await readAll(client, server.url)).text).to.equal('reply 1')
    expect(server.connections, 'reused while fresh').to.equal(1)
    for (let i = 0; i < 100 && closed === 0; i++) {
      await new Promise((resolve) => setTimeout(resolve, 20))
      closed = server.closed
    }
    expect(closed, 'the idle connection closed').to.equal(1)
    expect((await readAll(client, server.url)).text).to.equal('reply 2')
    expect(server.connections).to.equal(2)
  })

  it('requests on one abort signal add one listener to it; aborting fails the one waiting for its head', async () => {
    server = await scripted('http', ({request}) => (request === 20 ? {write: '', hold: true} : {write: ok(`reply ${request}`)}))
    const controller = new AbortController()
    const read = async () => {
      const res = await openBody({url: server!.url, headers: {}, headersFor: () => ({}), headersTimeoutMs: 2000, maxRetryAfterMs: 1000, raw: client, signal: controller.signal})
      const parts: Buffer[] = []
      await res.body.pump((d) => void parts.push(Buffer.from(d)))
      return Buffer.concat(parts).toString()
    }
    for (let i = 0; i < 20; i++) expect(await read()).to.equal(`reply ${i}`)
    expect(getEventListeners(controller.signal, 'abort').length).to.equal(1)
    const waiting = failure(read())
    for (let i = 0; i < 100 && server.requests.length < 21; i++) await new Promise((resolve) => setTimeout(resolve, 10))
    controller.abort(new Error('stop now'))
    expect((await waiting).message).to.match(/stop now|aborted/)
    expect(getEventListeners(controller.signal, 'abort').length).to.equal(0)
  })

  it('a header value with a line break is never sent', async () => {
    server = await scripted('http', () => ({write: ok('x')}))
    const e = await failure(readAll(client, server.url, {'X-Evil': 'a\r\nInjected: 1'}))
    expect(e.message).to.match(/not a valid header/)
    expect(server.requests).to.deep.equal([])
  })

  it('a refused connection fails at once with the socket error', async () => {
    const probe = net.createServer()
    await new Promise<void>((resolve) => probe.listen(0, '127.0.0.1', resolve))
    const port = (probe.address() as AddressInfo).port
    await new Promise((resolve) => probe.close(resolve))
    const e = await failure(readAll(client, `http://127.0.0.1:${port}/x`))
    expect(isMsrError(e) && e.code === 'E_NETWORK', e.message).to.equal(true)
    expect(e.message).to.match(/ECONNREFUSED/)
  })
})
