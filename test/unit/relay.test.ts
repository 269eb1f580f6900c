import {expect} from 'chai'
import net from 'node:net'

import {mulberry32} from '../support/process.js'
import {Relay, type RelayOptions} from '../support/relay.js'

/**
 * The link stand-in of the benchmark and the transfer tests (test/support/relay.ts), against real
 * sockets on 127.0.0.1. Timing checks are lower bounds only (a loaded machine only adds time).
 */
function seededBytes(seed: number, n: number): Buffer {
  const next = mulberry32(seed)
  const buf = Buffer.allocUnsafe(n)
  for (let i = 0; i < n; i++) buf[i] = Math.floor(next() * 256)
  return buf
}

function listen(server: net.Server): Promise<number> {
  return new Promise((resolve) => server.listen(0, '127.0.0.1', () => resolve((server.address() as net.AddressInfo).port)))
}

/** Echoes what it reads; ends its side when the client ends its own. */
async function echoServer(): Promise<{server: net.Server; port: number}> {
  const server = net.createServer({allowHalfOpen: true}, (s) => {
    s.on('error', () => {})
    s.pipe(s)
  })
  return {server, port: await listen(server)}
}

/** Sends `body` to every connection as soon as it opens, then ends. */
async function senderServer(body: Buffer): Promise<{server: net.Server; port: number}> {
  const server = net.createServer((s) => {
    s.on('error', () => {})
    s.end(body)
  })
  return {server, port: await listen(server)}
}

interface Received {
  data: Buffer
  firstByteMs: number
  error?: NodeJS.ErrnoException
}

/** Connects through the relay, writes `send` (then ends), reads until the end, maybe pausing now and then. */
function exchange(port: number, send?: Buffer, slowReader = false): Promise<Received> {
  return new Promise((resolve) => {
    const started = performance.now()
    const parts: Buffer[] = []
    let firstByteMs = -1
    const socket = net.connect({port, host: '127.0.0.1', allowHalfOpen: true}, () => {
      if (send) socket.end(send)
    })
    socket.on('data', (d: Buffer) => {
      if (firstByteMs < 0) firstByteMs = performance.now() - started
      parts.push(d)
      if (slowReader && parts.length % 5 === 0) {
        socket.pause()
        setTimeout(() => socket.resume(), 3)
      }
    })
    socket.on('end', () => socket.end())
    let error: NodeJS.ErrnoException | undefined
    socket.on('error', (e) => (error = e))
    socket.on('close', () => resolve({data: Buffer.concat(parts), firstByteMs, error}))
  })
}

describe('relay: a long, slow or lossy link on 127.0.0.1', function () {
  this.timeout(60_000)
  const closers: Array<() => Promise<void> | void> = []
  afterEach(async () => {
    for (const close of closers.splice(0)) await close()
  })

  async function relayTo(port: number, o: Omit<RelayOptions, 'targetPort'>): Promise<Relay> {
    const relay = await Relay.start({targetPort: port, ...o})
    closers.push(() => relay.stop())
    return relay
  }

  const links: Array<[string, Omit<RelayOptions, 'targetPort'>]> = [
    ['no delay', {}],
    ['20 ms round trip', {rttMs: 20}],
    ['8 MB/s per connection, tiny window', {rttMs: 10, bytesPerSecPerConnection: 8e6, maxPendingBytes: 64 * 1024}],
    ['a 16 MB/s shared bottleneck', {rttMs: 10, sharedBytesPerSec: 16e6}],
  ]
  for (const [name, options] of links) {
    it(`keeps every byte and its order in both directions (${name}, seeded sizes, a slow reader)`, async () => {
      const {server, port} = await echoServer()
      closers.push(() => void server.close())
      const relay = await relayTo(port, options)
      const next = mulberry32(0x5eed + name.length)
      const sizes = [0, 1, 16383, 16385, ...Array.from({length: 4}, () => Math.floor(next() * 1_500_000))]
      const bodies = sizes.map((n, i) => seededBytes(i + 1, n))
      const got = await Promise.all(bodies.map((b, i) => exchange(relay.port, b, i % 2 === 0)))
      for (let i = 0; i < bodies.length; i++) {
        expect(got[i].error, `size ${sizes[i]}`).to.equal(undefined)
        expect(got[i].data.length, `size ${sizes[i]}`).to.equal(bodies[i].length)
        expect(got[i].data.equals(bodies[i]), `size ${sizes[i]}: same bytes in the same order`).to.equal(true)
      }
      const total = sizes.reduce((a, b) => a + b, 0)
      expect(relay.connections).to.equal(bodies.length)
      expect(relay.bytesToClient).to.equal(total)
      expect(relay.bytesToServer).to.equal(total)
      expect(relay.perConnection.map((c) => c.bytesToClient).sort((a, b) => a - b)).to.deep.equal([...sizes].sort((a, b) => a - b))
    })
  }

  it('adds the round trip: the first byte comes later than rttMs after connecting', async () => {
    const body = seededBytes(7, 1000)
    const sender = await senderServer(body)
    const echo = await echoServer()
    closers.push(() => void sender.server.close(), () => void echo.server.close())
    const rttMs = 200
    // The server speaks first: half a round trip for the connection to reach it, half for the bytes.
    const fromSender = await exchange((await relayTo(sender.port, {rttMs})).port)
    expect(fromSender.data.equals(body)).to.equal(true)
    expect(fromSender.firstByteMs).to.be.greaterThan(rttMs * 0.95)
    // The client speaks first: the handshake's round trip, then the request's.
    const fromEcho = await exchange((await relayTo(echo.port, {rttMs})).port, body)
    expect(fromEcho.data.equals(body)).to.equal(true)
    expect(fromEcho.firstByteMs).to.be.greaterThan(2 * rttMs * 0.95)
    // Without the handshake model, still one round trip per exchange.
    const noHandshake = await exchange((await relayTo(echo.port, {rttMs, handshakeMs: 0})).port, body)
    expect(noHandshake.firstByteMs).to.be.greaterThan(rttMs * 0.95)
  })

  it('drops each connection after dropAfterBytes towards the client, with a fresh budget per connection', async () => {
    const body = seededBytes(11, 1_000_000)
    const {server, port} = await senderServer(body)
    closers.push(() => void server.close())
    const dropAfterBytes = 300_007
    const relay = await relayTo(port, {dropAfterBytes, rttMs: 4})
    for (let i = 0; i < 3; i++) {
      const got = await exchange(relay.port)
      expect(got.error).to.equal(undefined)
      expect(got.data.length).to.equal(dropAfterBytes)
      expect(got.data.equals(body.subarray(0, dropAfterBytes))).to.equal(true)
    }
    expect(relay.connections).to.equal(3)
    expect(relay.perConnection.map((c) => [c.bytesToClient, c.dropped])).to.deep.equal([[dropAfterBytes, true], [dropAfterBytes, true], [dropAfterBytes, true]])
    expect(relay.bytesToClient).to.equal(3 * dropAfterBytes)
    // A body shorter than the budget passes whole.
    const small = await senderServer(body.subarray(0, 1000))
    closers.push(() => void small.server.close())
    const whole = await exchange((await relayTo(small.port, {dropAfterBytes})).port)
    expect(whole.data.equals(body.subarray(0, 1000))).to.equal(true)
  })

  it("dropWith 'rst' resets the connection: the client's next write fails, unlike after a FIN", async () => {
    const {server, port} = await senderServer(seededBytes(12, 500_000))
    closers.push(() => void server.close())
    // Linux reports a reset that arrives behind unread data as a plain end of stream, so the
    // difference shows on the client's next write: into a reset connection it fails.
    const writeAfterEnd = (relayPort: number) =>
      new Promise<{bytes: number; error?: string}>((resolve) => {
        let bytes = 0
        const socket = net.connect({port: relayPort, host: '127.0.0.1', allowHalfOpen: true})
        const done = (error?: string) => {
          socket.destroy()
          resolve({bytes, error})
        }
        socket.on('data', (d: Buffer) => (bytes += d.length))
        socket.on('error', (e: NodeJS.ErrnoException) => done(e.code))
        socket.on('end', () => {
          socket.write('more', (e) => (e ? undefined : setTimeout(() => socket.write('more', (e2) => (e2 ? undefined : setTimeout(() => done(), 200))), 50)))
        })
      })
    const reset = await relayTo(port, {dropAfterBytes: 100_000, dropWith: 'rst'})
    const afterReset = await writeAfterEnd(reset.port)
    expect(afterReset.error).to.be.oneOf(['ECONNRESET', 'EPIPE'])
    expect(afterReset.bytes).to.be.at.most(100_000)
    expect(reset.perConnection[0]).to.include({bytesToClient: 100_000, dropped: true})
    const fin = await relayTo(port, {dropAfterBytes: 100_000})
    expect(await writeAfterEnd(fin.port)).to.deep.equal({bytes: 100_000, error: undefined})
  })

  it('limits each connection, and a shared bottleneck limits all of them together', async () => {
    const body = seededBytes(13, 400_000)
    const {server, port} = await senderServer(body)
    closers.push(() => void server.close())
    const timed = async (o: Omit<RelayOptions, 'targetPort'>, connections: number) => {
      const relay = await relayTo(port, o)
      const t0 = performance.now()
      const got = await Promise.all(Array.from({length: connections}, () => exchange(relay.port)))
      for (const g of got) expect(g.data.equals(body)).to.equal(true)
      return performance.now() - t0
    }
    // 400 KB at 2 MB/s: at least 200 ms, however many connections run beside it.
    expect(await timed({bytesPerSecPerConnection: 2e6}, 1)).to.be.greaterThan(190)
    // Two connections through one 2 MB/s bottleneck: 800 KB take at least 400 ms.
    expect(await timed({sharedBytesPerSec: 2e6}, 2)).to.be.greaterThan(380)
  })

  it('refuses bad options and resets a client when the target refuses', async () => {
    let error: unknown
    await Relay.start({targetPort: 1, rttMs: -1}).catch((e) => (error = e))
    expect(String(error)).to.match(/rttMs/)
    const closed = net.createServer()
    const deadPort = await listen(closed)
    await new Promise((r) => closed.close(r))
    const relay = await relayTo(deadPort, {})
    const got = await exchange(relay.port, Buffer.from('hello'))
    expect(got.data.length).to.equal(0)
    expect(got.error?.code).to.equal('ECONNRESET')
  })
})
