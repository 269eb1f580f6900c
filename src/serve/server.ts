import crypto from 'node:crypto'
import http, {type IncomingMessage, type ServerResponse} from 'node:http'
import type {AddressInfo} from 'node:net'

import {MsrError} from '../errors.js'
import type {RetryPolicy} from '../transfer/retry-policy.js'
import {isAuthorized} from './auth.js'
import type {RepoKind} from '../store/layout.js'
import {type Catalog, type ModelSnapshot, type VerifiedFile, datasetNumericId} from './catalog.js'
import {sendJson} from './envelope.js'
import {FILE_READ_BYTES, sendFile} from './file-response.js'
import {listingEntries, pageOf, pageParams} from './listing.js'
import {PullThrough, type PullThroughEvent} from './pull-through.js'
import {parseRequestTarget, unservableReason, type ApiRoute} from './request-target.js'
import {statusForUpstreamError, type Upstream} from './upstream.js'

/** One line of the access log, written when the response is over (finished or cut off). */
export interface AccessEvent {
  type: 'access'
  time: string
  remote: string
  method: string
  url: string
  status: number
  /** Body bytes handed to the socket. */
  bytes: number
  ms: number
  route?: ApiRoute
  modelId?: string
  /** Set (`dataset`) on dataset routes only. */
  repoKind?: RepoKind
  path?: string
  range?: string
  /** Where the file came from: the cache, or the cache right after a pull-through. */
  source?: 'cache' | 'upstream'
  /** False when the connection ended before the whole response was sent. */
  complete: boolean
}

export type ServeEvent =
  | AccessEvent
  | PullThroughEvent
  | {type: 'listening'; url: string; cacheRoot: string; models: string[]; datasets: string[]; upstream?: string; auth: boolean}
  | {type: 'warning'; message: string}
  | {type: 'stopped'; reason: string}

export interface MirrorOptions {
  catalog: Catalog
  host: string
  port: number
  token?: string
  upstream?: Upstream
  maxConnections: number
  /** A socket with no traffic for this long is closed (a client that stopped reading). */
  idleTimeoutMs: number
  policy: RetryPolicy
  readBytes?: number
  emit: (e: ServeEvent) => void
}

interface RequestNote {
  route?: ApiRoute
  modelId?: string
  repoKind?: RepoKind
  path?: string
  source?: 'cache' | 'upstream'
  bytes: number
}

/** How long a dataset's listing, built from the disk, serves its pages (a 100,000-file one has 1,000). */
const TREE_TTL_MS = 10_000

/**
 * `ms-resume serve`: the subset of the hub API the official clients and `ms-resume pull` use
 * (hub-protocol.md, "What a mirror must answer"), from a cache's verified files, and optionally
 * from an upstream hub through pull-through. Datasets are served from the cache only.
 */
export class Mirror {
  readonly url: string
  private readonly shutdown = new AbortController()
  private readonly pullThrough?: PullThrough
  private active = 0
  private closing = false
  private idle?: () => void
  private lastDropWarning = 0
  private readonly trees = new WeakMap<ModelSnapshot, Map<string, {at: number; entries: Array<Record<string, unknown>>}>>()

  private constructor(private readonly server: http.Server, private readonly opts: MirrorOptions) {
    const addr = server.address() as AddressInfo
    const host = addr.family === 'IPv6' ? `[${addr.address}]` : addr.address
    this.url = `http://${host}:${addr.port}`
    if (opts.upstream) {
      this.pullThrough = new PullThrough(opts.upstream, opts.catalog, {signal: this.shutdown.signal, policy: opts.policy, idleTimeoutMs: opts.idleTimeoutMs, emit: opts.emit})
    }
  }

  static async listen(opts: MirrorOptions): Promise<Mirror> {
    const server = http.createServer({
      // Slow or silent clients: headers must arrive in time, and the socket timeout below closes
      // a connection on which nothing moved (also one whose client stopped reading our body).
      headersTimeout: 20_000,
      requestTimeout: 30_000,
      keepAliveTimeout: 5_000,
    })
    server.maxConnections = opts.maxConnections
    server.timeout = opts.idleTimeoutMs
    await new Promise<void>((resolve, reject) => {
      server.once('error', (error: NodeJS.ErrnoException) => reject(bindError(error, opts.host, opts.port)))
      server.listen(opts.port, opts.host, () => resolve())
    })
    const mirror = new Mirror(server, opts)
    server.on('request', (req, res) => mirror.onRequest(req, res))
    server.on('drop', () => mirror.onDrop())
    return mirror
  }

  /** Stop accepting, let pulls checkpoint, give responses in flight `graceMs`, then close. */
  async close(reason: string, graceMs = 5_000): Promise<void> {
    if (this.closing) return
    this.closing = true
    const closed = new Promise<void>((resolve) => this.server.close(() => resolve()))
    this.server.closeIdleConnections()
    this.shutdown.abort(new MsrError('E_INTERRUPTED', 'The mirror is shutting down.'))
    await this.pullThrough?.settled()
    if (this.active > 0) {
      await new Promise<void>((resolve) => {
        const timer = setTimeout(resolve, graceMs)
        this.idle = () => {
          clearTimeout(timer)
          resolve()
        }
      })
    }
    this.server.closeAllConnections()
    await closed
    this.opts.emit({type: 'stopped', reason})
  }

  private onDrop(): void {
    const now = Date.now()
    if (now - this.lastDropWarning < 10_000) return
    this.lastDropWarning = now
    this.opts.emit({type: 'warning', message: `connection refused: already ${this.opts.maxConnections} connections (--max-connections)`})
  }

  private onRequest(req: IncomingMessage, res: ServerResponse): void {
    const started = performance.now()
    const note: RequestNote = {bytes: 0}
    const remote = req.socket.remoteAddress ?? ''
    this.active++
    if (this.closing) res.setHeader('Connection', 'close')
    res.once('close', () => {
      this.active--
      if (this.active === 0) this.idle?.()
      this.opts.emit({
        type: 'access', time: new Date().toISOString(), remote, method: req.method ?? '', url: req.url ?? '',
        status: res.statusCode, bytes: note.source ? note.bytes : jsonBytes(req, res), ms: Math.round(performance.now() - started),
        route: note.route, modelId: note.modelId, ...(note.repoKind === 'dataset' ? {repoKind: note.repoKind} : {}), path: note.path, range: typeof req.headers.range === 'string' ? req.headers.range : undefined,
        source: note.source, complete: res.writableFinished,
      })
    })
    this.handle(req, res, note).catch((error) => {
      if (res.headersSent) res.destroy()
      else sendJson(res, 500, null, `internal error: ${(error as Error).message}`)
    })
  }

  private async handle(req: IncomingMessage, res: ServerResponse, note: RequestNote): Promise<void> {
    if (req.method !== 'GET' && req.method !== 'HEAD') return sendJson(res, 405, null, 'method not allowed', {Allow: 'GET, HEAD'})
    if (!isAuthorized(req.headers, this.opts.token)) {
      return sendJson(res, 401, null, 'authentication required: send the token as cookie m_session_id or Authorization: Bearer', {'WWW-Authenticate': 'Bearer realm="ms-resume"'})
    }
    const target = parseRequestTarget(req.url ?? '/')
    if (!target.ok) return sendJson(res, target.status, null, target.message)
    note.route = target.route
    note.modelId = target.modelId
    if (target.repoKind === 'dataset') {
      note.repoKind = 'dataset'
      return this.dataset(req, res, target.route, target.modelId, target.datasetNumericId, target.query, note)
    }
    const {modelId, query} = target
    const snapshot = await this.opts.catalog.model(modelId)
    const local = snapshot && snapshot.files.size > 0 ? snapshot : undefined
    switch (target.route) {
      case 'probe':
        return this.probe(res, modelId, local)
      case 'revisions':
        return this.revisions(res, modelId, local)
      case 'files':
        return this.files(res, modelId, local, query)
      case 'download':
        return this.download(req, res, modelId, local, query, note)
    }
  }

  /**
   * The dataset routes of the official clients: info (`Data.Id`), the paged `repo/tree` by
   * owner/name (2.x) or by `Id` (1.x), and the file download, from verified files in the cache.
   */
  private async dataset(req: IncomingMessage, res: ServerResponse, route: ApiRoute, datasetId: string, numericId: number | undefined, query: URLSearchParams, note: RequestNote): Promise<void> {
    const snapshot = numericId === undefined ? await this.opts.catalog.model(datasetId, 'dataset') : await this.opts.catalog.datasetByNumericId(numericId)
    const local = snapshot && snapshot.files.size > 0 ? snapshot : undefined
    const name = numericId === undefined ? datasetId : `with Id ${numericId}`
    if (!local) return sendJson(res, 404, null, `dataset ${name} is not in this mirror${this.opts.upstream ? ' (datasets are served from its cache only)' : ''}`)
    note.modelId = local.modelId
    const revision = query.get('Revision') || 'master'
    switch (route) {
      case 'dataset-info': {
        const [owner, name] = local.modelId.split('/')
        return sendJson(res, 200, {Id: datasetNumericId(local.modelId), Name: name, Namespace: owner, Type: 0, ChineseName: '', Description: `${local.modelId}, mirrored by ms-resume serve`, Visibility: 5}, 'success')
      }
      case 'tree': {
        if (!servesRevision(local, revision)) return sendJson(res, 404, null, revisionMissing(local.modelId, revision, local))
        const entries = await this.treeOf(local, query.get('Root') ?? '', /^true$/i.test(query.get('Recursive') ?? 'False'))
        return sendJson(res, 200, {Files: pageOf(entries, pageParams(query))}, 'success')
      }
      default: {
        const filePath = query.get('FilePath')
        if (!filePath) return sendJson(res, 400, null, 'FilePath is required')
        const refused = unservableReason(filePath)
        if (refused) return sendJson(res, 400, null, `refusing FilePath ${JSON.stringify(filePath)}: ${refused}`)
        note.path = filePath
        if (!servesRevision(local, revision)) return sendJson(res, 404, null, revisionMissing(local.modelId, revision, local))
        if (await this.serveCached(req, res, local, filePath, note, 'cache')) return
        return sendJson(res, 404, null, `${filePath} is not a verified file of dataset ${local.modelId} in this mirror`)
      }
    }
  }

  /** Built from the disk once per snapshot, root and depth, and reused for TREE_TTL_MS. */
  private async treeOf(local: ModelSnapshot, root: string, recursive: boolean): Promise<Array<Record<string, unknown>>> {
    let byKey = this.trees.get(local)
    if (!byKey) {
      byKey = new Map()
      this.trees.set(local, byKey)
    }
    const key = `${recursive}\u0000${root.replace(/^\/+|\/+$/g, '')}`
    const hit = byKey.get(key)
    if (hit && Date.now() - hit.at < TREE_TTL_MS) return hit.entries
    // Clients choose Root: the map of one snapshot must not grow with every name they make up.
    if (byKey.size > 64) byKey.clear()
    const entries = listingEntries(await this.opts.catalog.present(local), {root, recursive, committedDate: local.createdAt})
    byKey.set(key, {at: Date.now(), entries})
    return entries
  }

  private async probe(res: ServerResponse, modelId: string, local: ModelSnapshot | undefined): Promise<void> {
    if (local) {
      const [owner, name] = modelId.split('/')
      const id = Number.parseInt(crypto.createHash('sha256').update(modelId).digest('hex').slice(0, 8), 16)
      return sendJson(res, 200, {Id: id, Name: name, Path: owner, ChineseName: '', Description: `${modelId}, mirrored by ms-resume serve`, Revision: local.revision, Visibility: 5}, 'success')
    }
    return this.passUpstream(res, modelId, `/api/v1/models/${modelId}`)
  }

  private async revisions(res: ServerResponse, modelId: string, local: ModelSnapshot | undefined): Promise<void> {
    if (local) return sendJson(res, 200, {RevisionMap: {Branches: [{Revision: local.revision, CreatedAt: local.createdAt}], Tags: []}}, 'success')
    return this.passUpstream(res, modelId, `/api/v1/models/${modelId}/revisions`)
  }

  private async passUpstream(res: ServerResponse, modelId: string, route: string): Promise<void> {
    if (!this.opts.upstream) return sendJson(res, 404, null, `model ${modelId} is not in this mirror`)
    try {
      const {status, data, message} = await this.opts.upstream.data(route, this.shutdown.signal)
      return sendJson(res, status, status === 200 ? data : null, message ?? (status === 200 ? 'success' : `upstream answered ${status}`))
    } catch (error) {
      const {status, message} = statusForUpstreamError(error)
      return sendJson(res, status, null, message)
    }
  }

  private async files(res: ServerResponse, modelId: string, local: ModelSnapshot | undefined, query: URLSearchParams): Promise<void> {
    const revision = query.get('Revision') || 'master'
    const listOpts = {root: query.get('Root') ?? '', recursive: /^true$/i.test(query.get('Recursive') ?? 'False'), committedDate: local?.createdAt ?? Math.floor(Date.now() / 1000)}
    if (local && !servesRevision(local, revision)) return sendJson(res, 404, null, revisionMissing(modelId, revision, local))
    let files: VerifiedFile[] = local ? await this.opts.catalog.present(local) : []
    if (this.opts.upstream && !(local && this.opts.upstream.unreachable)) {
      try {
        const listing = await this.opts.upstream.listing(modelId, local?.revision ?? revision, this.shutdown.signal)
        const have = new Set(files.map((f) => f.path))
        // What the cache lacks is listed as upstream lists it and pulled when asked for; what the
        // cache has is listed (and served) as verified here, even if upstream moved on.
        files = files.concat(listing.files.filter((f) => !have.has(f.path) && !unservableReason(f.path)).map((f) => ({path: f.path, size: f.size, sha256: f.sha256, commit: f.commit})))
      } catch (error) {
        if (!local) {
          const {status, message} = statusForUpstreamError(error)
          return sendJson(res, status, null, message)
        }
        this.opts.emit({type: 'warning', message: `listing ${modelId} from the cache only: ${statusForUpstreamError(error).message}`})
      }
    }
    if (!local && files.length === 0) return sendJson(res, 404, null, `model ${modelId} is not in this mirror`)
    return sendJson(res, 200, {Files: listingEntries(files, listOpts)}, 'success')
  }

  private async download(req: IncomingMessage, res: ServerResponse, modelId: string, local: ModelSnapshot | undefined, query: URLSearchParams, note: RequestNote): Promise<void> {
    const revision = query.get('Revision') || 'master'
    const filePath = query.get('FilePath')
    if (!filePath) return sendJson(res, 400, null, 'FilePath is required')
    const refused = unservableReason(filePath)
    if (refused) return sendJson(res, 400, null, `refusing FilePath ${JSON.stringify(filePath)}: ${refused}`)
    note.path = filePath
    if (local && !servesRevision(local, revision)) return sendJson(res, 404, null, revisionMissing(modelId, revision, local))
    if (local && (await this.serveCached(req, res, local, filePath, note, 'cache'))) return
    const upstream = this.opts.upstream
    if (!upstream || !this.pullThrough) return sendJson(res, 404, null, `${filePath} is not a verified file of ${modelId} in this mirror`)
    const pullRevision = local?.revision ?? revision
    try {
      const listing = await upstream.listing(modelId, pullRevision, this.shutdown.signal)
      if (!listing.files.some((f) => f.path === filePath)) return sendJson(res, 404, null, `${filePath} is not a file of ${modelId} (revision ${pullRevision})`)
      // Waiting for the download is not idleness: the socket timeout would drop the client.
      req.socket.setTimeout(0)
      await this.pullThrough.fetch(modelId, pullRevision, filePath)
      req.socket.setTimeout(this.opts.idleTimeoutMs)
    } catch (error) {
      if (res.destroyed) return
      req.socket.setTimeout(this.opts.idleTimeoutMs)
      const {status, message} = statusForUpstreamError(error)
      return sendJson(res, status, null, message, status === 503 ? {'Retry-After': '5'} : {})
    }
    if (res.destroyed) return
    const fresh = await this.opts.catalog.model(modelId)
    if (fresh && (await this.serveCached(req, res, fresh, filePath, note, 'upstream'))) return
    return sendJson(res, 502, null, `${filePath} was pulled from upstream but is not verified in the cache`)
  }

  /** Serves the file when the cache has it verified and the disk agrees; false otherwise. */
  private async serveCached(req: IncomingMessage, res: ServerResponse, snapshot: ModelSnapshot, filePath: string, note: RequestNote, source: 'cache' | 'upstream'): Promise<boolean> {
    const entry = snapshot.files.get(filePath)
    if (!entry) return false
    const opened = await this.opts.catalog.open(snapshot, entry)
    if (!opened) return false
    note.source = source
    await sendFile(req, res, {fd: opened.fd, size: entry.size, sha256: entry.sha256, mtime: opened.mtime}, note, this.opts.readBytes ?? FILE_READ_BYTES)
    return true
  }
}

/** Body bytes of an API reply (file bodies are counted as they are streamed). */
function jsonBytes(req: IncomingMessage, res: ServerResponse): number {
  if (req.method === 'HEAD' || !res.writableFinished) return 0
  return Number(res.getHeader('content-length')) || 0
}

/** The branch or tag the cache was pulled at, or a commit id one of its files was listed at. */
function servesRevision(local: ModelSnapshot, revision: string): boolean {
  if (revision === local.revision) return true
  if (!/^[0-9a-f]{40}$/.test(revision)) return false
  for (const f of local.files.values()) if (f.commit === revision) return true
  return false
}

function revisionMissing(modelId: string, revision: string, local: ModelSnapshot): string {
  return `revision ${revision} of ${modelId} is not in this mirror (it has ${local.revision})`
}

function bindError(error: NodeJS.ErrnoException, host: string, port: number): MsrError {
  const where = `${host}:${port}`
  if (error.code === 'EADDRINUSE') return new MsrError('E_USAGE', `Cannot listen on ${where}: the port is in use.`, {hint: 'Pick another --port, or stop what listens there.'})
  if (error.code === 'EACCES' || error.code === 'EPERM') return new MsrError('E_PERMISSION', `Cannot listen on ${where}: permission denied.`, {hint: 'Use a --port above 1023, or run with the needed privilege.'})
  if (error.code === 'EADDRNOTAVAIL' || error.code === 'ENOTFOUND' || error.code === 'EAI_AGAIN') return new MsrError('E_USAGE', `Cannot listen on ${where}: no such address on this machine.`, {hint: 'Give --host an address of this machine (127.0.0.1, 0.0.0.0 for all).'})
  return new MsrError('E_LOCAL', `Cannot listen on ${where}: ${error.message}.`, {cause: error})
}
