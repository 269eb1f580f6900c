import {expect} from 'chai'

import {MsrError} from '../../src/errors.js'
import {DatasetListing, readDatasetPages} from '../../src/hub/modelscope/dataset-listing.js'
import {ModelScopeHub} from '../../src/hub/modelscope/modelscope-hub.js'
import {DEFAULT_RETRY_POLICY} from '../../src/transfer/retry-policy.js'
import {HubEmulator} from '../support/emulator.js'

const SHA = 'a'.repeat(64)
const REV = 'b'.repeat(40)
const blob = (path: string, extra: Record<string, unknown> = {}) => ({Type: 'blob', Path: path, Name: path.split('/').pop(), Size: 3, Sha256: SHA, Revision: REV, ...extra})
const tree = (path: string) => ({Type: 'tree', Path: path, Size: 0, Sha256: '', Revision: ''})
const page = (entries: unknown[]) => ({Files: entries})

function code(fn: () => unknown): string {
  try {
    fn()
  } catch (error) {
    expect(error).to.be.instanceOf(MsrError)
    return `${(error as MsrError).code}: ${(error as MsrError).message}`
  }
  throw new Error('did not throw')
}

describe('dataset listing pages', () => {
  it('stops at a short page; tree entries count toward a page but are not files', () => {
    const l = new DatasetListing('o/d', 3)
    expect(l.addPage(1, page([tree('a'), blob('a/x'), blob('a/y')]))).to.equal(false)
    expect(l.addPage(2, page([blob('b')]))).to.equal(true)
    expect(l.files.map((f) => f.path)).to.deep.equal(['a/x', 'a/y', 'b'])
    expect(l.files[0]).to.deep.equal({path: 'a/x', size: 3, sha256: SHA, commit: REV})
  })

  it('an exact multiple of the page size ends at the empty page after it; an empty dataset at page 1', () => {
    const l = new DatasetListing('o/d', 2)
    expect(l.addPage(1, page([blob('a'), blob('b')]))).to.equal(false)
    expect(l.addPage(2, page([blob('c'), blob('d')]))).to.equal(false)
    expect(l.addPage(3, page([]))).to.equal(true)
    expect(l.files).to.have.length(4)
    const empty = new DatasetListing('o/e', 2)
    expect(empty.addPage(1, page([]))).to.equal(true)
    // Files: null past the end (as the official client allows), and no Data at all.
    expect(new DatasetListing('o/n', 2).addPage(1, {Files: null})).to.equal(true)
    expect(new DatasetListing('o/n', 2).addPage(1, undefined)).to.equal(true)
  })

  it('a page seen before (a hub that ignores PageNumber) is refused at once, naming both pages', () => {
    const l = new DatasetListing('o/d', 2)
    const p = page([blob('a'), blob('b')])
    l.addPage(1, p)
    expect(code(() => l.addPage(2, p))).to.match(/^E_REMOTE: .*page 2 .*entries of page 1 again/)
  })

  it('a listing that never ends is cut at the page bound', () => {
    const l = new DatasetListing('o/d', 1, 3)
    l.addPage(1, page([blob('a')]))
    l.addPage(2, page([blob('b')]))
    expect(code(() => l.addPage(3, page([blob('c')])))).to.match(/^E_REMOTE: .*did not end after 3 full pages/)
  })

  it('refuses a page longer than asked, a path listed twice, entries that are not entries', () => {
    expect(code(() => new DatasetListing('o/d', 2).addPage(1, page([blob('a'), blob('b'), blob('c')])))).to.match(/^E_REMOTE: .*3 entries, more than the 2/)
    const twice = new DatasetListing('o/d', 2)
    twice.addPage(1, page([blob('a'), blob('b')]))
    expect(code(() => twice.addPage(2, page([blob('c'), blob('a')])))).to.match(/^E_REMOTE: .*"a" twice/)
    const bad: Array<[unknown, RegExp]> = [
      [{Files: 'nope'}, /no Files array/],
      [page([42]), /not an object/],
      [page([blob('x', {Type: 'commit'})]), /Type "commit"/],
      [page([blob('x', {Path: ''})]), /without a usable Path/],
      [page([blob('x', {Path: 7})]), /without a usable Path/],
      [page([blob('x', {Size: -1})]), /invalid size/],
      [page([blob('x', {Size: 2 ** 53})]), /invalid size/],
      [page([blob('x', {Size: '3'})]), /invalid size/],
      [page([blob('x', {Sha256: 'abc'})]), /malformed Sha256/],
      [page([blob('x', {Sha256: 12})]), /malformed Sha256/],
      [page([blob('x', {Revision: 'r'.repeat(300)})]), /unusable Revision/],
      [page([blob('x', {Revision: 'a\nb'})]), /unusable Revision/],
    ]
    for (const [data, re] of bad) expect(code(() => new DatasetListing('o/d', 5).addPage(1, data)), JSON.stringify(data)).to.match(re)
  })

  it('a file without Sha256 (key missing, null or empty) is size only; an uppercase hash is taken in lowercase', () => {
    const l = new DatasetListing('o/d', 10)
    l.addPage(1, page([blob('a', {Sha256: undefined}), blob('b', {Sha256: null}), blob('c', {Sha256: ''}), blob('d', {Sha256: SHA.toUpperCase()}), blob('e', {Revision: undefined, CommitId: REV})]))
    expect(l.files.map((f) => f.sha256)).to.deep.equal(['', '', '', SHA, SHA])
    expect(l.files[4].commit).to.equal(REV)
  })
})

describe('reading dataset pages', () => {
  /** Pages served from memory; records what was asked and what was cancelled. */
  function source(pages: unknown[][], pageSize: number) {
    const asked: number[] = []
    const cancelled: number[] = []
    const fetchPage = async (n: number, signal: AbortSignal) => {
      asked.push(n)
      await new Promise((resolve) => setTimeout(resolve, 5))
      if (signal.aborted) cancelled.push(n)
      return page(pages[n - 1] ?? [])
    }
    return {asked, cancelled, fetchPage, listing: new DatasetListing('o/d', pageSize)}
  }

  it('asks for one page first, then several at a time; stops at the short page and cancels the pages past it', async () => {
    const pages = [[blob('a'), blob('b')], [blob('c'), blob('d')], [blob('e')]]
    const s = source(pages, 2)
    const files = await readDatasetPages(s.listing, s.fetchPage, {inFlight: 4})
    expect(files.map((f) => f.path)).to.deep.equal(['a', 'b', 'c', 'd', 'e'])
    expect(s.asked.slice(0, 1)).to.deep.equal([1])
    expect(s.asked).to.include.members([1, 2, 3])
    expect(Math.max(...s.asked)).to.be.at.most(6)
    // Page 6 was asked when page 2 came in full, and was still on its way when page 3 ended the listing.
    await new Promise((resolve) => setTimeout(resolve, 30))
    expect(s.cancelled).to.include(6)
    expect(s.cancelled.every((n) => n > 3), 'only pages past the end are cancelled').to.equal(true)
    const single = source([[blob('x')]], 2)
    await readDatasetPages(single.listing, single.fetchPage, {inFlight: 4})
    expect(single.asked, 'a one-page dataset costs one request').to.deep.equal([1])
  })

  it('a failing page fails the listing; the bound holds when pages never end', async () => {
    const failing = new DatasetListing('o/d', 1)
    let err: unknown
    await readDatasetPages(failing, async (n) => {
      if (n === 2) throw new MsrError('E_NETWORK', 'boom')
      return page([blob(`f${n}`)])
    }).catch((e) => (err = e))
    expect((err as MsrError).code).to.equal('E_NETWORK')
    const endless = new DatasetListing('o/d', 1, 5)
    err = undefined
    const asked: number[] = []
    await readDatasetPages(endless, async (n) => {
      asked.push(n)
      return page([blob(`f${n}`)])
    }, {maxPages: 5}).catch((e) => (err = e))
    expect((err as MsrError).message).to.match(/did not end after 5 full pages/)
    expect(Math.max(...asked), 'no page asked past the bound').to.equal(5)
  })
})

describe('ModelScopeHub dataset listing against the emulator', function () {
  this.timeout(30_000)
  let emu: HubEmulator
  const ID = 'acme/pages'
  const files = Array.from({length: 250}, (_, i) => ({path: `f${String(i).padStart(3, '0')}`, size: 1}))
  const hub = (retries: number) => new ModelScopeHub({endpoint: emu.url, timeoutMs: 5000, maxRetryAfterMs: 1000, repoKind: 'dataset', policy: {...DEFAULT_RETRY_POLICY, maxRetries: retries, baseDelayMs: 5, maxDelayMs: 20}})
  const asked = (page: number) => emu.log.filter((e) => e.route === 'tree' && e.page === page).length

  beforeEach(async () => {
    emu = await HubEmulator.start({datasets: [{id: ID, files, gitattributes: false}]})
  })
  afterEach(async () => emu.stop())

  it('a failing page is retried on its own: the pages before it are not listed again', async () => {
    emu.failTreePage(ID, 2, 2)
    const listing = await hub(5).listFiles(ID, 'master')
    expect(listing.files).to.have.length(250)
    expect(asked(1)).to.equal(1)
    expect(asked(2)).to.equal(3)
  })

  it('once its retries are spent the error is final (not retryable again by the caller, who would list every page again)', async () => {
    emu.failTreePage(ID, 3, 10)
    let err: unknown
    await hub(2).listFiles(ID, 'master').catch((e) => (err = e))
    expect(err).to.be.instanceOf(MsrError)
    expect((err as MsrError).code).to.equal('E_NETWORK')
    expect((err as MsrError).retryable).to.equal(false)
    expect(asked(3)).to.equal(3)
  })

  it('listings asked for while one is on its way share it; one asked for later is a new one', async () => {
    const h = hub(0)
    const [a, b] = await Promise.all([h.listFiles(ID, 'master'), h.listFiles(ID, 'master')])
    expect(a).to.equal(b)
    expect(asked(1)).to.equal(1)
    await h.listFiles(ID, 'master')
    expect(asked(1)).to.equal(2)
  })
})
