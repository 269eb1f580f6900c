import {MsrError} from '../../errors.js'
import type {EventSink} from '../../events.js'
import {type JsonItems, getJson} from '../../transfer/http.js'
import type {Hub, HubFile, HubListing} from '../types.js'

interface Envelope<T> {
  Code?: number
  Data?: T
  Message?: string
  Success?: boolean
}

interface ListedFile {
  Name?: string
  Path?: string
  Type?: string
  Size?: number
  Sha256?: string
  Revision?: string
}

interface RevisionEntry {
  Revision?: string
  CreatedAt?: number
}

/** The fields of a listing entry we use; one commit string shared by all the files listed at it. */
function listedFile(value: unknown): ListedFile {
  const f = (typeof value === 'object' && value !== null ? value : {}) as ListedFile
  return {Name: f.Name, Path: f.Path, Type: f.Type, Size: f.Size, Sha256: f.Sha256, Revision: typeof f.Revision === 'string' ? internedCommit(f.Revision) : f.Revision}
}

const commits = new Map<string, string>()
function internedCommit(commit: string): string {
  const known = commits.get(commit)
  if (known !== undefined) return known
  if (commits.size < 10_000) commits.set(commit, commit)
  return commit
}

/** Files the official client drops from every listing. */
const DROPPED_NAMES = new Set(['.gitignore', '.gitattributes'])
const SHA256_HEX = /^[0-9a-f]{64}$/

export interface ModelScopeHubOptions {
  endpoint: string
  token?: string
  timeoutMs: number
  maxRetryAfterMs: number
}

/** The ModelScope API as described in hub-protocol.md; everything ModelScope-specific lives here. */
export class ModelScopeHub implements Hub {
  readonly name = 'modelscope'
  readonly endpoint: string
  private readonly origin: string

  constructor(private readonly opts: ModelScopeHubOptions) {
    this.endpoint = opts.endpoint
    this.origin = new URL(opts.endpoint).origin
  }

  headersFor(url: URL): Record<string, string> {
    const headers: Record<string, string> = {'User-Agent': 'ms-resume/0.1 (modelscope-compatible)'}
    // Credentials go to the hub's own origin only: never to a CDN we are redirected to.
    if (this.opts.token && url.origin === this.origin) {
      headers.Cookie = `m_session_id=${this.opts.token}`
      headers.Authorization = `Bearer ${this.opts.token}`
    }
    return headers
  }

  fileUrl(modelId: string, revision: string, filePath: string): string {
    const query = new URLSearchParams({Revision: revision, FilePath: filePath})
    return `${this.endpoint}/api/v1/models/${modelId}/repo?${query.toString()}`
  }

  async listFiles(modelId: string, revision: string, signal?: AbortSignal): Promise<HubListing> {
    const query = new URLSearchParams({Revision: revision, Recursive: 'True'})
    // Each entry is parsed alone and only its fields below kept: 100,000 entries parsed whole were
    // the peak memory of a pull.
    const listed: ListedFile[] = []
    const items = {path: ['Data', 'Files'], each: (f: unknown) => listed.push(listedFile(f))}
    // Both at once: on a 100 ms link one round trip less before the first byte.
    const [revisions, data] = await Promise.all([
      this.api<{RevisionMap?: {Branches?: RevisionEntry[]; Tags?: RevisionEntry[]}}>(`/api/v1/models/${modelId}/revisions`, modelId, revision, signal),
      this.api<{Files?: ListedFile[]}>(`/api/v1/models/${modelId}/repo/files?${query.toString()}`, modelId, revision, signal, items),
    ])
    const known = [...(revisions?.RevisionMap?.Branches ?? []), ...(revisions?.RevisionMap?.Tags ?? [])]
    const createdAt = known.find((r) => r.Revision === revision)?.CreatedAt
    if (!data || !Array.isArray(data.Files)) {
      throw new MsrError('E_REMOTE', `The hub's file listing for ${modelId} has no Files array.`, {hint: 'The hub may have changed its API; report it.'})
    }
    const files: HubFile[] = []
    for (const f of listed) {
      if (f.Type === 'tree') continue
      if (DROPPED_NAMES.has(f.Name ?? '') || DROPPED_NAMES.has(String(f.Path).split('/').pop() ?? '')) continue
      if (typeof f.Path !== 'string') throw new MsrError('E_REMOTE', `The hub listed a file without a Path in ${modelId}.`)
      const sha256 = String(f.Sha256 ?? '').toLowerCase()
      if (!Number.isSafeInteger(f.Size) || (f.Size as number) < 0) {
        throw new MsrError('E_REMOTE', `The hub listed ${JSON.stringify(f.Path)} with an invalid size (${String(f.Size)}).`, {path: f.Path})
      }
      if (!SHA256_HEX.test(sha256)) {
        throw new MsrError('E_REMOTE', `The hub listed ${JSON.stringify(f.Path)} without a valid Sha256, so it cannot be verified.`, {
          path: f.Path, hint: 'Exclude it with --exclude if you accept that, or report it to the model owner.',
        })
      }
      files.push({path: f.Path, size: f.Size as number, sha256, commit: String(f.Revision ?? '')})
    }
    return {files, revision, revisionCreatedAt: typeof createdAt === 'number' ? createdAt : undefined}
  }

  async afterComplete(ctx: {modelDir: string; cacheRoot?: string; layout: string; modelId: string; listing: HubListing; emit?: EventSink}): Promise<void> {
    if (ctx.layout === 'local-dir') return
    const {MSC_FILE, writeModelscopeIndex} = await import('./python-index.js')
    const [owner, name] = ctx.modelId.split('/')
    const written = await writeModelscopeIndex({
      modelDir: ctx.modelDir,
      cacheRoot: ctx.layout === 'cache' ? ctx.cacheRoot : undefined,
      owner,
      name,
      files: ctx.listing.files.map((f) => ({Path: f.path, Revision: f.commit})),
      revisionName: ctx.listing.revision,
      revisionCreatedAt: ctx.listing.revisionCreatedAt ?? Math.floor(Date.now() / 1000),
      merge: true,
    })
    if (written.unreadableReason) {
      ctx.emit?.({type: 'warning', path: MSC_FILE, message: `the ModelScope index ${MSC_FILE} there was not read (${written.unreadableReason}); rewritten with this model's files only`})
    }
  }

  private async api<T>(route: string, modelId: string, revision: string, signal?: AbortSignal, items?: JsonItems): Promise<T | undefined> {
    const url = `${this.endpoint}${route}`
    const {status, body} = await getJson<Envelope<T>>(url, this.headersFor(new URL(url)), {signal, timeoutMs: this.opts.timeoutMs, maxRetryAfterMs: this.opts.maxRetryAfterMs, items})
    if (status === 404 || body?.Code === 404) {
      throw new MsrError('E_NOT_FOUND', `Model ${modelId} (revision ${revision}) was not found on ${this.endpoint}.`, {
        hint: 'Check the model id and --revision; a private model also needs --token.',
      })
    }
    if (status === 401 || status === 403 || body?.Code === 401 || body?.Code === 403) {
      throw new MsrError('E_AUTH', `The hub refused access to ${modelId} (HTTP ${status}${this.opts.token ? ', token rejected' : ', no token given'}).`, {
        hint: this.opts.token ? 'Check that the token is valid and may read this model.' : 'Pass a token with --token or MODELSCOPE_API_TOKEN.',
      })
    }
    if (!body || typeof body !== 'object' || body.Code !== 200) {
      throw new MsrError('E_REMOTE', `The hub answered ${route.split('?')[0]} with ${body && typeof body === 'object' ? `Code ${String(body.Code)}: ${String(body.Message ?? '')}` : 'no JSON envelope'}.`, {
        retryable: false, hint: 'Try again later; if it persists, check --endpoint.',
      })
    }
    return body.Data
  }
}
