import {FIRST_STEP_CONNECTIONS, type Segment, addConnection, connectionsToAdd, planSegments, rewardedConnections, spreadOver, takeOver} from './segment-planner.js'

export interface ScheduleOptions {
  /** Missing byte runs (chunk indexes), already split where a kept partial chunk starts. */
  runs: Segment[]
  /** Connections to use (the most, when adaptive). */
  connections: number
  /**
   * Start with one connection; while it is slow, open the first step (FIRST_STEP_CONNECTIONS); the
   * rest up to `connections` only when the first step kept each connection's rate (rewardedConnections).
   */
  adaptive: boolean
  /** Largest piece a connection takes, in chunks. */
  pieceChunks: number
  signal: AbortSignal
  /** Body bytes received so far by the whole download (the rate measurement). */
  receivedBytes(): number
  /** Fetches one segment to its end (with its own retries); a rejection ends that connection. */
  fetch(seg: Segment): Promise<void>
  /** The number of connections running changed. */
  connectionsChanged?(running: number): void
}

/** Automatic connections: the rate per connection is measured over this window (see connectionsToAdd). */
const ADAPTIVE_INTERVAL_MS = 50
const ADAPTIVE_WINDOW_MS = 150
/**
 * The first reply's head took this long: a long link. Its connection was usually warmed while the
 * hub listed the files, so this is one round trip (two with the hub's redirect) plus the server's
 * time; on loopback or a LAN it takes a few ms, tens on a loaded machine. Pieces are then cut in
 * whole shares (segment-planner: pieceChunksNow).
 */
const LONG_LINK_HEAD_MS = 40
/** A head this late: every connection is opened at once, without waiting for a rate measurement. */
const OPEN_ALL_HEAD_MS = 80
/** No head yet after this long: as late a head as that (connect and TLS may be what takes the time). */
const NO_HEAD_YET_MS = 250
/** The first step's rate is measured over this window at least, once each connection has its head. */
const PROBE_WINDOW_MS = 300
/** Connections of the first step that got no head by then are not waited for. */
const PROBE_WAIT_MS = 2000

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
  private startedAt = 0
  /** How long the first reply's head took (undefined until it arrived). */
  private headMs: number | undefined
  /** Reply heads so far: while there is one, every byte is the first connection's. */
  private heads = 0
  /**
   * Bytes received when the second reply head arrived: the end of the first connection's time
   * alone, exactly. The last 50 ms tick before it could come 50 ms early (more on a loaded
   * machine), leaving a 100 ms link's lone span (about two round trips) under the 150 ms a rate needs.
   */
  private loneEnd: {bytes: number; at: number} | undefined

  constructor(private readonly o: ScheduleOptions) {}

  /** A reply's head arrived (the first one tells how long the link is). */
  headArrived(): void {
    const now = performance.now()
    this.headMs ??= now - this.startedAt
    this.heads++
    if (this.heads === 2) this.loneEnd = {bytes: this.o.receivedBytes(), at: now}
  }

  /** A long link: whole shares per connection, and a connection whose reply was cut short is not replaced. */
  private get long(): boolean {
    return this.headMs !== undefined && this.headMs >= LONG_LINK_HEAD_MS
  }

  /** Settles when every connection, including those added on the way, has settled. */
  async run(): Promise<PromiseSettledResult<void>[]> {
    const {o} = this
    this.startedAt = performance.now()
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
   * A long link shows before any byte arrives: the first reply's head takes a round trip or more
   * (OPEN_ALL_HEAD_MS). Then the first step is opened at once, as aria2c does; waiting for a rate
   * measurement cost 1.5 s of 8 connections on a 100 ms link. Otherwise the rate is measured from
   * the first body byte (connect and TLS are not the link's speed). Then, once the first step runs,
   * the rest up to the cap only if each of its connections still gets about the lone one's rate.
   */
  private growConnections(workers: Promise<void>[]): NodeJS.Timeout {
    const {o} = this
    let phase: 'one' | 'probe' | 'done' = 'one'
    /** Window start of the current measurement. */
    let mark: {bytes: number; at: number} | undefined
    /** The first connection alone: from its first byte to the last tick before another's head. */
    let lone: {from: {bytes: number; at: number}; to: {bytes: number; at: number}} | undefined
    let probeFrom = 0
    const loneRate = () => {
      const to = lone && this.loneEnd && this.loneEnd.at > lone.from.at ? this.loneEnd : lone?.to
      return lone && to && to.at - lone.from.at >= ADAPTIVE_WINDOW_MS ? (to.bytes - lone.from.bytes) / ((to.at - lone.from.at) / 1000) : 0
    }
    const open = (add: number, reserve: number) => {
      if (add <= 0) return
      if (this.long) {
        for (const seg of spreadOver(this.active, this.unassigned, add, reserve)) workers.push(this.connection(seg))
        return
      }
      for (let i = 0; i < add; i++) {
        const seg = addConnection(this.active, this.unassigned, o.connections, o.pieceChunks)
        if (seg) workers.push(this.connection(seg))
      }
    }
    const firstStep = (perConnection: number) => {
      const add = connectionsToAdd(this.running, o.connections, perConnection)
      if (add === 0) return false
      open(add, Math.max(0, o.connections - FIRST_STEP_CONNECTIONS))
      ;[phase, probeFrom, mark] = ['probe', performance.now(), undefined]
      return true
    }
    const timer = setInterval(() => {
      if (o.signal.aborted || phase === 'done') return
      const now = performance.now()
      const received = o.receivedBytes()
      if (this.heads <= 1 && received > 0) lone = {from: lone?.from ?? {bytes: received, at: now}, to: {bytes: received, at: now}}
      if (phase === 'one') {
        const headMs = this.headMs ?? (now - this.startedAt >= NO_HEAD_YET_MS ? now - this.startedAt : 0)
        if (!mark && headMs >= OPEN_ALL_HEAD_MS && firstStep(0)) return
        if (!mark) {
          if (received > 0) mark = {bytes: received, at: now}
          return
        }
        if (now - mark.at < ADAPTIVE_WINDOW_MS) return
        if (!firstStep((received - mark.bytes) / ((now - mark.at) / 1000) / Math.max(1, this.running))) mark = {bytes: received, at: now}
        return
      }
      // Probe: measured once every connection of the first step has its reply flowing.
      if (!mark) {
        if (this.heads < this.running && now - probeFrom < PROBE_WAIT_MS) return
        mark = {bytes: received, at: now}
        return
      }
      if (now - mark.at < Math.max(PROBE_WINDOW_MS, 3 * (this.headMs ?? 0))) return
      phase = 'done'
      clearInterval(timer)
      const perConnection = (received - mark.bytes) / ((now - mark.at) / 1000) / Math.max(1, this.running)
      open(rewardedConnections(this.running, o.connections, perConnection, loneRate()), 0)
    }, ADAPTIVE_INTERVAL_MS)
    return timer
  }

  private async connection(first: Segment): Promise<void> {
    this.running++
    // The segments planned count too: connections started together must not size blocks one by one.
    this.o.connectionsChanged?.(Math.max(this.running, this.active.length))
    try {
      let seg: Segment | undefined = first
      while (seg) {
        await this.o.fetch(seg)
        this.active = this.active.filter((s) => s !== seg)
        // Its reply was cut short, so its connection is closed: on a long link a new one costs
        // TCP and TLS handshakes (three round trips) and counts against the server, while the
        // connections still running take what is left over their kept-alive ones.
        if (seg.cut && this.long && this.running > 1) break
        seg = takeOver(this.active, this.unassigned, this.running, this.o.pieceChunks, this.long)
      }
    } finally {
      this.running--
      this.o.connectionsChanged?.(this.running)
    }
  }
}
