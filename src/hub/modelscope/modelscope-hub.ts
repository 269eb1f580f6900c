import {MsrError, isMsrError} from '../../errors.js'
import type {EventSink} from '../../events.js'
import {knobs} from '../../config.js'
import {kindDir} from '../../store/layout.js'
import {formEncode} from '../form-encode.js'
import {type JsonItems, getJson} from '../../transfer/http.js'
import {sleep} from '../../transfer/rate-limiter.js'
import {type RetryPolicy, nextDelayMs} from '../../transfer/retry-policy.js'
import type {Hub, HubFile, HubListing, RepoKind} from '../types.js'
import {DATASET_PAGE_SIZE, DatasetListing, MAX_LISTING_PAGES, readDatasetPages} from './dataset-listing.js'

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
  /** Default model. */
  repoKind?: RepoKind
  /** Retries of one page of a dataset listing (a failure at page 600 must not list pages 1-599 again). */
  policy?: RetryPolicy
}

/** The ModelScope API as described in hub-protocol.md; everything ModelScope-specific lives here. */
export class ModelScopeHub implements Hub {
  readonly name = 'modelscope'
  readonly endpoint: string
  readonly repoKind: RepoKind
  private readonly origin: string
  /** Dataset listings on their way: shared by whoever asks meanwhile. */
  private readonly datasetListings = new Map<string, Promise<HubListing>>()

  constructor(private readonly opts: ModelScopeHubOptions) {
    this.endpoint = opts.endpoint
    this.origin = new URL(opts.endpoint).origin
    this.repoKind = opts.repoKind ?? 'model'
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
    let prefix = this.fileUrlPrefix
    if (prefix?.modelId !== modelId || prefix.revision !== revision) {
      // Datasets: as the official client asks for them (Source=SDK first).
      const query = `${this.repoKind === 'dataset' ? 'Source=SDK&' : ''}Revision=${formEncode(revision)}&FilePath=`
      prefix = this.fileUrlPrefix = {modelId, revision, text: `${this.endpoint}/api/v1/${kindDir(this.repoKind)}/${modelId}/repo?${query}`}
    }
    return prefix.text + formEncode(filePath)
  }

  /** The part of fileUrl before FilePath's value, for the model and revision asked for last. */
  private fileUrlPrefix: {modelId: string; revision: string; text: string} | undefined

  async listFiles(modelId: string, revision: string, signal?: AbortSignal): Promise<HubListing> {
    if (this.repoKind === 'dataset') return this.listDataset(modelId, revision, signal)
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
    // The entries as listed are garbage from here on, even if something still holds the array.
    listed.length = 0
    return {files, revision, revisionCreatedAt: typeof createdAt === 'number' ? createdAt : undefined}
  }

  /**
   * `GET /api/v1/datasets/{owner}/{name}` (it exists: `Data.Id`) and the paged `repo/tree` listing,
   * page 1 together with the info (one round trip less). Every file is kept, `.gitattributes`
   * too: the official client's dataset download fetches it, and must find it present.
   */
  /**
   * A pull lists again whenever a file's ETag changes (CDNs and mirrors name one file differently);
   * for 100,000 files that is 1,000 pages, and files resuming together would each list them. They
   * share one listing in flight; a listing asked for after it ended is a new one (it judges a change).
   */
  private listDataset(datasetId: string, revision: string, signal?: AbortSignal): Promise<HubListing> {
    const key = `${datasetId}\u0000${revision}`
    const pending = this.datasetListings.get(key)
    if (pending) return pending
    const listing = this.readDataset(datasetId, revision, signal)
    this.datasetListings.set(key, listing)
    void listing.catch(() => {}).finally(() => this.datasetListings.delete(key))
    return listing
  }

  private async readDataset(datasetId: string, revision: string, signal?: AbortSignal): Promise<HubListing> {
    const maxPages = knobs.maxListingPages ?? MAX_LISTING_PAGES
    const listing = new DatasetListing(datasetId, DATASET_PAGE_SIZE, maxPages)
    const page = (pageNumber: number, pageSignal: AbortSignal) => {
      const query = new URLSearchParams({Revision: revision, Root: '/', Recursive: 'True', PageNumber: String(pageNumber), PageSize: String(DATASET_PAGE_SIZE)})
      return this.withPageRetries(() => this.api<unknown>(`/api/v1/datasets/${datasetId}/repo/tree?${query.toString()}`, datasetId, revision, pageSignal), pageSignal)
    }
    const info = this.api<unknown>(`/api/v1/datasets/${datasetId}`, datasetId, revision, signal)
    info.catch(() => {})
    const [data, files] = await Promise.all([info, readDatasetPages(listing, page, {signal, maxPages})])
    if (typeof data !== 'object' || data === null || Array.isArray(data)) {
      throw new MsrError('E_REMOTE', `The hub's answer about dataset ${datasetId} has no Data object.`, {hint: 'The hub may have changed its API; report it.'})
    }
    return {files, revision}
  }

  private async withPageRetries<T>(fn: () => Promise<T>, signal: AbortSignal): Promise<T> {
    const policy = this.opts.policy
    for (let attempt = 1; ; attempt++) {
      try {
        return await fn()
      } catch (error) {
        if (signal.aborted || !isMsrError(error) || !error.retryable || !policy) throw error
        if (attempt > policy.maxRetries) {
          // Retried here already: the caller's own retries would list every page again.
          throw new MsrError(error.code, error.message, {cause: error, hint: error.hint, retryable: false})
        }
        await sleep(nextDelayMs(attempt, policy, error.retryAfterMs), signal)
      }
    }
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
      repoKind: this.repoKind,
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
    const kind = this.repoKind
    if (status === 404 || body?.Code === 404) {
      throw new MsrError('E_NOT_FOUND', `${kind === 'dataset' ? 'Dataset' : 'Model'} ${modelId} (revision ${revision}) was not found on ${this.endpoint}.`, {
        hint: `Check the ${kind} id and --revision; a private ${kind} also needs --token.${kind === 'dataset' ? '' : ' A dataset is pulled with --dataset OWNER/NAME.'}`,
      })
    }
    if (status === 401 || status === 403 || body?.Code === 401 || body?.Code === 403) {
      throw new MsrError('E_AUTH', `The hub refused access to ${kind === 'dataset' ? 'dataset ' : ''}${modelId} (HTTP ${status}${this.opts.token ? ', token rejected' : ', no token given'}).`, {
        hint: this.opts.token ? `Check that the token is valid and may read this ${kind}.` : 'Pass a token with --token or MODELSCOPE_API_TOKEN.',
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
