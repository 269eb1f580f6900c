/**
 * Pure scheduling of one file's missing chunks over connections. A segment is a run of chunks
 * [next, end) that one connection fetches in order; `next` is the chunk it is filling now. Pieces
 * are cut in file order, so the finished region stays nearly contiguous: the in-order SHA-256
 * then hashes mostly from memory, and a checkpoint's hash state sits near the durable prefix.
 */
export interface Segment {
  next: number
  /** Exclusive; shrinks when an idle connection takes over the tail. */
  end: number
}

/** Smallest piece a connection takes when there are several; at most MAX_PIECES pieces per file. */
export const PIECE_MIN_BYTES = 16 * 1024 * 1024
export const MAX_PIECES = 256

/** Runs of consecutive missing chunks (`null` = missing). */
export function missingRuns(done: ReadonlyArray<unknown>): Segment[] {
  const runs: Segment[] = []
  for (let i = 0; i < done.length; i++) {
    if (done[i] !== null) continue
    const last = runs.at(-1)
    if (last && last.end === i) last.end = i + 1
    else runs.push({next: i, end: i + 1})
  }
  return runs
}

/**
 * Runs cut so that a segment starts at every chunk in `starts` (chunks a checkpoint caught half-way:
 * their connection resumes from the exact byte, not from inside another run).
 */
export function splitAt(runs: readonly Segment[], starts: ReadonlyMap<number, unknown>): Segment[] {
  if (starts.size === 0) return [...runs]
  const out: Segment[] = []
  for (const run of runs) {
    let from = run.next
    for (let i = run.next + 1; i < run.end; i++) {
      if (!starts.has(i)) continue
      out.push({next: from, end: i})
      from = i
    }
    out.push({next: from, end: run.end})
  }
  return out
}

export function pieceChunksFor(chunkCount: number, chunkSizeBytes: number): number {
  return Math.max(Math.ceil(PIECE_MIN_BYTES / chunkSizeBytes), Math.ceil(chunkCount / MAX_PIECES))
}

/**
 * The first `want` segments to start, and the queue the others take from. One connection fetches
 * each run whole (one request per run); several cut the runs into pieces, and split the largest
 * piece while there are fewer pieces than connections (a small file still uses them all).
 */
export function planSegments(runs: readonly Segment[], want: number, pieceChunks: number): {active: Segment[]; queue: Segment[]} {
  let pieces = runs.map((r) => ({...r}))
  if (want > 1) {
    pieces = []
    for (const run of runs) {
      for (let start = run.next; start < run.end; start += pieceChunks) pieces.push({next: start, end: Math.min(run.end, start + pieceChunks)})
    }
    while (pieces.length < want) {
      let big: Segment | undefined
      for (const p of pieces) if (!big || p.end - p.next > big.end - big.next) big = p
      if (!big || big.end - big.next < 2) break
      const mid = big.next + Math.ceil((big.end - big.next) / 2)
      pieces.push({next: mid, end: big.end})
      big.end = mid
    }
    pieces.sort((a, b) => a.next - b.next)
  }
  return {active: pieces.slice(0, Math.max(1, want)), queue: pieces.slice(Math.max(1, want))}
}

function largest(active: readonly Segment[]): Segment | undefined {
  let victim: Segment | undefined
  for (const seg of active) if (!victim || seg.end - seg.next > victim.end - victim.next) victim = seg
  return victim
}

/**
 * Work for a connection that is idle: a queued piece, else the back half of the largest segment in
 * flight (its owner keeps the chunk it is filling and at least one more). Mutates `active`/`queue`.
 */
export function takeOver(active: Segment[], queue: Segment[]): Segment | undefined {
  const queued = queue.shift()
  if (queued) {
    active.push(queued)
    return queued
  }
  const victim = largest(active)
  if (!victim || victim.end - victim.next < 3) return undefined
  const mid = victim.next + 1 + Math.floor((victim.end - victim.next - 1) / 2)
  const stolen = {next: mid, end: victim.end}
  victim.end = mid
  active.push(stolen)
  return stolen
}

/**
 * Work for a connection added while the download runs: the largest segment keeps one piece and the
 * rest of it is cut into queued pieces in file order. Mutates `active`/`queue`.
 */
export function addConnection(active: Segment[], queue: Segment[], pieceChunks: number): Segment | undefined {
  if (queue.length === 0) {
    const victim = largest(active)
    if (victim && victim.end - victim.next >= 2 * pieceChunks) {
      const rest = {next: victim.next + pieceChunks, end: victim.end}
      victim.end = rest.next
      for (let start = rest.next; start < rest.end; start += pieceChunks) queue.push({next: start, end: Math.min(rest.end, start + pieceChunks)})
    }
  }
  return takeOver(active, queue)
}

/** Automatic connections: a connection this fast is not held back by its link, one is enough. */
export const FAST_CONNECTION_BYTES_PER_SEC = 32 * 1024 * 1024

/**
 * Connections to add after one measurement of the average rate per connection. Fast: none (a
 * loopback or LAN link spends no CPU on more). Slow: straight to the cap, not doubling step by
 * step: on an edge link each connection is held back by the server's per-connection limit or by
 * the round trip, so every connection opened late costs its share of the whole transfer (doubling
 * once a second left 7 of 8 connections idle for the first seconds: 1.43 x aria2c -x8).
 */
export function connectionsToAdd(active: number, max: number, perConnectionBytesPerSec: number): number {
  if (active >= max || perConnectionBytesPerSec >= FAST_CONNECTION_BYTES_PER_SEC) return 0
  return max - active
}
