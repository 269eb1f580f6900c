import {parseModelId, type RepoKind, TOOL_ENTRIES} from '../store/layout.js'
import {unsafeReason} from '../store/safe-path.js'

/**
 * The hub API routes a mirror answers, parsed from the raw request target. Pure. The path is split
 * on '/' before any decoding and each segment decoded once, so `%2F`, `%2e%2e`, `..`, backslashes
 * and NUL in a segment are refused here instead of being normalised into another route (the WHATWG
 * URL parser turns `/a/%2e%2e/b` into `/b`).
 */
export type ApiRoute = 'probe' | 'revisions' | 'files' | 'download' | 'dataset-info' | 'tree'

export type RequestTarget =
  /**
   * `modelId` is the repo's id (a dataset's when `repoKind` is `dataset`); for the 1.x client's
   * `/api/v1/datasets/{Id}/repo/tree` it is '' and `datasetNumericId` names the dataset.
   */
  | {ok: true; route: ApiRoute; modelId: string; repoKind: RepoKind; datasetNumericId?: number; query: URLSearchParams}
  | {ok: false; status: 400 | 404; message: string}

const API_PREFIX = ['api', 'v1']
const MODEL_ROUTES: Record<string, ApiRoute> = {'': 'probe', revisions: 'revisions', 'repo/files': 'files', repo: 'download'}
const DATASET_ROUTES: Record<string, ApiRoute> = {'': 'dataset-info', 'repo/tree': 'tree', repo: 'download'}
/** Ids the mirror gives datasets fit 28 bits; anything longer is not one. */
const NUMERIC_ID = /^[0-9]{1,9}$/

export function parseRequestTarget(rawUrl: string): RequestTarget {
  const q = rawUrl.indexOf('?')
  const rawPath = q < 0 ? rawUrl : rawUrl.slice(0, q)
  const query = new URLSearchParams(q < 0 ? '' : rawUrl.slice(q + 1))
  if (!rawPath.startsWith('/')) return {ok: false, status: 400, message: 'the request target is not a path'}
  const raw = rawPath.slice(1).split('/')
  // One trailing slash is harmless (`/api/v1/models/o/n/`); empty segments elsewhere are not.
  if (raw.length > 1 && raw.at(-1) === '') raw.pop()
  const segments: string[] = []
  for (const s of raw) {
    let d: string
    try {
      d = decodeURIComponent(s)
    } catch {
      return {ok: false, status: 400, message: 'bad percent-encoding in the path'}
    }
    if (d === '' || d === '.' || d === '..' || /[/\\\u0000]/.test(d)) return {ok: false, status: 400, message: `bad path segment ${JSON.stringify(d)}`}
    segments.push(d)
  }
  if (segments.length < 5 || API_PREFIX.some((p, i) => segments[i] !== p)) return {ok: false, status: 404, message: 'no such route'}
  const repoKind: RepoKind | undefined = segments[2] === 'models' ? 'model' : segments[2] === 'datasets' ? 'dataset' : undefined
  if (!repoKind) return {ok: false, status: 404, message: 'no such route'}
  if (repoKind === 'dataset' && segments.length === 6 && NUMERIC_ID.test(segments[3]) && segments[4] === 'repo' && segments[5] === 'tree') {
    return {ok: true, route: 'tree', modelId: '', repoKind, datasetNumericId: Number(segments[3]), query}
  }
  const modelId = `${segments[3]}/${segments[4]}`
  try {
    parseModelId(modelId)
  } catch {
    return {ok: false, status: 400, message: `not a ${repoKind} id: ${JSON.stringify(modelId)}`}
  }
  const routes = repoKind === 'model' ? MODEL_ROUTES : DATASET_ROUTES
  const rest = segments.slice(5).join('/')
  // Own keys only: `.../constructor` must not find Object.prototype's.
  const route = Object.hasOwn(routes, rest) ? routes[rest] : undefined
  if (!route) return {ok: false, status: 404, message: 'no such route'}
  return {ok: true, route, modelId, repoKind, query}
}

/**
 * Why a FilePath must not be served, or undefined. Besides names that could leave the model
 * directory, the state of ms-resume and of the official client (journal, manifest, partials,
 * `.msc`/`.mdl`/`.mv`, `._____temp`) is never a file of the model; compared case-insensitively,
 * since `.MS-RESUME` is the state directory on a case-insensitive filesystem.
 */
export function unservableReason(filePath: string): string | undefined {
  const unsafe = unsafeReason(filePath)
  if (unsafe) return unsafe
  const top = filePath.split('/')[0].toLowerCase()
  for (const entry of TOOL_ENTRIES) if (entry.toLowerCase() === top) return 'state of a download tool, not a file of the model'
  return undefined
}
