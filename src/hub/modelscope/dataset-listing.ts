import {createHash} from 'node:crypto'

import {MsrError} from '../../errors.js'
import {SIZE_ONLY_SHA256} from '../../integrity/size-only.js'
import type {HubFile} from '../types.js'

/**
 * A dataset's file listing comes in pages (`repo/tree?...&PageNumber=N&PageSize=100`); the client
 * stops at a short page. This folds the pages, in order, into the files, and refuses what a
 * correct listing never holds. Pure: the HTTP side is in modelscope-hub.ts.
 *
 * A hub that ignores PageNumber answers page 1 forever, and one that never returns a short page
 * would have a client list until memory runs out: a page seen before is refused at once, and the
 * pages are bounded (MAX_LISTING_PAGES, a million entries at the page size we ask).
 */
export const DATASET_PAGE_SIZE = 100
export const MAX_LISTING_PAGES = 10_000
/** Pages asked for ahead of the one being read: on a 100 ms link a 100,000-file listing is 1,000 round trips. */
export const PAGES_IN_FLIGHT = 4

const SHA256_HEX = /^[0-9a-f]{64}$/i
/** The journal holds commits of at most 256 characters; a listing that says more is not one. */
const MAX_COMMIT = 256
// eslint-disable-next-line no-control-regex
const CONTROL = /[\u0000-\u001f\u007f]/

export class DatasetListing {
  readonly files: HubFile[] = []
  /** Pages read so far. */
  pages = 0
  private readonly seenPaths = new Set<string>()
  private readonly seenPages = new Map<string, number>()

  constructor(
    private readonly datasetId: string,
    private readonly pageSize = DATASET_PAGE_SIZE,
    private readonly maxPages = MAX_LISTING_PAGES,
  ) {}

  /**
   * Takes `Data` of page `pageNumber` (pages come in order from 1). Returns true when the listing is
   * complete (a page shorter than the page size), false when the next page is needed.
   */
  addPage(pageNumber: number, data: unknown): boolean {
    if (pageNumber !== this.pages + 1) throw new Error(`page ${pageNumber} out of order (expected ${this.pages + 1})`)
    this.pages = pageNumber
    const entries = entriesOf(data, this.remote(`page ${pageNumber} of the file listing has no Files array`))
    if (entries.length > this.pageSize) {
      throw this.remote(`page ${pageNumber} of the file listing has ${entries.length} entries, more than the ${this.pageSize} asked for (the hub ignores PageSize)`)
    }
    if (entries.length > 0) {
      const fingerprint = pageFingerprint(entries)
      const earlier = this.seenPages.get(fingerprint)
      if (earlier !== undefined) {
        throw this.remote(`the hub answered page ${pageNumber} of the file listing with the entries of page ${earlier} again (it ignores PageNumber?)`)
      }
      this.seenPages.set(fingerprint, pageNumber)
    }
    for (const entry of entries) this.addEntry(entry, pageNumber)
    if (entries.length < this.pageSize) return true
    if (pageNumber >= this.maxPages) {
      throw this.remote(`the file listing did not end after ${this.maxPages} full pages of ${this.pageSize} entries (the hub never answers a short page)`)
    }
    return false
  }

  private addEntry(raw: unknown, page: number): void {
    if (typeof raw !== 'object' || raw === null || Array.isArray(raw)) throw this.remote(`page ${page} of the file listing holds an entry that is not an object`)
    const e = raw as Record<string, unknown>
    const where = typeof e.Path === 'string' ? JSON.stringify(e.Path.slice(0, 300)) : `an entry of page ${page}`
    if (e.Type === 'tree') return
    if (e.Type !== 'blob') throw this.remote(`the file listing gives ${where} the Type ${JSON.stringify(e.Type)}, neither "blob" nor "tree"`)
    // Path safety (escapes, state names, collisions) is checked where every pull checks it, on the
    // files it selects; here only what makes an entry an entry.
    if (typeof e.Path !== 'string' || e.Path === '' || e.Path.length > 4096) throw this.remote(`the file listing holds a file without a usable Path (${where})`, typeof e.Path === 'string' ? e.Path : undefined)
    const filePath = e.Path
    if (!Number.isSafeInteger(e.Size) || (e.Size as number) < 0) throw this.remote(`the file listing gives ${where} an invalid size (${String(e.Size)})`, filePath)
    let sha256 = SIZE_ONLY_SHA256
    if (e.Sha256 !== undefined && e.Sha256 !== null && e.Sha256 !== '') {
      if (typeof e.Sha256 !== 'string' || !SHA256_HEX.test(e.Sha256)) throw this.remote(`the file listing gives ${where} a malformed Sha256 (${JSON.stringify(e.Sha256).slice(0, 80)})`, filePath)
      sha256 = e.Sha256.toLowerCase()
    }
    const commit = commitOf(e.Revision ?? e.CommitId)
    if (commit === undefined) throw this.remote(`the file listing gives ${where} an unusable Revision`, filePath)
    if (this.seenPaths.has(filePath)) throw this.remote(`the file listing names ${where} twice (again on page ${page})`, filePath)
    this.seenPaths.add(filePath)
    this.files.push({path: filePath, size: e.Size as number, sha256, commit})
  }

  private remote(message: string, filePath?: string): MsrError {
    return new MsrError('E_REMOTE', `Dataset ${this.datasetId}: ${message}.`, {
      path: filePath,
      hint: 'The hub sent a listing a download cannot be built on; try again later, and report it if it persists.',
    })
  }
}

function entriesOf(data: unknown, missing: MsrError): unknown[] {
  if (data === null || data === undefined) return []
  if (typeof data !== 'object' || Array.isArray(data)) throw missing
  const files = (data as {Files?: unknown}).Files
  // Past the last page some hubs answer `Files: null`, as the official client allows.
  if (files === null || files === undefined) return []
  if (!Array.isArray(files)) throw missing
  return files
}

/** The same entries again, in the same order: the Paths and Types say it (a hash keeps 10,000 pages small). */
function pageFingerprint(entries: unknown[]): string {
  const h = createHash('sha256')
  for (const e of entries) {
    const r = (typeof e === 'object' && e !== null ? e : {}) as Record<string, unknown>
    h.update(`${String(r.Type)}\u0000${String(r.Path)}\u0000`)
  }
  return h.digest('hex')
}

function commitOf(v: unknown): string | undefined {
  if (v === undefined || v === null) return ''
  if (typeof v !== 'string' || v.length > MAX_COMMIT || CONTROL.test(v)) return undefined
  return v
}

/**
 * Reads the pages through `fetchPage` (which resolves to a page's `Data`) in order: one page first
 * (most datasets fit on it), then up to PAGES_IN_FLIGHT at once. Pages asked for past the end are
 * cancelled through the signal `fetchPage` gets.
 */
export async function readDatasetPages(
  listing: DatasetListing,
  fetchPage: (pageNumber: number, signal: AbortSignal) => Promise<unknown>,
  opts: {signal?: AbortSignal; maxPages?: number; inFlight?: number} = {},
): Promise<HubFile[]> {
  const stop = new AbortController()
  const signal = opts.signal ? AbortSignal.any([opts.signal, stop.signal]) : stop.signal
  const maxPages = opts.maxPages ?? MAX_LISTING_PAGES
  const inFlight = Math.max(1, opts.inFlight ?? PAGES_IN_FLIGHT)
  const pending = new Map<number, Promise<unknown>>()
  let asked = 0
  const ask = (upTo: number) => {
    while (asked < Math.min(upTo, maxPages)) {
      asked++
      const page = fetchPage(asked, signal)
      // A page we stop waiting for may still fail: not an unhandled rejection.
      page.catch(() => {})
      pending.set(asked, page)
    }
  }
  try {
    ask(1)
    for (let n = 1; ; n++) {
      const data = await pending.get(n)
      pending.delete(n)
      if (listing.addPage(n, data)) return listing.files
      ask(n + inFlight)
    }
  } finally {
    stop.abort()
  }
}
