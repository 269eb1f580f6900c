/**
 * A faithful ModelScope hub emulator on loopback, used by the integration tests, the benchmark and
 * `npm run demo`. No mocha/chai imports here: this module is plain Node (node:http, node:crypto,
 * node:zlib) so scripts can import it too.
 *
 * Contract: /work/shared/hub-protocol.md (routes, field names, envelope) and
 * /work/shared/fault-matrix.md (what the fault script must be able to produce).
 *
 * Content. A file either has explicit `content`, or `size` + `seed` and its bytes are the AES-128-CTR
 * keystream with key = first 16 bytes of sha256(`${seed}:${path}`) and counter block = offset / 16,
 * so any byte range of a multi-GiB file is computed directly, nothing is stored. The default seed is
 * the model id. `Sha256` in the listing is the real hash, computed lazily once per file version and
 * cached (about 1 s per GiB, without blocking the event loop for long); set `listedSha256` to skip
 * that for huge files a test only probes.
 *
 * Servers. Two HTTP servers on 127.0.0.1 (port 0): the main origin (`url`: hub API + blob route +
 * redirect-loop route) and a second origin (`otherOriginUrl`: blob route + loop route). Downloads are
 * 302-redirected to a signed blob URL on `blobUrl`, which is the second origin when
 * `blobOnSeparateOrigin` is set and the main origin otherwise.
 *
 * Fault script and attempts. Per (repo, path) there is one attempt counter shared by the download
 * route and the blob route. Only GET requests count (HEAD is never faulted and never consumes):
 *  - a blob GET always consumes the next attempt (even if its signature turns out expired or bad; the
 *    fault is then not applied);
 *  - a download-route GET consumes an attempt only when it serves the file itself (direct download of
 *    a small file, see `directDownloadBelowBytes`) or when the scripted fault for the current attempt
 *    is a hub-level fault; a plain 302 to the blob does not consume.
 * Hub-level faults (applied on the download route): `redirectLoop`, `badLocation`,
 * `crossOriginRedirect`, and `status` with `on: 'download'`. Every other fault is a content fault,
 * applied where the bytes are served (blob route, or download route when it serves directly). A
 * hub-level fault that lands on a blob GET is consumed but skipped (`faultSkipped` in the log).
 * Range-shaped faults on a request without Range behave as if `bytes=0-` had been asked.
 *
 * Datasets (`datasets` option, `addDataset`) live beside models under the key `datasetKey(id)`
 * (`datasets/<owner>/<name>`), which every helper taking a repo accepts: a dataset and a model of
 * one id are two repos. Their routes: `GET /api/v1/datasets/{owner}/{name}` (info, `Data.Id`),
 * the paged `.../repo/tree?Revision&Root&Recursive&PageNumber&PageSize` (also as
 * `/api/v1/datasets/{Id}/repo/tree`, as the 1.x client asks), and `.../repo?Source=SDK&Revision&
 * FilePath` (302 or direct, faults as for models). `paging` makes a hub that misbehaves at paging.
 */
import http, {STATUS_CODES, type IncomingHttpHeaders, type IncomingMessage, type ServerResponse} from 'node:http'
import https from 'node:https'
import type {AddressInfo, Socket} from 'node:net'
import crypto from 'node:crypto'
import zlib from 'node:zlib'
import {setImmediate as setImmediateP} from 'node:timers/promises'

// ---------------------------------------------------------------------------------------------
// Public types

/** One scripted misbehaviour for one content request (or one download-route request, see top). */
export type Fault =
  /** Destroy the socket after `afterBytes` body bytes (default 0), once they are flushed to the kernel.
   * Default: a plain close (the client sees a short body). `rst: true` sends a TCP RST instead (the
   * client may then lose bytes still in its receive buffer). */
  | {kind: 'reset'; afterBytes?: number; rst?: boolean}
  /** Send `afterBytes` (default 0) body bytes, then send nothing for `ms` (forever if omitted) while
   * keeping the socket open; after `ms` the rest of the body follows normally. */
  | {kind: 'stall'; afterBytes?: number; ms?: number}
  /** Send `afterBytes` (default 0) at full speed, then the rest at `bytesPerSec` (may be < 1). */
  | {kind: 'trickle'; bytesPerSec: number; afterBytes?: number}
  /** Answer with this status, extra headers (e.g. Retry-After) and body. `on: 'download'` applies it on
   * the hub download route (body defaults to a JSON envelope); default `on: 'content'` (text body). */
  | {kind: 'status'; status: number; headers?: Record<string, string>; body?: string | Buffer; on?: 'content' | 'download'}
  /** 200 with the full body although a Range was asked. */
  | {kind: 'ignoreRange'}
  /** 206 whose start is `delta` bytes off the asked start (clamped into the file), consistent headers. */
  | {kind: 'wrongRangeStart'; delta: number}
  /** Content-Range total is `total`, or the real size + `delta` (default +1). Body unchanged. */
  | {kind: 'wrongTotal'; total?: number; delta?: number}
  /** Serve under a different strong ETag (`etag` or a derived one), as if the file had changed;
   * If-Range / If-Match are evaluated against it. Bytes unchanged. */
  | {kind: 'changedEtag'; etag?: string}
  /** XOR (default 0xff) the bytes at these absolute file offsets while serving. */
  | {kind: 'corrupt'; offsets: number[]; xor?: number}
  /** Zero-length body: `status: 200` (default) with Content-Length 0 and no Content-Range, or
   * `status: 206` with the asked Content-Range but Content-Length 0. */
  | {kind: 'empty'; status?: 200 | 206}
  /** Content-Encoding: gzip on the (range) reply, the body really gzipped. Content-Length is the
   * compressed length for ranges up to 8 MiB; larger ones are chunked, one gzip member per chunk. */
  | {kind: 'gzip'}
  /** Content-Range replaced by `value` (default `bytes <a>-<b>` without the total). */
  | {kind: 'malformedContentRange'; value?: string}
  /** 206 without a Content-Range header. */
  | {kind: 'noContentRange'}
  /** Two Content-Length headers: the right one and right + `delta` (default 1). Raw socket, closes. */
  | {kind: 'duplicateContentLength'; delta?: number}
  /** Content-Length: `value` (default -1), body = the range. Raw socket, closes after the body. */
  | {kind: 'negativeContentLength'; value?: number}
  /** 206 multipart/byteranges: the asked range as one part (default) or split into two parts. */
  | {kind: 'multipart'; parts?: 1 | 2}
  /** `n` (default 16) more body bytes than asked. `declared: false` (default): Content-Length and
   * Content-Range describe the asked range and the extra bytes follow anyway (raw socket, closes).
   * `declared: true`: headers claim the longer body (end past the asked end, total unchanged). */
  | {kind: 'extraBytes'; n?: number; declared?: boolean}
  /** 403 as an object store says for an expired signed URL. */
  | {kind: 'expired'}
  /** Hub-level: the download route redirects into an endless chain of redirects (`chain`, default,
   * every hop a new URL) or to one URL that redirects to itself (`self`). */
  | {kind: 'redirectLoop'; mode?: 'self' | 'chain'}
  /** Hub-level: 302 to `location` (default `ftp://127.0.0.1/blob`). */
  | {kind: 'badLocation'; location?: string}
  /** Hub-level: 302 to the signed blob URL on the second origin (`otherOriginUrl`). */
  | {kind: 'crossOriginRedirect'}

export type FaultKind = Fault['kind']

export interface EmulatorFileSpec {
  /** Repo-relative path, served verbatim (hostile names allowed: the emulator never touches disk). */
  path: string
  /** Required unless `content` is given (then it must equal content.length if present). */
  size?: number
  /** Seed of the deterministic content (default: the model id). */
  seed?: string | number
  /** Explicit bytes (a string is UTF-8). */
  content?: Buffer | string
  /** A permanently wrong `Sha256` in the listing (also skips the lazy hash). */
  listedSha256?: string
  /** A wrong `Size` in the listing (the served size stays the real one). */
  listedSize?: number
  /** Listing `IsLFS` (default: size >= 1 MiB or a weights-like extension). */
  isLFS?: boolean
  /** Extra/overriding fields merged into this file's listing entry (e.g. `{Path: '../evil'}`). */
  listedExtra?: Record<string, unknown>
  /** Initial fault script, as `setFaults`. */
  faults?: Array<Fault | null>
  /** List this file without a SHA-256 (seen on real datasets): key left out, `null`, or `''`. */
  noSha256?: 'absent' | 'null' | 'empty'
}

export interface EmulatorModelSpec {
  /** `owner/name`. */
  id: string
  files: EmulatorFileSpec[]
  /** Extra branches besides `master`. */
  branches?: string[]
  tags?: string[]
  /** Add the `.gitattributes` file the real hub lists (default true; a string gives its content). */
  gitattributes?: boolean | string
}

/** A dataset: files as for a model, plus how its listing pages behave. */
export interface EmulatorDatasetSpec extends EmulatorModelSpec {
  /** `Data.Id` of the info route (default: derived from the id). */
  numericId?: number
  /**
   * `normal` (default): PageNumber/PageSize honoured. `ignorePageNumber`: every page is page 1.
   * `endless`: past the real entries, full pages of made-up files, forever. `ignorePageSize`: page
   * 1 holds every entry, later pages none.
   */
  paging?: 'normal' | 'ignorePageNumber' | 'endless' | 'ignorePageSize'
}

/** The key under which a dataset's files are kept and logged (a model's key is its id). */
export function datasetKey(id: string): string {
  return `datasets/${id}`
}

export interface HubEmulatorOptions {
  models?: EmulatorModelSpec[]
  datasets?: EmulatorDatasetSpec[]
  /** When set, API routes need cookie `m_session_id=<token>` or `Authorization: Bearer <token>`. */
  token?: string
  /** Redirect downloads to the blob route on the second server (another origin). */
  blobOnSeparateOrigin?: boolean
  /** Files with size < N are served directly by the download route (200/206), no redirect. */
  directDownloadBelowBytes?: number
  /** Per-connection token bucket for content bodies. */
  rateLimitBytesPerSec?: number
  /** Lifetime of signed blob URLs (default 3600 s; 0 makes them expire at once). */
  signedUrlTtlSec?: number
  /** Body write slice (default 1 MiB, max 4 MiB). */
  chunkBytes?: number
  host?: string
  port?: number
  blobPort?: number
  /** Called once per request when its response is over (finished, reset or aborted). */
  onLog?: (entry: LogEntry) => void
  /**
   * Serve both origins over TLS with this key and certificate (see test/support/tls.ts); the CLI
   * under test trusts it through NODE_EXTRA_CA_CERTS. Every transfer test runs over plain HTTP and TLS.
   */
  tls?: {key: string | Buffer; cert: string | Buffer}
}

/** What `mutateFile` changes. Without seed/content a new seed is derived. listedSha256/listedSize
 * overrides of the old version are dropped unless given again. */
export interface FileMutation {
  seed?: string | number
  content?: Buffer | string
  size?: number
  listedSha256?: string
  listedSize?: number
  isLFS?: boolean
  listedExtra?: Record<string, unknown>
  noSha256?: 'absent' | 'null' | 'empty'
}

export type LogRoute = 'probe' | 'revisions' | 'files' | 'download' | 'blob' | 'dataset-info' | 'tree' | 'other'
export type LogOrigin = 'main' | 'blob'

export interface LogEntry {
  /** ms since the emulator started, when the request arrived. */
  t: number
  /** ms since start when the response was over (undefined while in flight). */
  tEnd?: number
  method: string
  /** Raw request URL (path + query). */
  url: string
  route: LogRoute
  /** Which server received it ('blob' = the second origin). */
  origin: LogOrigin
  repo?: string
  /** File path, decoded. */
  path?: string
  /** Revision query parameter (download/files routes). */
  revision?: string
  /** PageNumber and PageSize asked (dataset `tree` route). */
  page?: number
  pageSize?: number
  /** Raw Range header. */
  range?: string
  /** First byte asked by `bytes=a-b` / `bytes=a-`. */
  rangeStart?: number
  /** Last byte asked (inclusive), undefined for `bytes=a-`. */
  rangeEnd?: number
  /** Response status (0 until the head is written). */
  status: number
  /** Body bytes actually written (handed to the kernel), exact even when the socket dies. */
  bytesSent: number
  /** Lowercased request headers. */
  headers: IncomingHttpHeaders
  /** Attempt number this request consumed (see top of file). */
  attempt?: number
  /** Fault kind applied (or skipped, see `faultSkipped`). */
  fault?: FaultKind
  faultSkipped?: boolean
  /** True for requests that serve file bytes (blob route, direct download). */
  content: boolean
  /** True when the full response was written. */
  complete: boolean
  /** Location of a redirect. */
  location?: string
}

// ---------------------------------------------------------------------------------------------
// Deterministic content

const MiB = 1024 * 1024
const MAX_CHUNK = 4 * MiB
const ZEROS = Buffer.alloc(MAX_CHUNK + 16)
const BASE_DATE = 1_700_000_000
const LFS_EXT = /\.(bin|safetensors|pt|pth|ckpt|gguf|ggml|onnx|h5|msgpack|model|tflite|npz|zip|tar|gz)$/i
const DEFAULT_GITATTRIBUTES = [
  '*.bin filter=lfs diff=lfs merge=lfs -text',
  '*.safetensors filter=lfs diff=lfs merge=lfs -text',
  '*.pt filter=lfs diff=lfs merge=lfs -text',
  '*.pth filter=lfs diff=lfs merge=lfs -text',
  '*.gguf filter=lfs diff=lfs merge=lfs -text',
  '*.onnx filter=lfs diff=lfs merge=lfs -text',
  '*.model filter=lfs diff=lfs merge=lfs -text',
  '',
].join('\n')

function sha256(data: string | Buffer): Buffer {
  return crypto.createHash('sha256').update(data).digest()
}

function sha256hex(data: string | Buffer): string {
  return crypto.createHash('sha256').update(data).digest('hex')
}

function contentKey(seed: string | number, path: string): Buffer {
  return sha256(`${seed}:${path}`).subarray(0, 16)
}

function* keystream(key: Buffer, start: number, end: number, chunk: number): Generator<Buffer> {
  if (end <= start) return
  const block = Math.floor(start / 16)
  const iv = Buffer.alloc(16)
  iv.writeBigUInt64BE(BigInt(block), 8)
  const cipher = crypto.createCipheriv('aes-128-ctr', key, iv)
  let pos = block * 16
  let skip = start - pos
  while (pos < end) {
    const n = Math.min(chunk + skip, end - pos)
    const out = cipher.update(ZEROS.subarray(0, n))
    yield skip ? out.subarray(skip) : out
    pos += n
    skip = 0
  }
}

/** The deterministic bytes [start, endExclusive) of a seeded file (no emulator needed). */
export function deterministicBytes(seed: string | number, path: string, start: number, endExclusive: number): Buffer {
  return Buffer.concat([...keystream(contentKey(seed, path), start, endExclusive, MAX_CHUNK)])
}

interface FileVersion {
  repo: string
  path: string
  size: number
  generation: number
  seed?: string
  key?: Buffer
  content?: Buffer
  listedSha256?: string
  listedSize?: number
  listedExtra?: Record<string, unknown>
  noSha256?: 'absent' | 'null' | 'empty'
  isLFS: boolean
  /** Quoted strong ETag. */
  etag: string
  revision: string
  committedDate: number
  commitMessage: string
  sha256?: string
  shaPromise?: Promise<string>
}

/** Bytes [start, end) of a version; past the size: keystream continues, explicit content pads zeros. */
function* produce(v: FileVersion, start: number, end: number, chunk: number): Generator<Buffer> {
  if (end <= start) return
  if (v.content) {
    const c = v.content
    for (let p = start; p < end; p += chunk) {
      const e = Math.min(end, p + chunk)
      if (e <= c.length) yield c.subarray(p, e)
      else if (p >= c.length) yield Buffer.alloc(e - p)
      else yield Buffer.concat([c.subarray(p), Buffer.alloc(e - c.length)])
    }
    return
  }
  yield* keystream(v.key!, start, end, chunk)
}

function* corrupted(src: Iterable<Buffer>, start: number, offsets: number[], xor: number): Generator<Buffer> {
  let pos = start
  for (let b of src) {
    const hits = offsets.filter((o) => o >= pos && o < pos + b.length)
    if (hits.length > 0) {
      b = Buffer.from(b)
      for (const o of hits) b[o - pos] ^= xor
    }
    pos += b.length
    yield b
  }
}

function* gzipMembers(src: Iterable<Buffer>): Generator<Buffer> {
  for (const b of src) yield zlib.gzipSync(b)
}

// ---------------------------------------------------------------------------------------------
// HTTP helpers

type RangeResult = {start: number; end: number} | 'unsatisfiable' | undefined

/** Single `bytes=` range; end exclusive. Invalid or multi-range headers are ignored (undefined). */
function parseRange(h: string | undefined, size: number): RangeResult {
  if (h === undefined) return undefined
  const m = /^\s*bytes\s*=\s*(\d*)\s*-\s*(\d*)\s*$/i.exec(h)
  if (!m) return undefined
  const [, a, b] = m
  if (a === '' && b === '') return undefined
  if (a === '') {
    const n = Number(b)
    if (!Number.isSafeInteger(n)) return undefined
    if (n === 0 || size === 0) return 'unsatisfiable'
    return {start: Math.max(0, size - n), end: size}
  }
  const s = Number(a)
  if (!Number.isSafeInteger(s)) return undefined
  let e = size - 1
  if (b !== '') {
    e = Number(b)
    if (!Number.isSafeInteger(e) || e < s) return undefined
  }
  if (s >= size) return 'unsatisfiable'
  return {start: s, end: Math.min(e, size - 1) + 1}
}

function header(req: IncomingMessage, name: string): string | undefined {
  const v = req.headers[name]
  if (v === undefined) return undefined
  return Array.isArray(v) ? v.join(', ') : v
}

function etagListMatches(list: string, etag: string, weak: boolean): boolean {
  if (list.trim() === '*') return true
  const strip = (s: string) => (s.startsWith('W/') ? s.slice(2) : s)
  return list
    .split(',')
    .map((s) => s.trim())
    .some((t) => (weak ? strip(t) === strip(etag) : !t.startsWith('W/') && t === etag))
}

function ifRangeMatches(value: string, etag: string, lastModified: string): boolean {
  const v = value.trim()
  if (v.startsWith('"') || v.startsWith('W/')) return !v.startsWith('W/') && v === etag
  const d = Date.parse(v)
  return !Number.isNaN(d) && d === Date.parse(lastModified)
}

function envelope(code: number, data: unknown, message: string): Record<string, unknown> {
  return {Code: code, Data: data, Message: message, RequestId: crypto.randomUUID(), Success: code === 200}
}

function isHubFault(f: Fault): boolean {
  return (
    f.kind === 'redirectLoop' ||
    f.kind === 'badLocation' ||
    f.kind === 'crossOriginRedirect' ||
    (f.kind === 'status' && f.on === 'download')
  )
}

const RANGE_FAULTS = new Set<FaultKind>([
  'wrongRangeStart',
  'wrongTotal',
  'malformedContentRange',
  'noContentRange',
  'multipart',
])

class Bucket {
  rate: number
  tokens: number
  last = performance.now()
  constructor(rate: number) {
    this.rate = rate
    this.tokens = this.slice
  }
  get slice(): number {
    return Math.max(1, Math.min(64 * 1024, Math.floor(this.rate / 20)))
  }
  /** Takes n tokens (may go into debt); returns ms to wait. */
  take(n: number): number {
    const now = performance.now()
    const cap = Math.max(this.slice, this.rate * 0.05)
    this.tokens = Math.min(cap, this.tokens + ((now - this.last) / 1000) * this.rate)
    this.last = now
    this.tokens -= n
    return this.tokens >= 0 ? 0 : (-this.tokens / this.rate) * 1000
  }
}

type Writer = {
  write(chunk: Buffer, cb?: (err?: Error | null) => void): boolean
  once(ev: 'drain', fn: () => void): unknown
  off(ev: 'drain', fn: () => void): unknown
  readonly destroyed: boolean
}

/** Writes body bytes with backpressure and counts those whose write completed. */
class Sink {
  constructor(
    readonly w: Writer,
    readonly socket: Socket,
    readonly entry: LogEntry,
  ) {}

  get alive(): boolean {
    return !this.socket.destroyed && !this.w.destroyed
  }

  write(buf: Buffer): Promise<boolean> {
    return new Promise((resolve) => {
      if (!this.alive) return resolve(false)
      const ok = this.w.write(buf, (err) => {
        if (!err) this.entry.bytesSent += buf.length
      })
      if (ok || !this.alive) return resolve(this.alive)
      const done = () => {
        this.w.off('drain', done)
        this.socket.off('close', done)
        resolve(this.alive)
      }
      this.w.once('drain', done)
      this.socket.once('close', done)
    })
  }

  /** Resolves once everything written so far left node's buffers (or the socket is gone). */
  async flushed(): Promise<void> {
    while (this.socket.writableLength > 0 && !this.socket.destroyed) {
      await new Promise((r) => setTimeout(r, 1))
    }
  }
}

interface PumpPlan {
  cutAfter?: number
  stallAfter?: number
  stallMs?: number
  trickleAfter?: number
  trickleBps?: number
}

interface ModelState {
  id: string
  owner: string
  name: string
  files: Map<string, FileVersion>
  branches: Array<{Revision: string; CreatedAt: number}>
  tags: Array<{Revision: string; CreatedAt: number}>
  /** Set for a dataset. */
  dataset?: {numericId: number; paging: NonNullable<EmulatorDatasetSpec['paging']>; listings: Map<string, Array<Record<string, unknown>>>; pageFailures: Map<number, {status: number; left: number}>}
}

function fkey(repo: string, path: string): string {
  return `${repo}\u0000${path}`
}

function basename(p: string): string {
  const i = p.lastIndexOf('/')
  return i < 0 ? p : p.slice(i + 1)
}

// ---------------------------------------------------------------------------------------------
// The emulator

export class HubEmulator {
  /** Main origin, e.g. http://127.0.0.1:41234 (hub API). */
  url = ''
  /** Origin the download route redirects to (second server if blobOnSeparateOrigin, else `url`). */
  blobUrl = ''
  /** The second server (another origin); always running. */
  otherOriginUrl = ''
  /** Every request seen, in arrival order; entries are updated in place until the response is over. */
  readonly log: LogEntry[] = []

  private readonly models = new Map<string, ModelState>()
  private readonly blobIndex = new Map<string, {repo: string; path: string}>()
  private readonly faults = new Map<string, Array<Fault | null>>()
  private readonly defaultFaults = new Map<string, Fault | null>()
  private readonly attempts = new Map<string, number>()
  private readonly sockets = new Set<Socket>()
  private readonly buckets = new WeakMap<Socket, Bucket>()
  private readonly abort = new AbortController()
  private readonly t0 = performance.now()
  private secrets: Buffer[] = [crypto.randomBytes(32)]
  private token: string | undefined
  private rateLimit: number | undefined
  private readonly chunkBytes: number
  private readonly opts: HubEmulatorOptions
  private mainServer!: http.Server
  private otherServer!: http.Server
  private stopped = false

  private constructor(opts: HubEmulatorOptions) {
    this.opts = opts
    this.token = opts.token
    this.rateLimit = opts.rateLimitBytesPerSec
    this.chunkBytes = Math.max(1024, Math.min(MAX_CHUNK, opts.chunkBytes ?? MiB))
  }

  static async start(opts: HubEmulatorOptions = {}): Promise<HubEmulator> {
    const emu = new HubEmulator(opts)
    for (const m of opts.models ?? []) emu.addModel(m)
    for (const d of opts.datasets ?? []) emu.addDataset(d)
    const host = opts.host ?? '127.0.0.1'
    emu.mainServer = emu.makeServer('main')
    emu.otherServer = emu.makeServer('blob')
    const listen = (s: http.Server, port: number) =>
      new Promise<number>((resolve, reject) => {
        s.once('error', reject)
        s.listen(port, host, () => {
          s.off('error', reject)
          resolve((s.address() as AddressInfo).port)
        })
      })
    const p1 = await listen(emu.mainServer, opts.port ?? 0)
    const p2 = await listen(emu.otherServer, opts.blobPort ?? 0)
    const h = host.includes(':') ? `[${host}]` : host
    const scheme = opts.tls ? 'https' : 'http'
    emu.url = `${scheme}://${h}:${p1}`
    emu.otherOriginUrl = `${scheme}://${h}:${p2}`
    emu.blobUrl = opts.blobOnSeparateOrigin ? emu.otherOriginUrl : emu.url
    return emu
  }

  /** Closes both servers and every socket (stalled ones included) at once. */
  async stop(): Promise<void> {
    if (this.stopped) return
    this.stopped = true
    this.abort.abort()
    const closing = [this.mainServer, this.otherServer].map(
      (s) => new Promise<void>((resolve) => s.close(() => resolve())),
    )
    for (const s of this.sockets) s.destroy()
    this.sockets.clear()
    await Promise.all(closing)
  }

  // ----- models and files

  addModel(spec: EmulatorModelSpec): void {
    const parts = spec.id.split('/')
    if (parts.length !== 2 || !parts[0] || !parts[1]) throw new Error(`model id must be owner/name: ${spec.id}`)
    if (this.models.has(spec.id)) throw new Error(`model exists: ${spec.id}`)
    const branchNames = ['master', ...(spec.branches ?? []).filter((b) => b !== 'master')]
    const model: ModelState = {
      id: spec.id,
      owner: parts[0],
      name: parts[1],
      files: new Map(),
      branches: branchNames.map((b, i) => ({Revision: b, CreatedAt: BASE_DATE + i * 86400})),
      tags: (spec.tags ?? []).map((t, i) => ({Revision: t, CreatedAt: BASE_DATE + 3600 + i * 86400})),
    }
    this.models.set(spec.id, model)
    for (const f of spec.files) this.addFile(spec.id, f)
    const ga = spec.gitattributes ?? true
    if (ga !== false && !model.files.has('.gitattributes')) {
      this.addFile(spec.id, {path: '.gitattributes', content: typeof ga === 'string' ? ga : DEFAULT_GITATTRIBUTES})
    }
  }

  /** A dataset, kept under `datasetKey(spec.id)`. */
  addDataset(spec: EmulatorDatasetSpec): void {
    const parts = spec.id.split('/')
    if (parts.length !== 2 || !parts[0] || !parts[1]) throw new Error(`dataset id must be owner/name: ${spec.id}`)
    const key = datasetKey(spec.id)
    if (this.models.has(key)) throw new Error(`dataset exists: ${spec.id}`)
    const branchNames = ['master', ...(spec.branches ?? []).filter((b) => b !== 'master')]
    const numericId = spec.numericId ?? parseInt(sha256hex(key).slice(0, 7), 16)
    if ([...this.models.values()].some((m) => m.dataset?.numericId === numericId)) throw new Error(`dataset Id ${numericId} taken`)
    this.models.set(key, {
      id: key,
      owner: parts[0],
      name: parts[1],
      files: new Map(),
      branches: branchNames.map((b, i) => ({Revision: b, CreatedAt: BASE_DATE + i * 86400})),
      tags: (spec.tags ?? []).map((t, i) => ({Revision: t, CreatedAt: BASE_DATE + 3600 + i * 86400})),
      dataset: {numericId, paging: spec.paging ?? 'normal', listings: new Map(), pageFailures: new Map()},
    })
    for (const f of spec.files) this.addFile(key, f)
    const ga = spec.gitattributes ?? true
    if (ga !== false && !this.model(key).files.has('.gitattributes')) {
      this.addFile(key, {path: '.gitattributes', content: typeof ga === 'string' ? ga : DEFAULT_GITATTRIBUTES})
    }
  }

  /** `Data.Id` of a dataset. */
  datasetIdOf(id: string): number {
    return this.model(datasetKey(id)).dataset!.numericId
  }

  /** The next `times` requests for listing page `page` of a dataset answer `status` (default 503). */
  failTreePage(id: string, page: number, times: number, status = 503): void {
    this.model(datasetKey(id)).dataset!.pageFailures.set(page, {status, left: times})
  }

  /** How a dataset's listing pages behave from now on. */
  setPaging(id: string, paging: NonNullable<EmulatorDatasetSpec['paging']>): void {
    this.model(datasetKey(id)).dataset!.paging = paging
  }

  addFile(repo: string, spec: EmulatorFileSpec): void {
    const model = this.model(repo)
    if (model.files.has(spec.path)) throw new Error(`file exists: ${repo} ${spec.path}`)
    model.dataset?.listings.clear()
    model.files.set(spec.path, this.makeVersion(repo, spec, 0))
    this.blobIndex.set(this.blobId(repo, spec.path), {repo, path: spec.path})
    if (spec.faults) this.setFaults(repo, spec.path, spec.faults)
  }

  removeFile(repo: string, path: string): void {
    this.model(repo).dataset?.listings.clear()
    this.model(repo).files.delete(path)
  }

  /** Changes the remote file: new bytes, Sha256, ETag, Revision and CommittedDate. */
  mutateFile(repo: string, path: string, m: FileMutation = {}): void {
    const old = this.file(repo, path)
    const generation = old.generation + 1
    const spec: EmulatorFileSpec = {
      path,
      listedSha256: m.listedSha256,
      listedSize: m.listedSize,
      isLFS: m.isLFS,
      listedExtra: m.listedExtra,
      noSha256: m.noSha256,
    }
    if (m.content !== undefined) {
      spec.content = m.content
      spec.size = m.size
    } else {
      spec.size = m.size ?? old.size
      spec.seed = m.seed ?? `${old.seed ?? `${repo}:content`}~${generation}`
    }
    this.model(repo).dataset?.listings.clear()
    this.model(repo).files.set(path, this.makeVersion(repo, spec, generation))
  }

  private makeVersion(repo: string, spec: EmulatorFileSpec, generation: number): FileVersion {
    let content: Buffer | undefined
    let size: number
    if (spec.content !== undefined) {
      content = typeof spec.content === 'string' ? Buffer.from(spec.content, 'utf8') : Buffer.from(spec.content)
      if (spec.size !== undefined && spec.size !== content.length) {
        throw new Error(`size ${spec.size} != content length ${content.length} for ${spec.path}`)
      }
      size = content.length
    } else {
      if (spec.size === undefined || !Number.isSafeInteger(spec.size) || spec.size < 0) {
        throw new Error(`file ${spec.path} needs a size or content`)
      }
      size = spec.size
    }
    const seed = content ? undefined : String(spec.seed ?? repo)
    const etagHex = content ? sha256hex(content) : sha256hex(`emu-etag\0${seed}\0${spec.path}\0${size}`)
    return {
      repo,
      path: spec.path,
      size,
      generation,
      seed,
      key: seed !== undefined ? contentKey(seed, spec.path) : undefined,
      content,
      listedSha256: spec.listedSha256,
      listedSize: spec.listedSize,
      listedExtra: spec.listedExtra,
      noSha256: spec.noSha256,
      isLFS: spec.isLFS ?? (size >= MiB || LFS_EXT.test(spec.path)),
      etag: `"${etagHex}"`,
      revision: crypto.createHash('sha1').update(`${repo}\0${spec.path}\0${etagHex}\0${generation}`).digest('hex'),
      committedDate: BASE_DATE + generation * 3600,
      commitMessage: generation === 0 ? `Upload ${spec.path}` : `Update ${spec.path} (#${generation})`,
      sha256: content ? etagHex : undefined,
    }
  }

  private model(repo: string): ModelState {
    const m = this.models.get(repo)
    if (!m) throw new Error(`unknown model ${repo}`)
    return m
  }

  private file(repo: string, path: string): FileVersion {
    const f = this.model(repo).files.get(path)
    if (!f) throw new Error(`unknown file ${repo} ${path}`)
    return f
  }

  private blobId(repo: string, path: string): string {
    return sha256hex(`${repo}\0${path}`).slice(0, 32)
  }

  // ----- test helpers

  /** Full current content (refuses files over 512 MiB). */
  contentOf(repo: string, path: string): Buffer {
    const v = this.file(repo, path)
    if (v.size > 512 * MiB) throw new Error(`contentOf: ${path} is too large (${v.size}); use rangeOf`)
    return Buffer.concat([...produce(v, 0, v.size, MAX_CHUNK)])
  }

  /** Current bytes [start, endExclusive), clamped to the size. */
  rangeOf(repo: string, path: string, start: number, endExclusive: number): Buffer {
    const v = this.file(repo, path)
    return Buffer.concat([...produce(v, start, Math.min(endExclusive, v.size), MAX_CHUNK)])
  }

  /** Real SHA-256 of the current content (cached; computed synchronously if not yet known). */
  sha256Of(repo: string, path: string): string {
    const v = this.file(repo, path)
    if (v.sha256 === undefined) {
      const h = crypto.createHash('sha256')
      for (const c of produce(v, 0, v.size, MAX_CHUNK)) h.update(c)
      v.sha256 = h.digest('hex')
    }
    return v.sha256
  }

  /** Same as sha256Of without blocking the event loop for long. */
  sha256OfAsync(repo: string, path: string): Promise<string> {
    return this.shaAsync(this.file(repo, path))
  }

  sizeOf(repo: string, path: string): number {
    return this.file(repo, path).size
  }

  etagOf(repo: string, path: string): string {
    return this.file(repo, path).etag
  }

  revisionOf(repo: string, path: string): string {
    return this.file(repo, path).revision
  }

  private shaAsync(v: FileVersion): Promise<string> {
    if (v.sha256 !== undefined) return Promise.resolve(v.sha256)
    if (v.size <= 4 * MiB) {
      const h = crypto.createHash('sha256')
      for (const c of produce(v, 0, v.size, MAX_CHUNK)) h.update(c)
      v.sha256 = h.digest('hex')
      return Promise.resolve(v.sha256)
    }
    v.shaPromise ??= (async () => {
      const h = crypto.createHash('sha256')
      let last = performance.now()
      for (const c of produce(v, 0, v.size, MiB)) {
        h.update(c)
        if (performance.now() - last > 8) {
          await setImmediateP()
          last = performance.now()
        }
      }
      v.sha256 = h.digest('hex')
      return v.sha256
    })()
    return v.shaPromise
  }

  // ----- faults, limits, auth

  /** Script for the next content requests of this path: element i = attempt i (counter reset to 0). */
  setFaults(repo: string, path: string, faults: Array<Fault | null>): void {
    const k = fkey(repo, path)
    this.faults.set(k, [...faults])
    this.attempts.set(k, 0)
  }

  /** Fault for attempts past the end of the script (null = behave). */
  setDefaultFault(repo: string, path: string, fault: Fault | null): void {
    this.defaultFaults.set(fkey(repo, path), fault)
  }

  /** Drops every script and default fault and resets all attempt counters. */
  clearFaults(): void {
    this.faults.clear()
    this.defaultFaults.clear()
    this.attempts.clear()
  }

  /** Attempts consumed so far for this path. */
  attemptsOf(repo: string, path: string): number {
    return this.attempts.get(fkey(repo, path)) ?? 0
  }

  setRateLimit(bytesPerSec: number | undefined): void {
    this.rateLimit = bytesPerSec
  }

  setToken(token: string | undefined): void {
    this.token = token
  }

  /** Makes every signed URL issued so far answer 403 "expired". */
  expireSignedUrls(): void {
    this.secrets = [crypto.randomBytes(32), ...this.secrets]
  }

  // ----- log

  clearLog(): void {
    this.log.length = 0
  }

  /** Requests that served (or were to serve) file bytes: blob route and direct downloads. */
  contentRequests(repo?: string, path?: string): LogEntry[] {
    return this.log.filter(
      (e) => e.content && (repo === undefined || e.repo === repo) && (path === undefined || e.path === path),
    )
  }

  /** Sum of body bytes written (all routes), optionally for one repo / path. */
  totalBytesSent(repo?: string, path?: string): number {
    let n = 0
    for (const e of this.log) {
      if ((repo === undefined || e.repo === repo) && (path === undefined || e.path === path)) n += e.bytesSent
    }
    return n
  }

  // ---------------------------------------------------------------------------------------------
  // Server plumbing

  private makeServer(origin: LogOrigin): http.Server {
    const handler = (req: IncomingMessage, res: ServerResponse) => {
      void this.onRequest(req, res, origin)
    }
    const server: http.Server = this.opts.tls ? https.createServer({key: this.opts.tls.key, cert: this.opts.tls.cert}, handler) : http.createServer(handler)
    server.requestTimeout = 0
    server.on('connection', (s: Socket) => {
      if (this.stopped) {
        s.destroy()
        return
      }
      this.sockets.add(s)
      s.on('close', () => this.sockets.delete(s))
    })
    return server
  }

  private now(): number {
    return Math.round((performance.now() - this.t0) * 100) / 100
  }

  private async onRequest(req: IncomingMessage, res: ServerResponse, origin: LogOrigin): Promise<void> {
    const range = header(req, 'range')
    const entry: LogEntry = {
      t: this.now(),
      method: req.method ?? '',
      url: req.url ?? '',
      route: 'other',
      origin,
      range,
      status: 0,
      bytesSent: 0,
      headers: {...req.headers},
      content: false,
      complete: false,
    }
    const m = range === undefined ? null : /^\s*bytes\s*=\s*(\d+)\s*-\s*(\d*)\s*$/i.exec(range)
    if (m) {
      entry.rangeStart = Number(m[1])
      if (m[2] !== '') entry.rangeEnd = Number(m[2])
    }
    this.log.push(entry)
    res.on('finish', () => {
      entry.complete = true
    })
    res.on('close', () => {
      if (entry.tEnd !== undefined) return
      entry.tEnd = this.now()
      this.opts.onLog?.(entry)
    })
    try {
      await this.dispatch(req, res, entry, origin)
    } catch (err) {
      if (!res.headersSent && !res.destroyed) {
        this.sendJson(req, res, entry, 500, envelope(500, null, `emulator error: ${String(err)}`))
      } else {
        req.socket.destroy()
      }
    }
  }

  private async dispatch(req: IncomingMessage, res: ServerResponse, entry: LogEntry, origin: LogOrigin): Promise<void> {
    const u = new URL(req.url ?? '/', 'http://emulator.invalid')
    const p = u.pathname
    const method = req.method ?? ''
    if (method !== 'GET' && method !== 'HEAD') {
      return this.sendText(req, res, entry, 405, 'method not allowed', {Allow: 'GET, HEAD'})
    }
    const API = '/api/v1/models/'
    if (p.startsWith(API) && origin === 'main') {
      let segs: string[]
      try {
        segs = p.slice(API.length).split('/').map((s) => decodeURIComponent(s))
      } catch {
        return this.sendJson(req, res, entry, 400, envelope(400, null, 'bad path encoding'))
      }
      if (segs.length < 2 || !segs[0] || !segs[1]) return this.sendJson(req, res, entry, 404, envelope(404, null, 'not found'))
      const repo = `${segs[0]}/${segs[1]}`
      const rest = segs.slice(2).join('/')
      const route: LogRoute | undefined =
        rest === ''
          ? 'probe'
          : rest === 'revisions'
            ? 'revisions'
            : rest === 'repo/files'
              ? 'files'
              : rest === 'repo'
                ? 'download'
                : undefined
      entry.repo = repo
      if (route === undefined) return this.sendJson(req, res, entry, 404, envelope(404, null, 'not found'))
      entry.route = route
      const auth = this.authStatus(req)
      if (auth === 401) return this.sendJson(req, res, entry, 401, envelope(401, null, 'authentication required'))
      if (auth === 403) return this.sendJson(req, res, entry, 403, envelope(403, null, 'invalid token'))
      const model = this.models.get(repo)
      if (!model) return this.sendJson(req, res, entry, 404, envelope(404, null, `model ${repo} not found`))
      switch (route) {
        case 'probe':
          return this.sendJson(
            req,
            res,
            entry,
            200,
            envelope(
              200,
              {
                Id: parseInt(sha256hex(repo).slice(0, 8), 16),
                Name: model.name,
                Path: model.owner,
                ChineseName: '',
                Description: `emulated model ${repo}`,
                Revision: 'master',
                Visibility: 5,
              },
              'success',
            ),
          )
        case 'revisions':
          return this.sendJson(
            req,
            res,
            entry,
            200,
            envelope(200, {RevisionMap: {Branches: model.branches, Tags: model.tags}}, 'success'),
          )
        case 'files':
          return this.serveListing(req, res, entry, model, u.searchParams)
        case 'download':
          return this.serveDownload(req, res, entry, model, u.searchParams)
      }
      return
    }
    const DATASETS = '/api/v1/datasets/'
    if (p.startsWith(DATASETS) && origin === 'main') return this.dispatchDataset(req, res, entry, p.slice(DATASETS.length), u.searchParams)
    if (p.startsWith('/blobs/')) return this.serveBlob(req, res, entry, p.slice(7), u.searchParams)
    if (p.startsWith('/loop/')) return this.serveLoop(req, res, entry, p, u.searchParams)
    return this.sendText(req, res, entry, 404, 'not found')
  }

  private async dispatchDataset(req: IncomingMessage, res: ServerResponse, entry: LogEntry, rest: string, q: URLSearchParams): Promise<void> {
    let segs: string[]
    try {
      segs = rest.split('/').map((s) => decodeURIComponent(s))
    } catch {
      return this.sendJson(req, res, entry, 400, envelope(400, null, 'bad path encoding'))
    }
    let dataset: ModelState | undefined
    let route: LogRoute | undefined
    if (segs.length === 3 && /^\d+$/.test(segs[0]) && segs[1] === 'repo' && segs[2] === 'tree') {
      // The 1.x client lists by the numeric Id the info route gave it.
      route = 'tree'
      dataset = [...this.models.values()].find((m) => m.dataset?.numericId === Number(segs[0]))
      entry.repo = dataset?.id
    } else if (segs.length >= 2 && segs[0] && segs[1]) {
      const tail = segs.slice(2).join('/')
      route = tail === '' ? 'dataset-info' : tail === 'repo/tree' ? 'tree' : tail === 'repo' ? 'download' : undefined
      entry.repo = datasetKey(`${segs[0]}/${segs[1]}`)
      dataset = this.models.get(entry.repo)
    }
    if (route === undefined) return this.sendJson(req, res, entry, 404, envelope(404, null, 'not found'))
    entry.route = route
    const auth = this.authStatus(req)
    if (auth === 401) return this.sendJson(req, res, entry, 401, envelope(401, null, 'authentication required'))
    if (auth === 403) return this.sendJson(req, res, entry, 403, envelope(403, null, 'invalid token'))
    if (!dataset?.dataset) return this.sendJson(req, res, entry, 404, envelope(404, null, `dataset ${segs.slice(0, 2).join('/')} not found`))
    switch (route) {
      case 'dataset-info':
        return this.sendJson(req, res, entry, 200, envelope(200, {
          Id: dataset.dataset.numericId, Name: dataset.name, Namespace: dataset.owner, Type: 0, ChineseName: '',
          Description: `emulated dataset ${dataset.owner}/${dataset.name}`, Visibility: 5,
        }, 'success'))
      case 'tree':
        return this.serveTree(req, res, entry, dataset, q)
      default:
        return this.serveDownload(req, res, entry, dataset, q)
    }
  }

  /** A dataset's listing, one page of it; the whole listing is built once per version of the files. */
  private async serveTree(req: IncomingMessage, res: ServerResponse, entry: LogEntry, dataset: ModelState, q: URLSearchParams): Promise<void> {
    const rev = q.get('Revision') || 'master'
    entry.revision = rev
    if (!this.knownRevision(dataset, rev)) return this.sendJson(req, res, entry, 404, envelope(404, null, `revision ${rev} not found`))
    const pageNumber = Math.max(1, Number.parseInt(q.get('PageNumber') ?? '1', 10) || 1)
    const pageSize = Math.max(1, Number.parseInt(q.get('PageSize') ?? '100', 10) || 100)
    entry.page = pageNumber
    entry.pageSize = pageSize
    const failure = dataset.dataset!.pageFailures.get(pageNumber)
    if (failure && failure.left > 0) {
      failure.left--
      return this.sendJson(req, res, entry, failure.status, envelope(failure.status, null, `page ${pageNumber} failed on purpose`))
    }
    const recursive = /^true$/i.test(q.get('Recursive') ?? 'False')
    const root = (q.get('Root') ?? '').replace(/^\/+|\/+$/g, '')
    const key = `${recursive}\u0000${root}`
    const meta = dataset.dataset!
    let all = meta.listings.get(key)
    if (!all) {
      all = await this.treeEntries(dataset, root, recursive)
      meta.listings.set(key, all)
    }
    let page: Array<Record<string, unknown>>
    switch (meta.paging) {
      case 'ignorePageNumber':
        page = all.slice(0, pageSize)
        break
      case 'ignorePageSize':
        page = pageNumber === 1 ? all : []
        break
      default:
        page = all.slice((pageNumber - 1) * pageSize, pageNumber * pageSize)
        if (meta.paging === 'endless' && page.length < pageSize) {
          const start = (pageNumber - 1) * pageSize + page.length
          for (let i = start; page.length < pageSize; i++) {
            page.push({Name: `f${i}.txt`, Path: `endless/f${i}.txt`, Type: 'blob', Size: 1, Sha256: sha256hex(String(i)), Revision: '0'.repeat(40), IsLFS: false, Mode: '33188'})
          }
        }
    }
    return this.sendJson(req, res, entry, 200, envelope(200, {Files: page}, 'success'))
  }

  private async treeEntries(model: ModelState, root: string, recursive: boolean): Promise<Array<Record<string, unknown>>> {
    const prefix = root === '' ? '' : `${root}/`
    const under = (p: string) => p.startsWith(prefix) && p.length > prefix.length
    const direct = (p: string) => !p.slice(prefix.length).includes('/')
    const dirs = new Set<string>()
    for (const v of model.files.values()) {
      const segs = v.path.split('/')
      let d = ''
      for (let i = 0; i < segs.length - 1; i++) {
        d = i === 0 ? segs[0] : `${d}/${segs[i]}`
        if (segs[i] !== '' && under(d) && (recursive || direct(d))) dirs.add(d)
      }
    }
    const byPath = (a: string, b: string) => (a < b ? -1 : a > b ? 1 : 0)
    const trees = [...dirs].sort(byPath).map((d) => ({Name: basename(d), Path: d, Type: 'tree', Size: 0, Sha256: '', Revision: '', IsLFS: false, Mode: '16384'}))
    const blobs: Array<Record<string, unknown>> = []
    const versions = [...model.files.values()].filter((v) => under(v.path) && (recursive || direct(v.path))).sort((a, b) => byPath(a.path, b.path))
    for (const v of versions) {
      const entry: Record<string, unknown> = {
        Name: basename(v.path), Path: v.path, Type: 'blob', Size: v.listedSize ?? v.size,
        Revision: v.revision, CommitId: v.revision, IsLFS: v.isLFS, Mode: '33188',
        CommitMessage: v.commitMessage, CommitterName: 'ms-resume-emulator', CommittedDate: v.committedDate,
      }
      if (v.noSha256 === undefined) entry.Sha256 = v.listedSha256 ?? (await this.shaAsync(v))
      else if (v.noSha256 !== 'absent') entry.Sha256 = v.noSha256 === 'null' ? null : ''
      blobs.push({...entry, ...v.listedExtra})
    }
    return [...trees, ...blobs]
  }

  private authStatus(req: IncomingMessage): 0 | 401 | 403 {
    if (this.token === undefined) return 0
    const presented: string[] = []
    for (const part of (header(req, 'cookie') ?? '').split(';')) {
      const i = part.indexOf('=')
      if (i > 0 && part.slice(0, i).trim() === 'm_session_id') presented.push(part.slice(i + 1).trim())
    }
    const a = /^\s*Bearer\s+(\S+)\s*$/i.exec(header(req, 'authorization') ?? '')
    if (a) presented.push(a[1])
    if (presented.length === 0) return 401
    return presented.includes(this.token) ? 0 : 403
  }

  private knownRevision(model: ModelState, rev: string): boolean {
    if (model.branches.some((b) => b.Revision === rev) || model.tags.some((t) => t.Revision === rev)) return true
    if (/^[0-9a-f]{40}$/.test(rev)) for (const f of model.files.values()) if (f.revision === rev) return true
    return false
  }

  private async serveListing(
    req: IncomingMessage,
    res: ServerResponse,
    entry: LogEntry,
    model: ModelState,
    q: URLSearchParams,
  ): Promise<void> {
    const rev = q.get('Revision') || 'master'
    entry.revision = rev
    if (!this.knownRevision(model, rev)) {
      return this.sendJson(req, res, entry, 404, envelope(404, null, `revision ${rev} not found`))
    }
    const recursive = /^true$/i.test(q.get('Recursive') ?? 'False')
    const root = (q.get('Root') ?? '').replace(/^\/+|\/+$/g, '')
    const prefix = root === '' ? '' : `${root}/`
    const under = (p: string) => p.startsWith(prefix) && p.length > prefix.length
    const direct = (p: string) => !p.slice(prefix.length).includes('/')
    const versions = [...model.files.values()].filter((v) => under(v.path) && (recursive || direct(v.path)))
    // Directories (tree entries): every proper prefix of a file path under the root, with the
    // newest file below it giving the commit fields.
    const dirs = new Map<string, FileVersion>()
    for (const v of model.files.values()) {
      const segs = v.path.split('/')
      let d = ''
      for (let i = 0; i < segs.length - 1; i++) {
        d = i === 0 ? segs[0] : `${d}/${segs[i]}`
        if (segs[i] === '' || !under(d) || (!recursive && !direct(d))) continue
        const cur = dirs.get(d)
        if (!cur || v.committedDate > cur.committedDate) dirs.set(d, v)
      }
    }
    const trees = [...dirs.entries()]
      .sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0))
      .map(([d, latest]) => ({
        Name: basename(d),
        Path: d,
        Type: 'tree',
        Size: 0,
        Sha256: '',
        Revision: latest.revision,
        IsLFS: false,
        Mode: '16384',
        CommitMessage: latest.commitMessage,
        CommitterName: 'ms-resume-emulator',
        CommittedDate: latest.committedDate,
        InCheck: false,
      }))
    const blobs: Array<Record<string, unknown>> = []
    for (const v of versions.sort((a, b) => (a.path < b.path ? -1 : a.path > b.path ? 1 : 0))) {
      const sha = v.noSha256 === undefined ? (v.listedSha256 ?? (await this.shaAsync(v))) : v.noSha256 === 'null' ? null : ''
      blobs.push({
        Name: basename(v.path),
        Path: v.path,
        Type: 'blob',
        Size: v.listedSize ?? v.size,
        Sha256: sha,
        Revision: v.revision,
        IsLFS: v.isLFS,
        Mode: '33188',
        CommitMessage: v.commitMessage,
        CommitterName: 'ms-resume-emulator',
        CommittedDate: v.committedDate,
        InCheck: false,
        ...v.listedExtra,
      })
    }
    return this.sendJson(req, res, entry, 200, envelope(200, {Files: [...trees, ...blobs]}, 'success'))
  }

  private nextAttempt(k: string): number {
    const a = this.attempts.get(k) ?? 0
    this.attempts.set(k, a + 1)
    return a
  }

  private faultAt(k: string, attempt: number): Fault | null {
    const script = this.faults.get(k)
    if (script && attempt < script.length) return script[attempt] ?? null
    return this.defaultFaults.get(k) ?? null
  }

  private signedUrl(base: string, repo: string, path: string): string {
    const id = this.blobId(repo, path)
    const expires = Math.floor(Date.now() / 1000 + (this.opts.signedUrlTtlSec ?? 3600))
    const sig = this.sign(this.secrets[0], id, path, expires)
    return `${base}/blobs/${id}?path=${encodeURIComponent(path)}&expires=${expires}&sig=${sig}`
  }

  private sign(secret: Buffer, id: string, path: string, expires: number): string {
    return crypto.createHmac('sha256', secret).update(`${id}\n${path}\n${expires}`).digest('hex').slice(0, 32)
  }

  private checkSig(id: string, q: URLSearchParams): 'ok' | 'expired' | 'bad' {
    const path = q.get('path') ?? ''
    const expires = Number(q.get('expires'))
    const sig = q.get('sig') ?? ''
    if (!Number.isFinite(expires)) return 'bad'
    const i = this.secrets.findIndex((s) => this.sign(s, id, path, expires) === sig)
    if (i < 0) return 'bad'
    if (i > 0 || Date.now() / 1000 > expires) return 'expired'
    return 'ok'
  }

  private async serveDownload(
    req: IncomingMessage,
    res: ServerResponse,
    entry: LogEntry,
    model: ModelState,
    q: URLSearchParams,
  ): Promise<void> {
    const rev = q.get('Revision') || 'master'
    entry.revision = rev
    const fp = q.get('FilePath')
    if (fp !== null) entry.path = fp
    if (!this.knownRevision(model, rev)) {
      return this.sendJson(req, res, entry, 404, envelope(404, null, `revision ${rev} not found`))
    }
    if (fp === null || fp === '') return this.sendJson(req, res, entry, 400, envelope(400, null, 'FilePath is required'))
    const v = model.files.get(fp)
    if (!v) return this.sendJson(req, res, entry, 404, envelope(404, null, `file ${fp} not found`))
    const direct = this.opts.directDownloadBelowBytes !== undefined && v.size < this.opts.directDownloadBelowBytes
    const k = fkey(model.id, fp)
    if (req.method === 'GET') {
      const a = this.attempts.get(k) ?? 0
      const f = this.faultAt(k, a)
      if (f && isHubFault(f)) {
        entry.attempt = this.nextAttempt(k)
        entry.fault = f.kind
        return this.applyHubFault(req, res, entry, model, v, f)
      }
      if (direct) {
        entry.attempt = this.nextAttempt(k)
        entry.content = true
        return this.serveContent(req, res, entry, v, f)
      }
    } else if (direct) {
      entry.content = true
      return this.serveContent(req, res, entry, v, null)
    }
    return this.redirect(res, entry, this.signedUrl(this.blobUrl, model.id, fp))
  }

  private applyHubFault(
    req: IncomingMessage,
    res: ServerResponse,
    entry: LogEntry,
    model: ModelState,
    v: FileVersion,
    f: Fault,
  ): void {
    switch (f.kind) {
      case 'redirectLoop': {
        const mode = f.mode ?? 'chain'
        const qs = `repo=${encodeURIComponent(model.id)}&path=${encodeURIComponent(v.path)}`
        return this.redirect(res, entry, `${this.url}/loop/${mode}/0?${qs}`)
      }
      case 'badLocation':
        return this.redirect(res, entry, f.location ?? 'ftp://127.0.0.1/blob')
      case 'crossOriginRedirect':
        return this.redirect(res, entry, this.signedUrl(this.otherOriginUrl, model.id, v.path))
      case 'status':
        return this.sendStatusFault(req, res, entry, f)
      default:
        return this.redirect(res, entry, this.signedUrl(this.blobUrl, model.id, v.path))
    }
  }

  private serveLoop(req: IncomingMessage, res: ServerResponse, entry: LogEntry, p: string, q: URLSearchParams): void {
    const m = /^\/loop\/(self|chain)\/(\d+)$/.exec(p)
    if (!m) return this.sendText(req, res, entry, 404, 'not found')
    entry.repo = q.get('repo') ?? undefined
    entry.path = q.get('path') ?? undefined
    entry.fault = 'redirectLoop'
    const n = m[1] === 'self' ? Number(m[2]) : Number(m[2]) + 1
    const base = entry.origin === 'main' ? this.url : this.otherOriginUrl
    return this.redirect(res, entry, `${base}/loop/${m[1]}/${n}?${q.toString()}`)
  }

  private async serveBlob(
    req: IncomingMessage,
    res: ServerResponse,
    entry: LogEntry,
    id: string,
    q: URLSearchParams,
  ): Promise<void> {
    entry.route = 'blob'
    const ref = this.blobIndex.get(id)
    if (!ref) return this.sendXmlError(req, res, entry, 404, 'NoSuchKey', 'The specified key does not exist.')
    entry.repo = ref.repo
    entry.path = ref.path
    entry.content = true
    const v = this.models.get(ref.repo)?.files.get(ref.path)
    let fault: Fault | null = null
    if (req.method === 'GET') {
      const k = fkey(ref.repo, ref.path)
      entry.attempt = this.nextAttempt(k)
      fault = this.faultAt(k, entry.attempt)
    }
    const sig = this.checkSig(id, q)
    if (sig === 'expired') return this.sendXmlError(req, res, entry, 403, 'AccessDenied', 'Request has expired.')
    if (sig === 'bad') {
      return this.sendXmlError(req, res, entry, 403, 'SignatureDoesNotMatch', 'The request signature we calculated does not match.')
    }
    if (!v) return this.sendXmlError(req, res, entry, 404, 'NoSuchKey', 'The specified key does not exist.')
    if (fault && isHubFault(fault)) {
      entry.fault = fault.kind
      entry.faultSkipped = true
      fault = null
    }
    return this.serveContent(req, res, entry, v, fault)
  }

  // ----- content

  private async serveContent(
    req: IncomingMessage,
    res: ServerResponse,
    entry: LogEntry,
    v: FileVersion,
    fault: Fault | null,
  ): Promise<void> {
    const isHead = req.method === 'HEAD'
    const size = v.size
    const skip = () => {
      entry.faultSkipped = fault !== null ? true : undefined
    }
    if (fault) entry.fault = fault.kind
    if (fault?.kind === 'status') return this.sendStatusFault(req, res, entry, fault)
    if (fault?.kind === 'expired') return this.sendXmlError(req, res, entry, 403, 'AccessDenied', 'Request has expired.')

    const etag = fault?.kind === 'changedEtag' ? (fault.etag ?? `"${sha256hex(`${v.etag}:changed`)}"`) : v.etag
    const lastModified = new Date(v.committedDate * 1000).toUTCString()
    const headers: Record<string, string | number> = {
      'Content-Type': 'application/octet-stream',
      'Accept-Ranges': 'bytes',
      ETag: etag,
      'Last-Modified': lastModified,
    }
    const ifMatch = header(req, 'if-match')
    if (ifMatch !== undefined && !etagListMatches(ifMatch, etag, false)) {
      skip()
      return this.sendBody(req, res, entry, 412, {ETag: etag, 'Content-Type': 'text/plain'}, Buffer.from('precondition failed'))
    }
    const inm = header(req, 'if-none-match')
    if (inm !== undefined && etagListMatches(inm, etag, true)) {
      skip()
      return this.sendBody(req, res, entry, 304, {ETag: etag, 'Last-Modified': lastModified}, Buffer.alloc(0))
    }
    let range = parseRange(header(req, 'range'), size)
    const ifRange = header(req, 'if-range')
    if (range !== undefined && ifRange !== undefined && !ifRangeMatches(ifRange, etag, lastModified)) range = undefined
    if (fault?.kind === 'ignoreRange') range = undefined
    if (range === 'unsatisfiable') {
      skip()
      return this.sendBody(req, res, entry, 416, {...headers, 'Content-Range': `bytes */${size}`}, Buffer.alloc(0))
    }

    let start = 0
    let end = size
    let partial = false
    if (range !== undefined) {
      start = range.start
      end = range.end
      partial = true
    } else if (fault && RANGE_FAULTS.has(fault.kind) && size > 0) {
      partial = true
    }
    const len = end - start
    let status = partial ? 206 : 200
    if (partial) headers['Content-Range'] = `bytes ${start}-${end - 1}/${size}`
    headers['Content-Length'] = len
    const chunk = this.chunkBytes
    let src: Iterable<Buffer> = produce(v, start, end, chunk)
    const plan: PumpPlan = {}
    let reset: 'fin' | 'rst' | undefined
    let raw: Array<[string, string]> | undefined

    switch (fault?.kind) {
      case 'reset':
        plan.cutAfter = fault.afterBytes ?? 0
        reset = fault.rst ? 'rst' : 'fin'
        break
      case 'stall':
        plan.stallAfter = fault.afterBytes ?? 0
        plan.stallMs = fault.ms
        break
      case 'trickle':
        plan.trickleBps = fault.bytesPerSec
        plan.trickleAfter = fault.afterBytes ?? 0
        break
      case 'wrongRangeStart': {
        const s2 = Math.max(0, Math.min(size - 1, start + fault.delta))
        const e2 = Math.min(size, s2 + len)
        headers['Content-Range'] = `bytes ${s2}-${e2 - 1}/${size}`
        headers['Content-Length'] = e2 - s2
        src = produce(v, s2, e2, chunk)
        break
      }
      case 'wrongTotal':
        headers['Content-Range'] = `bytes ${start}-${end - 1}/${fault.total ?? size + (fault.delta ?? 1)}`
        break
      case 'corrupt':
        src = corrupted(src, start, fault.offsets, (fault.xor ?? 0xff) & 0xff || 0xff)
        break
      case 'empty':
        if ((fault.status ?? 200) === 200) {
          status = 200
          delete headers['Content-Range']
        } else {
          status = 206
          headers['Content-Range'] = `bytes ${start}-${Math.max(start, end - 1)}/${size}`
        }
        headers['Content-Length'] = 0
        src = []
        break
      case 'gzip':
        headers['Content-Encoding'] = 'gzip'
        headers['Vary'] = 'Accept-Encoding'
        if (len <= 8 * MiB) {
          const gz = zlib.gzipSync(Buffer.concat([...produce(v, start, end, MAX_CHUNK)]))
          headers['Content-Length'] = gz.length
          src = [gz]
        } else {
          delete headers['Content-Length']
          src = gzipMembers(src)
        }
        break
      case 'malformedContentRange':
        headers['Content-Range'] = fault.value ?? `bytes ${start}-${end - 1}`
        break
      case 'noContentRange':
        delete headers['Content-Range']
        break
      case 'multipart': {
        const boundary = `EMU${crypto.randomBytes(8).toString('hex')}`
        const cuts = fault.parts === 2 && len >= 2 ? [start, start + Math.floor(len / 2), end] : [start, end]
        const pieces: Array<Buffer | [number, number]> = []
        for (let i = 0; i + 1 < cuts.length; i++) {
          pieces.push(
            Buffer.from(
              `--${boundary}\r\nContent-Type: application/octet-stream\r\n` +
                `Content-Range: bytes ${cuts[i]}-${cuts[i + 1] - 1}/${size}\r\n\r\n`,
            ),
          )
          pieces.push([cuts[i], cuts[i + 1]])
          pieces.push(Buffer.from('\r\n'))
        }
        pieces.push(Buffer.from(`--${boundary}--\r\n`))
        delete headers['Content-Range']
        headers['Content-Type'] = `multipart/byteranges; boundary=${boundary}`
        headers['Content-Length'] = pieces.reduce<number>((n, p) => n + (Buffer.isBuffer(p) ? p.length : p[1] - p[0]), 0)
        src = (function* () {
          for (const p of pieces) {
            if (Buffer.isBuffer(p)) yield p
            else yield* produce(v, p[0], p[1], chunk)
          }
        })()
        break
      }
      case 'extraBytes': {
        const n = fault.n ?? 16
        src = produce(v, start, end + n, chunk)
        if (fault.declared) {
          status = 206
          headers['Content-Range'] = `bytes ${start}-${end - 1 + n}/${size}`
          headers['Content-Length'] = len + n
        } else {
          raw = Object.entries(headers).map(([k, x]) => [k, String(x)])
        }
        break
      }
      case 'duplicateContentLength': {
        const d = fault.delta ?? 1
        raw = Object.entries(headers).map(([k, x]) => [k, String(x)])
        raw.push(['Content-Length', String(len + d)])
        break
      }
      case 'negativeContentLength':
        headers['Content-Length'] = fault.value ?? -1
        raw = Object.entries(headers).map(([k, x]) => [k, String(x)])
        break
      case 'changedEtag':
      case 'ignoreRange':
      case undefined:
        break
      default:
        // Hub-level kinds never reach here (skipped by the callers).
        break
    }

    if (raw !== undefined && !isHead) return this.sendRaw(req.socket, entry, status, raw, src)

    entry.status = status
    res.writeHead(status, headers)
    if (isHead) {
      res.end()
      return
    }
    res.flushHeaders()
    const sink = new Sink(res, req.socket, entry)
    const result = await this.pump(sink, src, plan)
    if (reset !== undefined && result !== 'gone') {
      await sink.flushed()
      if (reset === 'rst') req.socket.resetAndDestroy()
      else req.socket.destroy()
      return
    }
    if (result === 'done') res.end()
  }

  private async pump(sink: Sink, src: Iterable<Buffer>, plan: PumpPlan): Promise<'done' | 'cut' | 'gone'> {
    let sent = 0
    let stalled = false
    for (const c of src) {
      let buf = c
      while (buf.length > 0) {
        if (!sink.alive || this.stopped) return 'gone'
        if (plan.cutAfter !== undefined && sent >= plan.cutAfter) return 'cut'
        if (plan.stallAfter !== undefined && !stalled && sent >= plan.stallAfter) {
          stalled = true
          await sink.flushed()
          await this.wait(plan.stallMs, sink.socket)
          continue
        }
        let n = Math.min(buf.length, this.chunkBytes)
        if (plan.cutAfter !== undefined) n = Math.min(n, plan.cutAfter - sent)
        if (plan.stallAfter !== undefined && !stalled) n = Math.min(n, plan.stallAfter - sent)
        if (plan.trickleBps !== undefined) {
          const after = plan.trickleAfter ?? 0
          if (sent >= after) {
            n = Math.min(n, Math.max(1, Math.floor(plan.trickleBps / 10)))
            await this.wait((n / plan.trickleBps) * 1000, sink.socket)
            if (!sink.alive || this.stopped) return 'gone'
          } else {
            n = Math.min(n, after - sent)
          }
        }
        const rate = this.rateLimit
        if (rate !== undefined && rate > 0) {
          let b = this.buckets.get(sink.socket)
          if (!b) {
            b = new Bucket(rate)
            this.buckets.set(sink.socket, b)
          }
          b.rate = rate
          n = Math.min(n, b.slice)
          const ms = b.take(n)
          if (ms > 0) {
            await this.wait(ms, sink.socket)
            if (!sink.alive || this.stopped) return 'gone'
          }
        }
        if (!(await sink.write(buf.subarray(0, n)))) return 'gone'
        sent += n
        buf = buf.subarray(n)
      }
    }
    if (plan.cutAfter !== undefined && sent >= plan.cutAfter) return 'cut'
    return 'done'
  }

  /** Resolves after ms (forever if undefined), or when the socket closes or the emulator stops. */
  private wait(ms: number | undefined, socket: Socket): Promise<void> {
    return new Promise((resolve) => {
      if (socket.destroyed || this.stopped) return resolve()
      let timer: NodeJS.Timeout | undefined
      const done = () => {
        if (timer) clearTimeout(timer)
        socket.off('close', done)
        this.abort.signal.removeEventListener('abort', done)
        resolve()
      }
      if (ms !== undefined) timer = setTimeout(done, ms)
      socket.once('close', done)
      this.abort.signal.addEventListener('abort', done, {once: true})
    })
  }

  /** Writes a hand-made response straight to the socket (headers node:http refuses), then closes. */
  private async sendRaw(
    socket: Socket,
    entry: LogEntry,
    status: number,
    headers: Array<[string, string]>,
    src: Iterable<Buffer>,
  ): Promise<void> {
    entry.status = status
    let head = `HTTP/1.1 ${status} ${STATUS_CODES[status] ?? 'Unknown'}\r\n`
    for (const [k, x] of headers) head += `${k}: ${x}\r\n`
    head += `Date: ${new Date().toUTCString()}\r\nConnection: close\r\n\r\n`
    socket.write(head, 'latin1')
    const sink = new Sink(socket, socket, entry)
    const result = await this.pump(sink, src, {})
    if (result === 'done') {
      await sink.flushed()
      entry.complete = true
      socket.end()
      setTimeout(() => socket.destroy(), 1000).unref()
    }
  }

  // ----- small responses

  private sendBody(
    req: IncomingMessage,
    res: ServerResponse,
    entry: LogEntry,
    status: number,
    headers: Record<string, string | number>,
    body: Buffer,
  ): void {
    entry.status = status
    const noBody = req.method === 'HEAD' || status === 304 || status === 204
    const h: Record<string, string | number> = {...headers}
    if (status !== 304 && status !== 204 && !Object.keys(h).some((k) => k.toLowerCase() === 'content-length')) {
      h['Content-Length'] = body.length
    }
    res.writeHead(status, h)
    if (noBody || body.length === 0) {
      res.end()
      return
    }
    res.once('finish', () => {
      entry.bytesSent += body.length
    })
    res.end(body)
  }

  private sendJson(req: IncomingMessage, res: ServerResponse, entry: LogEntry, status: number, obj: unknown): void {
    this.sendBody(req, res, entry, status, {'Content-Type': 'application/json; charset=utf-8'}, Buffer.from(JSON.stringify(obj)))
  }

  private sendText(
    req: IncomingMessage,
    res: ServerResponse,
    entry: LogEntry,
    status: number,
    text: string,
    extra: Record<string, string> = {},
  ): void {
    this.sendBody(req, res, entry, status, {'Content-Type': 'text/plain; charset=utf-8', ...extra}, Buffer.from(text))
  }

  private sendXmlError(
    req: IncomingMessage,
    res: ServerResponse,
    entry: LogEntry,
    status: number,
    code: string,
    message: string,
  ): void {
    const xml =
      `<?xml version="1.0" encoding="UTF-8"?>\n<Error>\n  <Code>${code}</Code>\n  <Message>${message}</Message>\n` +
      `  <RequestId>${crypto.randomUUID()}</RequestId>\n  <HostId>emulator.invalid</HostId>\n</Error>\n`
    this.sendBody(req, res, entry, status, {'Content-Type': 'application/xml'}, Buffer.from(xml))
  }

  private sendStatusFault(req: IncomingMessage, res: ServerResponse, entry: LogEntry, f: Extract<Fault, {kind: 'status'}>): void {
    const onHub = f.on === 'download'
    let body: Buffer
    let type: string
    if (f.body !== undefined) {
      body = typeof f.body === 'string' ? Buffer.from(f.body) : f.body
      type = 'application/octet-stream'
      if (typeof f.body === 'string') type = f.body.trimStart().startsWith('{') ? 'application/json' : 'text/plain; charset=utf-8'
    } else if (onHub) {
      body = Buffer.from(JSON.stringify(envelope(f.status, null, STATUS_CODES[f.status] ?? 'error')))
      type = 'application/json; charset=utf-8'
    } else {
      body = Buffer.from(`${f.status} ${STATUS_CODES[f.status] ?? ''}`.trim())
      type = 'text/plain; charset=utf-8'
    }
    this.sendBody(req, res, entry, f.status, {'Content-Type': type, ...f.headers}, body)
  }

  private redirect(res: ServerResponse, entry: LogEntry, location: string): void {
    entry.status = 302
    entry.location = location
    res.writeHead(302, {Location: location, 'Content-Length': 0})
    res.end()
  }
}
