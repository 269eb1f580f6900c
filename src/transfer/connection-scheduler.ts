import {type Segment, addConnection, connectionsToAdd, planSegments, takeOver} from './segment-planner.js'

export interface ScheduleOptions {
  /** Missing byte runs (chunk indexes), already split where a kept partial chunk starts. */
  runs: Segment[]
  /** Connections to use (the most, when adaptive). */
  connections: number
  /** Start with one connection and add more while each one is slow. */
  adaptive: boolean
  /** Largest piece a connection takes, in chunks. */
  pieceChunks: number
  signal: AbortSignal
  /** Body bytes received so far by the whole download (the rate measurement). */
  receivedBytes(): number
  /** Fetches one segment to its end (with its own retries); a rejection ends that connection. */
  fetch(seg: Segment): Promise<void>
}

/** Automatic connections: the rate per connection is measured over this window (see connectionsToAdd). */
const ADAPTIVE_INTERVAL_MS = 50
const ADAPTIVE_WINDOW_MS = 150
/** The first reply's head took this long (several round trips): a long link, see run(). */
const LONG_LINK_HEAD_MS = 250

/**
 * Runs connections over one round of missing segments: each connection fetches its segment, then
 * takes over queued or stolen work until none is left (segment-planner decides what). Adaptive:
 * connections are added while each one is slow.
 */
export class ConnectionScheduler {
  private active: Segment[] = []
  /** Missing chunks no connection has taken yet. */
  private unassigned: Segment[] = []
  /** Connections running now. */
  private running = 0
  private firstHeadAt: number | undefined

  constructor(private readonly o: ScheduleOptions) {}

  /** A reply's head arrived (the first one tells how long the link is). */
  headArrived(): void {
    this.firstHeadAt ??= performance.now()
  }

  /** Settles when every connection, including those added on the way, has settled. */
  async run(): Promise<PromiseSettledResult<void>[]> {
    const {o} = this
    const plan = planSegments(o.runs, o.adaptive ? 1 : Math.max(1, o.connections), o.pieceChunks)
    this.active = plan.active
    this.unassigned = plan.unassigned
    const workers: Promise<void>[] = this.active.map((seg) => this.connection(seg))
    const growTimer = o.adaptive && o.connections > 1 ? this.growConnections(workers) : undefined
    try {
      let results: PromiseSettledResult<void>[] = []
      // Workers may be added while we wait: settle until no new one appeared.
      while (results.length < workers.length) results = await Promise.allSettled([...workers])
      return results
    } finally {
      if (growTimer) clearInterval(growTimer)
    }
  }

  /**
   * A long link shows before any byte arrives: the first reply's head takes many round trips (TCP,
   * TLS, the hub's redirect). Then every connection is opened at once, as aria2c does; waiting for
   * a rate measurement cost 1.5 s of 8 connections on a 100 ms link. Otherwise the rate is measured
   * from the first body byte (connect and TLS are not the link's speed).
   */
  private growConnections(workers: Promise<void>[]): NodeJS.Timeout {
    const {o} = this
    const startedAt = performance.now()
    let lastBytes = -1
    let lastAt = 0
    const grow = (perConnection: number) => {
      const add = connectionsToAdd(this.active.length, o.connections, perConnection)
      for (let i = 0; i < add; i++) {
        const seg = addConnection(this.active, this.unassigned, o.connections, o.pieceChunks)
        if (seg) workers.push(this.connection(seg))
      }
    }
    return setInterval(() => {
      if (o.signal.aborted) return
      const now = performance.now()
      const received = o.receivedBytes()
      if (lastBytes < 0 && (this.firstHeadAt ?? now) - startedAt >= LONG_LINK_HEAD_MS) return grow(0)
      if (lastBytes < 0) {
        if (received > 0) [lastBytes, lastAt] = [received, now]
        return
      }
      if (now - lastAt < ADAPTIVE_WINDOW_MS) return
      grow((received - lastBytes) / ((now - lastAt) / 1000) / Math.max(1, this.active.length))
      ;[lastBytes, lastAt] = [received, now]
    }, ADAPTIVE_INTERVAL_MS)
  }

  private async connection(first: Segment): Promise<void> {
    this.running++
    try {
      let seg: Segment | undefined = first
      while (seg) {
        await this.o.fetch(seg)
        this.active = this.active.filter((s) => s !== seg)
        seg = takeOver(this.active, this.unassigned, this.running, this.o.pieceChunks)
      }
    } finally {
      this.running--
    }
  }
}
