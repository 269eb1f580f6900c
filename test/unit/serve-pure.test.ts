import {expect} from 'chai'

import {isAuthorized, isLoopbackHost, presentedTokens} from '../../src/serve/auth.js'
import {snapshotOf} from '../../src/serve/catalog.js'
import {listingEntries} from '../../src/serve/listing.js'
import {exactGlob} from '../../src/serve/pull-through.js'
import {decideRange, ifRangeMatches, noneMatch} from '../../src/serve/range.js'
import {parseRequestTarget, unservableReason} from '../../src/serve/request-target.js'
import {globToRegExp} from '../../src/pull/filter.js'
import type {Manifest} from '../../src/integrity/manifest.js'
import type {JournalDoc} from '../../src/journal/schema.js'
import {resolveLocation} from '../../src/store/layout.js'

const ETAG = `"${'ab'.repeat(32)}"`
const LM = 'Sun, 06 Dec 2026 01:23:01 GMT'
const range = (h: string | undefined, size = 1000, ifRange?: string) => decideRange({range: h, ifRange, size, etag: ETAG, lastModified: LM})

describe('serve: Range and If-Range decisions (RFC 9110)', () => {
  it('serves single ranges: first-last, open-ended, suffix, clamped to the size', () => {
    expect(range('bytes=0-99')).to.deep.equal({kind: 'partial', start: 0, endInclusive: 99})
    expect(range('bytes=100-')).to.deep.equal({kind: 'partial', start: 100, endInclusive: 999})
    expect(range('bytes=-10')).to.deep.equal({kind: 'partial', start: 990, endInclusive: 999})
    expect(range('bytes=-5000')).to.deep.equal({kind: 'partial', start: 0, endInclusive: 999})
    expect(range('bytes=990-5000')).to.deep.equal({kind: 'partial', start: 990, endInclusive: 999})
    expect(range(' BYTES = 5 - 6 ')).to.deep.equal({kind: 'partial', start: 5, endInclusive: 6})
    // What the official client always sends, even from 0.
    expect(range('bytes=0-999')).to.deep.equal({kind: 'partial', start: 0, endInclusive: 999})
  })

  it('416 for a start at or past the end and a zero suffix; an empty file is sent whole (200), Range or not', () => {
    expect(range('bytes=1000-')).to.deep.equal({kind: 'unsatisfiable'})
    expect(range('bytes=1000-2000')).to.deep.equal({kind: 'unsatisfiable'})
    expect(range('bytes=-0')).to.deep.equal({kind: 'unsatisfiable'})
    expect(range('bytes=0-', 0)).to.deep.equal({kind: 'full'})
    expect(range('bytes=0-8388607', 0)).to.deep.equal({kind: 'full'})
    expect(range('bytes=-1', 0)).to.deep.equal({kind: 'full'})
  })

  it('ignores (whole file, 200) what it cannot honour exactly: junk, other units, multi-range, last < first, huge numbers', () => {
    for (const h of ['', 'bytes=', 'bytes=-', 'items=0-1', 'bytes=0-1,5-6', 'bytes=5-1', 'bytes=a-b', 'bytes=99999999999999999999-', 'bytes=0-99999999999999999999', 'bytes=--1']) {
      expect(range(h), h).to.deep.equal({kind: 'full'})
    }
    expect(range(undefined)).to.deep.equal({kind: 'full'})
  })

  it('If-Range: the same strong ETag keeps the range; another, a weak one or a stale date gets the whole file', () => {
    expect(range('bytes=10-', 1000, ETAG)).to.deep.equal({kind: 'partial', start: 10, endInclusive: 999})
    expect(range('bytes=10-', 1000, `"${'cd'.repeat(32)}"`)).to.deep.equal({kind: 'full'})
    expect(range('bytes=10-', 1000, `W/${ETAG}`)).to.deep.equal({kind: 'full'})
    expect(range('bytes=10-', 1000, LM)).to.deep.equal({kind: 'partial', start: 10, endInclusive: 999})
    expect(range('bytes=10-', 1000, 'Sun, 06 Dec 2026 01:23:02 GMT')).to.deep.equal({kind: 'full'})
    expect(ifRangeMatches('junk', ETAG, LM)).to.equal(false)
    expect(ifRangeMatches(LM, ETAG, undefined)).to.equal(false)
  })

  it('If-None-Match: weak comparison, lists and *', () => {
    expect(noneMatch(ETAG, ETAG)).to.equal(true)
    expect(noneMatch(`"x", W/${ETAG}`, ETAG)).to.equal(true)
    expect(noneMatch('*', ETAG)).to.equal(true)
    expect(noneMatch('"x"', ETAG)).to.equal(false)
  })
})

describe('serve: request targets and file paths (traversal never reaches the filesystem)', () => {
  it('parses the four hub routes with their model id and query', () => {
    const cases: Array<[string, string]> = [
      ['/api/v1/models/Qwen/Qwen2.5-7B', 'probe'],
      ['/api/v1/models/Qwen/Qwen2.5-7B/', 'probe'],
      ['/api/v1/models/Qwen/Qwen2.5-7B/revisions', 'revisions'],
      ['/api/v1/models/Qwen/Qwen2.5-7B/repo/files?Revision=master&Recursive=True', 'files'],
      ['/api/v1/models/Qwen/Qwen2.5-7B/repo?Revision=master&FilePath=a%2Fb+c.txt', 'download'],
    ]
    for (const [url, route] of cases) {
      const t = parseRequestTarget(url)
      expect(t, url).to.include({ok: true, route, modelId: 'Qwen/Qwen2.5-7B'})
    }
    const t = parseRequestTarget(cases[4][0])
    expect(t.ok && t.query.get('FilePath')).to.equal('a/b c.txt')
  })

  it('refuses dot segments, encoded slashes and dots, backslashes, NUL and bad ids with 400', () => {
    for (const url of [
      '/api/v1/models/../../etc/passwd',
      '/api/v1/models/o/%2e%2e/repo',
      '/api/v1/models/o/%2E%2E',
      '/api/v1/models/o%2F..%2F../n',
      '/api/v1/models/o/n%5C..%5Cx',
      '/api/v1/models/o/n%00/repo',
      '/api/v1/models/o/./repo',
      '/api/v1/models/o//n',
      '/api/v1/models/o/n/%zz',
      '/api/v1/models/.hidden/n',
      '/api/v1/models/o/a..b',
      '/api/v1/models/o/n$/revisions',
    ]) {
      expect(parseRequestTarget(url), url).to.include({ok: false, status: 400})
    }
  })

  it('parses the dataset routes of the official clients, by owner/name and by numeric Id', () => {
    const cases: Array<[string, string, Record<string, unknown>]> = [
      ['/api/v1/datasets/acme/corpus.v1', 'dataset-info', {modelId: 'acme/corpus.v1'}],
      ['/api/v1/datasets/acme/corpus.v1/repo/tree?Revision=master&Root=/&Recursive=True&PageNumber=2&PageSize=100', 'tree', {modelId: 'acme/corpus.v1'}],
      ['/api/v1/datasets/123456/repo/tree?Revision=master&PageNumber=1', 'tree', {modelId: '', datasetNumericId: 123456}],
      ['/api/v1/datasets/acme/corpus.v1/repo?Source=SDK&Revision=master&FilePath=a%2Fb.txt', 'download', {modelId: 'acme/corpus.v1'}],
    ]
    for (const [url, route, extra] of cases) expect(parseRequestTarget(url), url).to.include({ok: true, route, repoKind: 'dataset', ...extra})
    expect(parseRequestTarget('/api/v1/models/acme/corpus.v1')).to.include({ok: true, route: 'probe', repoKind: 'model'})
    for (const url of ['/api/v1/datasets/acme/x/revisions', '/api/v1/datasets/acme/x/repo/files', '/api/v1/datasets/1234567890/repo/tree', '/api/v1/models/o/n/constructor', '/api/v1/datasets/o/n/constructor', '/api/v1/datasets/o/n/__proto__']) {
      expect(parseRequestTarget(url), url).to.include({ok: false, status: 404})
    }
    expect(parseRequestTarget('/api/v1/datasets/o/%2e%2e/repo/tree'), 'dot segment').to.include({ok: false, status: 400})
  })

  it('unknown routes are 404', () => {
    for (const url of ['/', '/api/v1/models/o', '/api/v1/datasets/o', '/api/v1/models/o/n/repo/tree', '/api/v1/spaces/o/n', '/blobs/x', 'http://evil/api/v1/models/o/n']) {
      const t = parseRequestTarget(url)
      expect(t.ok, url).to.equal(false)
    }
  })

  it('FilePath: traversal, absolute, backslashes, NUL and the state of download tools are never servable', () => {
    for (const p of ['../x', 'a/../../x', '/etc/passwd', 'a\\..\\x', 'C:x', 'a\u0000b', '', 'a//b', './a', '.ms-resume/journal-v1.json', '.MS-Resume/manifest-v1.json', '.msc', '.mdl', '.mv', '._____temp/x']) {
      expect(unservableReason(p), JSON.stringify(p)).to.be.a('string')
    }
    for (const p of ['config.json', 'sub dir/a b.bin', 'x/.msc', '.gitattributes', 'weights/[1].bin']) expect(unservableReason(p), p).to.equal(undefined)
  })

  it('exactGlob matches exactly its own path under pull\'s --include rules', () => {
    for (const p of ['a.bin', 'w/[1]*?.bin', 'x[!y].txt', 'a]b', 'tokenizer/']) {
      const re = globToRegExp(exactGlob(p))
      expect(re.test(p), p).to.equal(true)
      for (const other of ['a.bin.x', 'w/1xy.bin', 'xy.txt', `${p}x`, p.slice(1)]) if (other !== p) expect(re.test(other), `${p} vs ${other}`).to.equal(false)
    }
  })
})

describe('serve: the token check and the loopback test', () => {
  it('takes the token from the cookie or a Bearer header, in constant time', () => {
    expect(presentedTokens({cookie: 'a=b; m_session_id=tok; c=d'})).to.deep.equal(['tok'])
    expect(presentedTokens({authorization: 'Bearer tok2'})).to.deep.equal(['tok2'])
    expect(isAuthorized({}, undefined)).to.equal(true)
    expect(isAuthorized({}, 'tok')).to.equal(false)
    expect(isAuthorized({cookie: 'm_session_id=tok'}, 'tok')).to.equal(true)
    expect(isAuthorized({authorization: 'bearer tok'}, 'tok')).to.equal(true)
    expect(isAuthorized({authorization: 'Bearer tok2', cookie: 'm_session_id=to'}, 'tok')).to.equal(false)
    expect(isAuthorized({authorization: 'Basic dG9rOnRvaw=='}, 'tok')).to.equal(false)
  })

  it('only loopback addresses count as private', () => {
    for (const h of ['127.0.0.1', '127.1.2.3', 'localhost', '::1', '[::1]']) expect(isLoopbackHost(h), h).to.equal(true)
    for (const h of ['0.0.0.0', '::', '192.168.1.5', '10.0.0.1', 'example.com']) expect(isLoopbackHost(h), h).to.equal(false)
  })
})

describe('serve: what counts as verified (manifest and journal are untrusted input)', () => {
  const location = resolveLocation('o/m', {cacheDir: '/cache'})
  const sha = (c: string) => c.repeat(64)
  const manifest = (files: Array<{path: string; size: number; sha256: string}>): Manifest => ({
    kind: 'ms-resume/manifest', version: 1, hub: 'modelscope', endpoint: 'http://x', modelId: 'o/m', revision: 'master', commit: 'c', createdAt: '2026-12-01T00:00:00Z',
    files: files.map((f) => ({...f, commit: 'c'.repeat(40), chunkSizeBytes: 8, xxh64: []})),
  })
  const journal = (records: Array<{path: string; size: number; sha256: string; status: string}>): JournalDoc => ({
    kind: 'ms-resume/journal', version: 1, hub: 'modelscope', endpoint: 'http://x', modelId: 'o/m', revision: 'master', createdAt: '2026-12-01T00:00:00Z', updatedAt: '',
    files: Object.fromEntries(records.map((r) => [r.path, {...r, commit: 'd'.repeat(40), chunkSizeBytes: 8, chunks: [], integrityFailures: 0} as never])),
  })

  it('lists manifest files and complete journal records; not partial ones, not a file being replaced', () => {
    const s = snapshotOf('o/m', location, manifest([{path: 'a', size: 1, sha256: sha('a')}, {path: 'b', size: 2, sha256: sha('b')}]), journal([
      {path: 'b', size: 3, sha256: sha('c'), status: 'partial'},
      {path: 'c', size: 4, sha256: sha('d'), status: 'complete'},
      {path: 'd', size: 5, sha256: sha('e'), status: 'partial'},
      {path: 'a', size: 1, sha256: sha('a'), status: 'complete'},
    ]))!
    expect([...s.files.keys()].sort()).to.deep.equal(['a', 'c'])
    expect(s.files.get('c')).to.deep.include({size: 4, sha256: sha('d')})
  })

  it('drops entries with unsafe paths, state paths, bad sizes or hashes; ignores another model\'s state', () => {
    const s = snapshotOf('o/m', location, undefined, journal([
      {path: '../x', size: 1, sha256: sha('a'), status: 'complete'},
      {path: '.ms-resume/journal-v1.json', size: 1, sha256: sha('a'), status: 'complete'},
      {path: 'neg', size: -1, sha256: sha('a'), status: 'complete'},
      {path: 'upper', size: 1, sha256: sha('A'), status: 'complete'},
      {path: 'ok', size: 1, sha256: sha('a'), status: 'complete'},
    ]))!
    expect([...s.files.keys()]).to.deep.equal(['ok'])
    expect(snapshotOf('o/other', location, manifest([{path: 'a', size: 1, sha256: sha('a')}]), undefined)).to.equal(undefined)
  })

  it('listing: trees then blobs, Root and Recursive as the hub applies them', () => {
    const files = ['a.json', 'sub/b.bin', 'sub/deep/c.txt', 'subway.txt'].map((p, i) => ({path: p, size: i, sha256: sha('a'), commit: 'c'.repeat(40)}))
    const paths = (root: string, recursive: boolean) => listingEntries(files, {root, recursive, committedDate: 1}).map((e) => `${e.Type}:${e.Path}`)
    expect(paths('', true)).to.deep.equal(['tree:sub', 'tree:sub/deep', 'blob:a.json', 'blob:sub/b.bin', 'blob:sub/deep/c.txt', 'blob:subway.txt'])
    expect(paths('', false)).to.deep.equal(['tree:sub', 'blob:a.json', 'blob:subway.txt'])
    expect(paths('sub', true)).to.deep.equal(['tree:sub/deep', 'blob:sub/b.bin', 'blob:sub/deep/c.txt'])
    expect(paths('/sub/', false)).to.deep.equal(['tree:sub/deep', 'blob:sub/b.bin'])
    const blob = listingEntries(files, {root: '', recursive: true, committedDate: 7}).find((e) => e.Path === 'sub/b.bin')!
    expect(blob).to.include({Name: 'b.bin', Type: 'blob', Size: 1, Sha256: sha('a'), Revision: 'c'.repeat(40), CommittedDate: 7, Mode: '33188'})
  })
})
