import net from 'node:net'

import {Lane, SharedLink} from './relay-link.js'

/**
 * A TCP relay on 127.0.0.1 that stands in for a long, slow or lossy link in front of a real server
 * (there is no `tc netem` on these machines). It relays bytes, not HTTP, so TLS passes through
 * untouched. Plain Node: tests and the benchmark both use it.
 *
 * The link model, per direction of each connection:
 *  - propagation: every chunk arrives `rttMs / 2` after it left;
 *  - handshake: a client's first bytes leave no earlier than `handshakeMs` (default `rttMs`, one
 *    round trip, as a TCP handshake costs) after it connected. So a fresh connection costs what it
 *    costs on a real link, which is what makes connection reuse (or its absence) visible;
 *    `handshakeMs: 0` leaves only the per-chunk delay;
 *  - serialisation: with `bytesPerSecPerConnection` and/or `sharedBytesPerSec` a chunk of n bytes
 *    occupies the link for n / rate seconds; the shared rate is one bottleneck for every connection
 *    (server to client), shared about fairly (round robin), so more connections add no capacity;
 *  - loss: with `dropAfterBytes` each connection is closed once that many bytes reached its client
 *    (every connection gets a fresh budget); `dropWith: 'rst'` resets instead of closing with FIN.
 * Ordering is exact. Buffering is bounded like a TCP window: above `maxPendingBytes` (default 4 MiB)
 * in flight, or more than `maxQueueMs` (default 100) of serialisation queued, the source socket is
 * paused until the lane drains, so one connection carries at most maxPendingBytes / (rttMs / 2) per
 * second. A client connecting while the target refuses is reset. The link model is relay-link.ts.
 */
export interface RelayOptions {
  targetPort: number
  targetHost?: string
  rttMs?: number
  handshakeMs?: number
  bytesPerSecPerConnection?: number
  sharedBytesPerSec?: number
  dropAfterBytes?: number
  dropWith?: 'fin' | 'rst'
  maxPendingBytes?: number
  maxQueueMs?: number
}

export interface RelayConnectionStats {
  id: number
  /** Bytes delivered to the client (server to client). */
  bytesToClient: number
  /** Bytes delivered to the server (client to server). */
  bytesToServer: number
  /** Closed by `dropAfterBytes`. */
  dropped: boolean
  openedAtMs: number
  closedAtMs?: number
}

export class Relay {
  readonly host = '127.0.0.1'
  /** Every connection accepted so far, in order. */
  readonly perConnection: RelayConnectionStats[] = []
  /** Most connections open at the same time. */
  maxConcurrent = 0
  private open = 0
  private readonly sockets = new Set<net.Socket>()
  private readonly lanes = new Set<Lane>()
  private readonly shared: SharedLink | undefined
  private readonly started = performance.now()

  private constructor(
    private readonly server: net.Server,
    readonly port: number,
    private readonly o: RelayOptions,
  ) {
    this.shared = o.sharedBytesPerSec ? new SharedLink(o.sharedBytesPerSec) : undefined
    server.on('connection', (client) => this.accept(client))
  }

  static async start(o: RelayOptions): Promise<Relay> {
    for (const [k, v] of Object.entries(o)) {
      if (typeof v === 'number' && !(Number.isFinite(v) && v >= 0)) throw new Error(`relay option ${k} must be a number >= 0, got ${v}`)
    }
    const server = net.createServer({allowHalfOpen: true, pauseOnConnect: true})
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject)
      server.listen(0, '127.0.0.1', () => resolve())
    })
    return new Relay(server, (server.address() as net.AddressInfo).port, o)
  }

  /** Connections accepted so far. */
  get connections(): number {
    return this.perConnection.length
  }

  get bytesToClient(): number {
    return this.perConnection.reduce((sum, c) => sum + c.bytesToClient, 0)
  }

  get bytesToServer(): number {
    return this.perConnection.reduce((sum, c) => sum + c.bytesToServer, 0)
  }

  url(scheme: 'http' | 'https' = 'http'): string {
    return `${scheme}://${this.host}:${this.port}`
  }

  /** Forgets the counters (between benchmark runs); open connections keep being relayed. */
  resetCounters(): void {
    this.perConnection.length = 0
    this.maxConcurrent = this.open
  }

  async stop(): Promise<void> {
    for (const lane of this.lanes) lane.close()
    for (const s of this.sockets) s.destroy()
    await new Promise<void>((resolve) => this.server.close(() => resolve()))
  }

  private accept(client: net.Socket): void {
    const rtt = this.o.rttMs ?? 0
    const oneWay = rtt / 2
    const openedAt = performance.now()
    const stats: RelayConnectionStats = {id: this.perConnection.length, bytesToClient: 0, bytesToServer: 0, dropped: false, openedAtMs: openedAt - this.started}
    this.perConnection.push(stats)
    this.open++
    this.maxConcurrent = Math.max(this.maxConcurrent, this.open)
    const upstream = new net.Socket({allowHalfOpen: true})
    upstream.pause()
    this.sockets.add(client).add(upstream)
    client.setNoDelay(true)
    upstream.setNoDelay(true)
    const lanes: Lane[] = []
    let finished = false
    /** 'drop': dropAfterBytes was reached. 'reset': `failed` errored (the other side is reset, as a
     * reset or a refused connection would reach it through a real link). 'destroy': all done. */
    const finish = (how: 'destroy' | 'drop' | 'reset', lastPiece?: Buffer, failed?: net.Socket) => {
      if (finished) return
      finished = true
      for (const l of lanes) {
        l.close()
        this.lanes.delete(l)
      }
      if (how === 'reset') {
        for (const s of [client, upstream]) {
          if (s !== failed && !s.destroyed && !s.connecting) s.resetAndDestroy()
          else s.destroy()
        }
        return
      }
      upstream.destroy()
      if (how === 'destroy') {
        client.destroy()
      } else if (this.o.dropWith === 'rst') {
        // Reset once the last piece is in the kernel: a reset discards what libuv still queues.
        if (lastPiece && lastPiece.length > 0) client.write(lastPiece, () => client.resetAndDestroy())
        else client.resetAndDestroy()
      } else {
        // FIN after the last piece; the client closes its side (destroying here could reset data
        // the client has not read yet). One that never does is cut off later.
        if (lastPiece && lastPiece.length > 0) client.end(lastPiece)
        else client.end()
        setTimeout(() => client.destroy(), 30_000).unref()
      }
    }
    const common = {maxPendingBytes: this.o.maxPendingBytes ?? 4 * 1024 * 1024, maxQueueMs: this.o.maxQueueMs ?? 100, delayMs: oneWay}
    const toServer = new Lane(client, upstream, {
      ...common,
      gateAt: openedAt + (this.o.handshakeMs ?? rtt),
      bytesPerSec: this.o.bytesPerSecPerConnection,
      deliver: (buf) => {
        stats.bytesToServer += buf.length
        upstream.write(buf)
        return true
      },
    })
    const toClient = new Lane(upstream, client, {
      ...common,
      // The server learns of the connection half a round trip after the client made it.
      gateAt: openedAt + oneWay,
      bytesPerSec: this.o.bytesPerSecPerConnection,
      shared: this.shared,
      deliver: (buf) => {
        const budget = this.o.dropAfterBytes
        if (budget !== undefined && stats.bytesToClient + buf.length >= budget) {
          const part = buf.subarray(0, budget - stats.bytesToClient)
          stats.bytesToClient += part.length
          stats.dropped = true
          finish('drop', part)
          return false
        }
        stats.bytesToClient += buf.length
        client.write(buf)
        return true
      },
    })
    lanes.push(toServer, toClient)
    this.lanes.add(toServer).add(toClient)
    let closes = 0
    for (const s of [client, upstream]) {
      s.on('error', () => finish('reset', undefined, s))
      s.on('close', () => {
        this.sockets.delete(s)
        // A side gone for good (reset, or both directions ended): nothing more can flow.
        if (s.destroyed && !(s.readableEnded && s.writableFinished)) finish('destroy')
        if (++closes === 2) {
          stats.closedAtMs = performance.now() - this.started
          this.open--
          finish('destroy')
        }
      })
    }
    // Connect at once: the client's bytes are held back by the handshake gate anyway, and a write
    // to a socket that is not yet connecting would fail instead of waiting for the connection.
    upstream.connect(this.o.targetPort, this.o.targetHost ?? '127.0.0.1', () => upstream.resume())
    client.resume()
  }
}
