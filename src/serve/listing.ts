import type {VerifiedFile} from './catalog.js'

/**
 * `Data.Files` of `repo/files?Revision=&Recursive=&Root=` as the hub shapes it (hub-protocol.md):
 * `tree` entries for directories, then `blob` entries, each sorted by path. Pure.
 */
export interface ListingOptions {
  /** `Root`: only entries below this directory ('' or '/' = the whole repo). */
  root: string
  recursive: boolean
  /** CommittedDate for every entry (unix seconds). */
  committedDate: number
}

const LFS_EXT = /\.(bin|safetensors|pt|pth|ckpt|gguf|ggml|onnx|h5|msgpack|model|tflite|npz|zip|tar|gz)$/i

export function listingEntries(files: VerifiedFile[], opts: ListingOptions): Array<Record<string, unknown>> {
  const root = opts.root.replace(/^\/+|\/+$/g, '')
  const prefix = root === '' ? '' : `${root}/`
  const below = (p: string) => p.startsWith(prefix) && p.length > prefix.length
  const shown = (p: string) => below(p) && (opts.recursive || !p.slice(prefix.length).includes('/'))
  const dirs = new Map<string, VerifiedFile>()
  for (const f of files) {
    const segs = f.path.split('/')
    for (let i = 1; i < segs.length; i++) {
      const d = segs.slice(0, i).join('/')
      if (shown(d) && !dirs.has(d)) dirs.set(d, f)
    }
  }
  const common = (commit: string) => ({Revision: commit, CommitMessage: '', CommitterName: '', CommittedDate: opts.committedDate, InCheck: false})
  const trees = [...dirs.keys()].sort(byCodeUnits).map((d) => ({
    Name: basename(d), Path: d, Type: 'tree', Size: 0, Sha256: '', IsLFS: false, Mode: '16384', ...common(dirs.get(d)!.commit),
  }))
  const blobs = files.filter((f) => shown(f.path)).sort((a, b) => byCodeUnits(a.path, b.path)).map((f) => ({
    // A file the hub listed without a hash is listed so: a client downstream knows it is size only.
    Name: basename(f.path), Path: f.path, Type: 'blob', Size: f.size, Sha256: f.sizeOnly ? null : f.sha256,
    IsLFS: f.size >= 10 * 1024 * 1024 || LFS_EXT.test(f.path), Mode: '33188', ...common(f.commit),
  }))
  return [...trees, ...blobs]
}

/** A dataset listing's paging (`PageNumber` from 1, `PageSize`): the asked page, bounded. Pure. */
export const MAX_PAGE_SIZE = 10_000

export function pageParams(query: URLSearchParams): {pageNumber: number; pageSize: number} {
  const int = (v: string | null, fallback: number) => (v !== null && /^[0-9]{1,9}$/.test(v) ? Number(v) : fallback)
  return {pageNumber: Math.max(1, int(query.get('PageNumber'), 1)), pageSize: Math.min(MAX_PAGE_SIZE, Math.max(1, int(query.get('PageSize'), 100)))}
}

export function pageOf<T>(entries: T[], page: {pageNumber: number; pageSize: number}): T[] {
  const start = (page.pageNumber - 1) * page.pageSize
  return start >= entries.length ? [] : entries.slice(start, start + page.pageSize)
}

function basename(p: string): string {
  return p.slice(p.lastIndexOf('/') + 1)
}

function byCodeUnits(a: string, b: string): number {
  return a < b ? -1 : a > b ? 1 : 0
}
