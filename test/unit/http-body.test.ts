import crypto from 'node:crypto'
import net from 'node:net'
import tls from 'node:tls'
import type {AddressInfo} from 'node:net'

import {expect} from 'chai'
import {Agent} from 'undici'

import {openBody} from '../../src/transfer/http-body.js'
import {STOP} from '../../src/transfer/body.js'
import {RawHttpClient} from '../../src/transfer/raw-http.js'
import {mulberry32} from '../support/process.js'
import {TRANSPORTS, makeTestCertificate} from '../support/tls.js'

/**
 * The body pipeline under random conditions: replies cut into random pieces with random gaps,
 * consumers that pause at random (rate limit, disk), stop, or abort. Whatever happens, the bytes
 * handed to the consumer are exactly a prefix of the source, in order, and pump() settles only
 * after the consumer's last wait settled. Many seeds, over plain TCP and TLS, through both readers.
 */
/** Both body readers: undici, and the onread reader (raw-http.ts) that serves plain and TLS bodies without a proxy. */
const CLIENTS = ['undici', 'raw'] as const

interface Server {
  url: string
  close(): Promise<void>
}

async function startServer(kind: 'http' | 'https', body: Buffer, rng: () => number): Promise<Server> {
  const sockets = new Set<net.Socket>()
  const onSocket = (socket: net.Socket) => {
    sockets.add(socket)
    socket.on('close', () => sockets.delete(socket))
    socket.on('error', () => {})
    let head = ''
    const onData = (d: Buffer) => {
      head += d.toString('latin1')
      if (!head.includes('\r\n\r\n')) return
      socket.off('data', onData)
      socket.write(`HTTP/1.1 200 OK\r\nContent-Length: ${body.length}\r\nContent-Type: application/octet-stream\r\n\r\n`)
      let off = 0
      const step = () => {
        if (socket.destroyed) return
        if (off >= body.length) return
        const n = 1 + Math.floor(rng() * Math.min(256 * 1024, body.length - off))
        const ok = socket.write(body.subarray(off, off + n))
        off += n
        const next = () => (rng() < 0.3 ? setTimeout(step, Math.floor(rng() * 3)) : setImmediate(step))
        if (ok) next()
        else socket.once('drain', next)
      }
      step()
    }
    socket.on('data', onData)
  }
  let server: net.Server
  if (kind === 'https') {
    const c = makeTestCertificate()
    server = tls.createServer({key: c.key, cert: c.cert}, onSocket)
  } else {
    server = net.createServer(onSocket)
  }
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
  const port = (server.address() as AddressInfo).port
  return {
    url: `${kind}://127.0.0.1:${port}/blob`,
    close: () => new Promise<void>((resolve) => {
      for (const s of sockets) s.destroy()
      server.close(() => resolve())
    }),
  }
}

describe('http-body: the body pipeline under random fragmentation, pauses and aborts', function () {
  this.timeout(120_000)
  // Trusts the throwaway certificate (the CLI under test gets it through NODE_EXTRA_CA_CERTS).
  const dispatcher = new Agent({connect: {ca: makeTestCertificate().cert}})
  const rawClient = new RawHttpClient({connectTimeoutMs: 10_000, tls: {ca: makeTestCertificate().cert}})
  after(() => {
    rawClient.close()
    return dispatcher.close()
  })

  for (const [client, kind] of CLIENTS.flatMap((c) => TRANSPORTS.map((k) => [c, k] as const))) {
    for (let seed = 1; seed <= 24; seed++) {
      it(`${client} ${kind}, seed ${seed}: the consumer sees an exact prefix of the source, in order`, async () => {
        const rng = mulberry32(seed)
        const size = 1 + Math.floor(rng() * 3 * 1024 * 1024)
        const source = crypto.createHash('sha256').update(String(seed)).digest()
        const body = Buffer.alloc(size)
        for (let i = 0; i < size; i += source.length) source.copy(body, i, 0, Math.min(source.length, size - i))
        for (let i = 0; i < size; i += 4093) body[i] = (i * 31 + seed) & 0xff
        const server = await startServer(kind, body, mulberry32(seed * 7919))
        const mode = ['whole', 'stop', 'abort', 'throw'][seed % 4]
        const limit = mode === 'whole' ? size : Math.floor(rng() * size)
        const abort = new AbortController()
        try {
          const res = await openBody({url: server.url, headers: {}, headersFor: () => ({}), signal: abort.signal, headersTimeoutMs: 10_000, maxRetryAfterMs: 1000, dispatcher, raw: client === 'raw' ? rawClient : false})
          expect(res.status).to.equal(200)
          const got = Buffer.alloc(size)
          let filled = 0
          let waiting = 0
          let lastWaitSettled = true
          const outcome = res.body.pump((data) => {
            expect(waiting, 'no piece while the consumer waits').to.equal(0)
            if (mode === 'stop' && filled >= limit) return STOP
            if (mode === 'throw' && filled >= limit) throw new Error('consumer failed')
            if (mode === 'abort' && filled >= limit && !abort.signal.aborted) abort.abort(new Error('aborted by the test'))
            data.copy(got, filled)
            filled += data.length
            // Overwrite the reader's memory: if anything read it later, the bytes would be wrong.
            if (rng() < 0.5) data.fill(0xee)
            if (rng() < 0.35) {
              waiting++
              lastWaitSettled = false
              return new Promise<void>((resolve) => setTimeout(() => {
                waiting--
                lastWaitSettled = true
                resolve()
              }, Math.floor(rng() * 4)))
            }
            return undefined
          })
          let result: string
          try {
            result = await outcome
          } catch (error) {
            result = `error: ${(error as Error).message}`
          }
          expect(lastWaitSettled, 'pump settled after the last wait').to.equal(true)
          expect(got.subarray(0, filled).equals(body.subarray(0, filled)), 'an exact prefix').to.equal(true)
          if (mode === 'whole') {
            expect(result).to.equal('end')
            expect(filled).to.equal(size)
          } else if (mode === 'stop') {
            expect(result).to.equal(filled >= size ? 'end' : 'stopped')
          } else if (mode === 'throw') {
            expect(result).to.match(filled >= size ? /^end$/ : /consumer failed/)
          } else {
            expect(result).to.match(filled >= size ? /^end$/ : /^error: /)
          }
        } finally {
          await server.close()
        }
      })
    }
  }
})
