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
  /**
   * The end was lowered while the segment was being fetched: its reply runs past the new end, so
   * its connection is closed there (HTTP/1.1 cannot stop a reply) and the next request needs a new one.
   */
  cut?: true
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

/** Cuts the next piece off the front of the unassigned runs (mutates `unassigned`). */
function cutPiece(unassigned: Segment[], chunks: number): Segment | undefined {
  const run = unassigned[0]
  if (!run) return undefined
  const piece = {next: run.next, end: Math.min(run.end, run.next + Math.max(1, chunks))}
  run.next = piece.end
  if (run.next >= run.end) unassigned.shift()
  return piece
}

function unassignedChunks(unassigned: readonly Segment[]): number {
  return unassigned.reduce((n, r) => n + r.end - r.next, 0)
}

/**
 * The size of the next piece for one of `connections`.
 * Short link (loopback, LAN): half an even share of what is left, between MIN_PIECE_CHUNKS and
 * `maxChunks`. Pieces shrink toward the end, so the connections finish together without taking
 * work from each other (a take-over ends the victim's reply early and costs it a new connection),
 * and they stay in file order, so the in-order SHA-256 hashes from memory.
 * Long link (a round trip of tens of ms or more): a whole even share, one request per connection,
 * as aria2c -s does. Every new request leaves its connection idle for a round trip, and the
 * shrinking pieces made that 15 % of each connection's time at the end of an edge download
 * (2 MiB pieces at 4 MB/s behind 100 ms); the chunks finished out of file order are read back
 * for the SHA-256 instead, which costs the disk, not the link.
 */
export function pieceChunksNow(unassigned: readonly Segment[], connections: number, maxChunks: number, long = false): number {
  const left = unassignedChunks(unassigned)
  if (long) return Math.max(Math.min(MIN_PIECE_CHUNKS, left), Math.ceil(left / Math.max(1, connections)))
  const share = Math.ceil(left / (2 * Math.max(1, connections)))
  return Math.max(Math.min(MIN_PIECE_CHUNKS, maxChunks), Math.min(maxChunks, share))
}

/** Pieces never get smaller than this many chunks (while that much is left). */
export const MIN_PIECE_CHUNKS = 2

/**
 * The first segments to start, one per connection; the rest stays unassigned (mutated as
 * connections take pieces). One connection fetches the first run whole: one request, no round
 * trips between pieces on a fast link. Several take pieces in file order (see pieceChunksNow).
 */
export function planSegments(runs: readonly Segment[], want: number, maxChunks: number): {active: Segment[]; unassigned: Segment[]} {
  const unassigned = runs.map((r) => ({...r}))
  if (want <= 1) {
    const first = unassigned.shift()
    return {active: first ? [first] : [], unassigned}
  }
  const active: Segment[] = []
  for (let i = 0; i < want && unassigned.length > 0; i++) active.push(cutPiece(unassigned, pieceChunksNow(unassigned, want, maxChunks))!)
  return {active, unassigned}
}

function largest(active: readonly Segment[]): Segment | undefined {
  let victim: Segment | undefined
  for (const seg of active) if (!victim || seg.end - seg.next > victim.end - victim.next) victim = seg
  return victim
}

/**
 * Work for a connection that is idle: the next piece of what is unassigned, else the back half of
 * the largest segment in flight when that is worth a new connection (its owner keeps the chunk it
 * is filling and more). Mutates `active`/`unassigned`.
 */
export function takeOver(active: Segment[], unassigned: Segment[], connections: number, maxChunks: number, long = false): Segment | undefined {
  // Alone, a connection takes each run whole: one request per run.
  const piece = connections <= 1 ? unassigned.shift() : cutPiece(unassigned, pieceChunksNow(unassigned, connections, maxChunks, long))
  if (piece) {
    active.push(piece)
    return piece
  }
  const victim = largest(active)
  if (!victim || victim.end - victim.next < 2 * MIN_PIECE_CHUNKS + 2) return undefined
  const mid = victim.next + 1 + Math.floor((victim.end - victim.next - 1) / 2)
  const stolen = {next: mid, end: victim.end}
  victim.end = mid
  victim.cut = true
  active.push(stolen)
  return stolen
}

/**
 * Work for a connection added while the download runs: when nothing is unassigned, the largest
 * segment (one request for a whole run) keeps one piece and gives back the rest. Mutates both.
 */
export function addConnection(active: Segment[], unassigned: Segment[], connections: number, maxChunks: number): Segment | undefined {
  if (unassigned.length === 0) {
    const victim = largest(active)
    if (victim && victim.end - victim.next >= 2 * maxChunks) {
      unassigned.push({next: victim.next + maxChunks, end: victim.end})
      victim.end = victim.next + maxChunks
      victim.cut = true
    }
  }
  return takeOver(active, unassigned, connections, maxChunks)
}

/**
 * Work for `adding` connections opened at once on a long link, in even shares, one request each
 * (see pieceChunksNow). When one segment is in flight (the first connection, asked for a whole
 * run), it keeps its first share and gives back the rest (in file order, ahead of what was
 * unassigned). `reserve` shares stay unassigned for connections that may be added later, so that
 * adding them cuts no reply short. Mutates both; returns one segment per connection that got work.
 */
export function spreadOver(active: Segment[], unassigned: Segment[], adding: number, reserve = 0): Segment[] {
  const victim = active.length === 1 ? active[0] : undefined
  const total = unassignedChunks(unassigned) + (victim ? victim.end - victim.next : 0)
  const share = Math.max(MIN_PIECE_CHUNKS, Math.ceil(total / (adding + reserve + (victim ? 1 : 0))))
  if (victim && victim.end - victim.next > share) {
    unassigned.unshift({next: victim.next + share, end: victim.end})
    victim.end = victim.next + share
    victim.cut = true
  }
  const added: Segment[] = []
  for (let i = 0; i < adding && unassigned.length > 0; i++) {
    const piece = cutPiece(unassigned, reserve > 0 ? share : Math.ceil(unassignedChunks(unassigned) / (adding - i)))!
    active.push(piece)
    added.push(piece)
  }
  return added
}

/** Automatic connections: a connection this fast is not held back by its link, one is enough. */
export const FAST_CONNECTION_BYTES_PER_SEC = 32 * 1024 * 1024

/** Automatic connections: the first step when one connection is slow (aria2c -x8's count). */
export const FIRST_STEP_CONNECTIONS = 8

/**
 * Connections to add after one measurement of the average rate per connection. Fast: none (a
 * loopback or LAN link spends no CPU on more). Slow: straight to the first step, not doubling step
 * by step: on an edge link each connection is held back by the server's per-connection limit or by
 * the round trip, so every connection opened late costs its share of the whole transfer (doubling
 * once a second left 7 of 8 connections idle for the first seconds: 1.43 x aria2c -x8).
 */
export function connectionsToAdd(active: number, max: number, perConnectionBytesPerSec: number): number {
  if (perConnectionBytesPerSec >= FAST_CONNECTION_BYTES_PER_SEC) return 0
  return Math.max(0, Math.min(max, FIRST_STEP_CONNECTIONS) - active)
}

/** A connection of the first step that keeps this much of the lone connection's rate: the link pays for more. */
export const REWARD_FRACTION = 0.7

/**
 * Connections to add beyond the first step: the rest up to `max` when the link rewarded the
 * first step, i.e. each of the connections now running still gets about what one got alone
 * (a per-connection limit: a CDN's shaping, the round trip); none when they share one bottleneck
 * (each got a fraction), or when the lone rate was never measured.
 */
export function rewardedConnections(running: number, max: number, perConnectionBytesPerSec: number, loneBytesPerSec: number): number {
  if (running >= max || loneBytesPerSec <= 0 || perConnectionBytesPerSec >= FAST_CONNECTION_BYTES_PER_SEC) return 0
  return perConnectionBytesPerSec >= REWARD_FRACTION * loneBytesPerSec ? max - running : 0
}
