import crypto from 'node:crypto'
import fs from 'node:fs/promises'
import path from 'node:path'

import {expect} from 'chai'

import {readModelscopeIndex} from '../../src/hub/modelscope/python-index.js'
import {HubEmulator, datasetKey} from '../support/emulator.js'
import {exists, listFiles, makeTmpDir, runCli, testEnv} from '../support/cli.js'
import {DATASET, SIZE_ONLY, datasetDir, datasetFiles, fullListing, hasPython, modelDirOf, pythonClientView} from '../support/datasets.js'
import {skipBecause} from '../support/process.js'
import {statePaths} from '../support/state-paths.js'
import {TRANSPORTS, transport} from '../support/tls.js'

const KEY = datasetKey(DATASET)
const MODEL_FILES = [{path: 'config.json', content: '{"a": 1}\n'}, {path: 'README.md', content: '# the model, not the dataset\n'}]
const sha256 = (b: Buffer) => crypto.createHash('sha256').update(b).digest('hex')
const lines = (out: string) => out.split('\n').filter((l) => l.startsWith('{')).map((l) => JSON.parse(l) as Record<string, any>)

for (const kind of TRANSPORTS) {
  describe(`pull --dataset over ${kind}`, function () {
    this.timeout(180_000)
    const t = transport(kind)
    let emu: HubEmulator
    let home: string

    before(async () => {
      emu = await HubEmulator.start({datasets: [{id: DATASET, files: datasetFiles()}], tls: t.tls})
      home = await makeTmpDir()
    })
    after(async () => {
      await emu.stop()
      await fs.rm(home, {recursive: true, force: true})
    })

    it('1,000+ files in nested folders, byte-exact; every listing page read to the short one; files from the dataset route', async () => {
      const res = await runCli(['pull', '--dataset', DATASET, '--endpoint', emu.url, '--json'], {env: testEnv(home, t.env)})
      expect(res.code, res.stderr).to.equal(0)
      const dir = datasetDir(path.join(home, 'cache'))
      const listed = [...datasetFiles().map((f) => f.path), '.gitattributes'].sort()
      // .gitattributes is kept: the official client's dataset download fetches it too.
      expect((await listFiles(dir)).filter((p) => !['.msc', '.mdl', '.mv'].includes(p))).to.deep.equal(listed)
      for (const p of listed) expect((await fs.readFile(path.join(dir, ...p.split('/')))).equals(emu.contentOf(KEY, p)), p).to.equal(true)

      const summary = lines(res.stdout).at(-1)!
      expect(summary).to.include({type: 'summary', modelId: DATASET, repoKind: 'dataset', files: listed.length, failedFiles: 0, sizeOnlyFiles: 3, modelDir: dir})
      // The listing: pages of 100 from 1 up to the first short one, each as the official client asks.
      const tree = emu.log.filter((e) => e.route === 'tree')
      const entries = (await fullListing(emu.url, DATASET)).length
      const pages = Math.floor(entries / 100) + 1
      expect(entries).to.be.greaterThan(1000)
      expect([...new Set(tree.map((e) => e.page))].sort((a, b) => a! - b!).slice(0, pages)).to.deep.equal(Array.from({length: pages}, (_, i) => i + 1))
      expect(Math.max(...tree.map((e) => e.page!)), 'pages asked past the end').to.be.at.most(pages + 4)
      for (const e of tree) {
        expect(e.url).to.match(/^\/api\/v1\/datasets\/acme\/corpus\.v1\.5\/repo\/tree\?/)
        expect(new URL(e.url, emu.url).searchParams.get('Root')).to.equal('/')
        expect(new URL(e.url, emu.url).searchParams.get('Recursive')).to.equal('True')
        expect(e.pageSize).to.equal(100)
      }
      expect(emu.log.filter((e) => e.route === 'dataset-info')).to.have.length(1)
      const downloads = emu.log.filter((e) => e.route === 'download')
      // One per non-empty file (small files come straight from the download route or via a 302).
      expect(downloads.length).to.equal(listed.filter((p) => emu.sizeOf(KEY, p) > 0).length)
      for (const e of downloads) expect(e.url).to.match(/^\/api\/v1\/datasets\/acme\/corpus\.v1\.5\/repo\?Source=SDK&Revision=master&FilePath=/)
      expect(emu.log.some((e) => e.url.startsWith('/api/v1/models/')), 'no model route').to.equal(false)
    })

    it('files without a listed SHA-256 are size only: marked in the manifest with the hash of what was placed, said once in the summary', async () => {
      const dir = datasetDir(path.join(home, 'cache'))
      const manifest = JSON.parse(await fs.readFile(statePaths(dir).manifest, 'utf8'))
      expect(manifest.repoKind).to.equal('dataset')
      const byPath = new Map((manifest.files as Array<Record<string, any>>).map((f) => [f.path, f]))
      for (const p of SIZE_ONLY) {
        expect(byPath.get(p), p).to.include({sizeOnly: true, size: emu.sizeOf(KEY, p), sha256: sha256(emu.contentOf(KEY, p))})
      }
      expect(byPath.get('data/train/part-0001.jsonl')).to.include({sha256: emu.sha256Of(KEY, 'data/train/part-0001.jsonl')})
      expect(byPath.get('data/train/part-0001.jsonl')).not.to.have.property('sizeOnly')
      expect([...byPath.values()].filter((f) => f.sizeOnly)).to.have.length(3)

      // A second pull moves no bytes; the plain output says "size only" once and lists no file one by one.
      emu.clearLog()
      const again = await runCli(['pull', '--dataset', DATASET, '--endpoint', emu.url], {env: testEnv(home, t.env)})
      expect(again.code, again.stderr).to.equal(0)
      expect(emu.contentRequests(KEY)).to.have.length(0)
      expect(again.stderr.split('\n').filter((l) => /size only/.test(l))).to.deep.equal([
        'size only: 3 files have no SHA-256 in the hub\'s listing and were checked by size only (the manifest records the hash of the bytes placed, which verify holds them to)',
      ])
      expect(again.stderr).to.match(/^listing dataset acme\/corpus\.v1\.5@master on /m)
      expect(again.stderr).not.to.match(/^(ok|done) /m)
    })
  })
}

describe('pull --dataset: the layout the official clients expect, a model of the same id beside it', function () {
  this.timeout(180_000)
  let emu: HubEmulator
  let home: string

  before(async () => {
    emu = await HubEmulator.start({datasets: [{id: DATASET, files: datasetFiles(150)}], models: [{id: DATASET, files: MODEL_FILES}]})
    home = await makeTmpDir()
  })
  after(async () => {
    await emu.stop()
    await fs.rm(home, {recursive: true, force: true})
  })

  it('datasets/<owner>/<masked name> with .msc (every file, with its commit), .mdl, .mv, the lock file; no symlink; the model in models/', async () => {
    const cache = path.join(home, 'cache')
    const ds = await runCli(['pull', '--dataset', DATASET, '--endpoint', emu.url, '--print-path'], {env: testEnv(home)})
    expect(ds.code, ds.stderr).to.equal(0)
    const m = await runCli(['pull', DATASET, '--endpoint', emu.url, '--print-path'], {env: testEnv(home)})
    expect(m.code, m.stderr).to.equal(0)
    const dir = datasetDir(cache)
    expect(ds.stdout.trim()).to.equal(dir)
    expect(m.stdout.trim()).to.equal(modelDirOf(cache, DATASET))
    // One README each, each its own repo's.
    expect((await fs.readFile(path.join(dir, 'README.md'))).equals(emu.contentOf(datasetKey(DATASET), 'README.md'))).to.equal(true)
    expect((await fs.readFile(path.join(modelDirOf(cache, DATASET), 'README.md'))).equals(emu.contentOf(DATASET, 'README.md'))).to.equal(true)
    expect(await exists(path.join(modelDirOf(cache, DATASET), 'data'))).to.equal(false)

    const listing = await fullListing(emu.url, DATASET)
    const blobs = listing.filter((e) => e.Type === 'blob')
    const index = await readModelscopeIndex(dir)
    expect(new Set(index.files!.map((e) => `${e.Path} ${e.Revision}`))).to.deep.equal(new Set(blobs.map((b) => `${b.Path} ${b.Revision}`)))
    expect(index.id).to.equal('acme/corpus___v1___5')
    // The dataset download writes the bare revision name (a str, not the model's Revision:..,CreatedAt:..).
    expect(await fs.readFile(path.join(dir, '.mv'), 'utf8')).to.equal('master')
    expect(await exists(path.join(cache, '.lock', 'acme___corpus.v1.5'))).to.equal(true)
    expect(await exists(path.join(cache, 'datasets', 'acme', 'corpus.v1.5')), 'no dotted-name symlink for a dataset').to.equal(false)
    // The model keeps its own index.
    expect(await fs.readFile(path.join(modelDirOf(cache, DATASET), '.mv'), 'utf8')).to.match(/^Revision:master,CreatedAt:\d+$/)

    // Pulled again, neither moves a byte.
    emu.clearLog()
    expect((await runCli(['pull', '--dataset', DATASET, '--endpoint', emu.url], {env: testEnv(home)})).code).to.equal(0)
    expect((await runCli(['pull', DATASET, '--endpoint', emu.url], {env: testEnv(home)})).code).to.equal(0)
    expect(emu.log.filter((e) => e.content)).to.have.length(0)
  })

  it('the official 1.x client, by its own rules in Python, finds every listed file present', async function () {
    if (!hasPython) skipBecause(this, 'python3 is not installed')
    const view = pythonClientView(path.join(home, 'cache'), DATASET, await fullListing(emu.url, DATASET))
    expect(view.missing).to.deep.equal([])
    expect(view).to.include({id: 'acme/corpus___v1___5', mv: 'master'})
    expect(view.entries).to.equal(datasetFiles(150).length + 1)
  })

  it('a model and a dataset of one id never share a directory: --local-dir and --cache-dir refuse to mix them', async () => {
    for (const where of [['--local-dir', path.join(home, 'mixed')], ['--cache-dir', path.join(home, 'cd')]]) {
      const first = await runCli(['pull', DATASET, '--endpoint', emu.url, ...where], {env: testEnv(home)})
      expect(first.code, first.stderr).to.equal(0)
      emu.clearLog()
      const second = await runCli(['pull', '--dataset', DATASET, '--endpoint', emu.url, ...where], {env: testEnv(home)})
      expect(second.code, `${where[0]}: ${second.stderr}`).to.equal(2)
      expect(second.stderr).to.contain('[E_USAGE]').and.to.contain('already holds acme/corpus.v1.5, not dataset acme/corpus.v1.5')
      expect(emu.log.filter((e) => e.content), 'nothing fetched').to.have.length(0)
      const dir = where[0] === '--local-dir' ? where[1] : path.join(where[1], 'acme', 'corpus___v1___5')
      expect((await listFiles(dir)).filter((p) => !['.msc', '.mdl', '.mv'].includes(p))).to.deep.equal(['README.md', 'config.json'])
    }
  })
})

describe('pull --dataset: paging edge cases and listings that lie', function () {
  this.timeout(120_000)
  let emu: HubEmulator
  let home: string
  const pull = (id: string, extra: string[] = [], env: Record<string, string> = {}) =>
    runCli(['pull', '--dataset', id, '--endpoint', emu.url, '--local-dir', path.join(home, id.replace('/', '_')), '--json', ...extra], {env: testEnv(home, env)})
  const pagesAsked = (id: string) => emu.log.filter((e) => e.route === 'tree' && e.repo === datasetKey(id)).map((e) => e.page!)
  const top = (n: number) => Array.from({length: n}, (_, i) => ({path: `f${String(i).padStart(3, '0')}.txt`, size: 10 + i}))

  before(async () => {
    emu = await HubEmulator.start({datasets: [
      // 199 files and .gitattributes: exactly two full pages, then an empty one.
      {id: 'acme/exact', files: top(199)},
      {id: 'acme/empty', files: [], gitattributes: false},
      {id: 'acme/repeats', files: top(150), paging: 'ignorePageNumber'},
      {id: 'acme/endless', files: top(10), paging: 'endless'},
      {id: 'acme/unpaged', files: top(150), paging: 'ignorePageSize'},
      // Sorted last (zzz/), listed under the name of a file on page 1.
      {id: 'acme/twice', files: [...top(120), {path: 'zzz/dup.txt', size: 3, listedExtra: {Path: 'f001.txt', Name: 'f001.txt'}}]},
      {id: 'acme/badsha', files: [...top(5), {path: 'x.bin', size: 9, listedSha256: 'not-a-hash'}]},
      {id: 'acme/badsize', files: [...top(5), {path: 'x.bin', size: 9, listedExtra: {Size: -1}}]},
      {id: 'acme/escape', files: [...top(5), {path: 'x.bin', size: 9, listedExtra: {Path: '../escape.bin'}}]},
    ]})
    home = await makeTmpDir()
  })
  after(async () => {
    await emu.stop()
    await fs.rm(home, {recursive: true, force: true})
  })

  it('an exact multiple of the page size: two full pages, the empty third ends the listing', async () => {
    const res = await pull('acme/exact')
    expect(res.code, res.stderr).to.equal(0)
    expect(await listFiles(path.join(home, 'acme_exact'))).to.have.length(200)
    const asked = pagesAsked('acme/exact')
    expect(asked).to.include.members([1, 2, 3])
    expect(lines(res.stdout).at(-1)).to.include({files: 200, downloadedFiles: 200})
  })

  it('an empty dataset: one page, nothing to fetch, exit 0', async () => {
    const res = await pull('acme/empty')
    expect(res.code, res.stderr).to.equal(0)
    expect(pagesAsked('acme/empty')).to.deep.equal([1])
    expect(lines(res.stdout).at(-1)).to.include({files: 0, failedFiles: 0})
    expect(await listFiles(path.join(home, 'acme_empty'))).to.deep.equal([])
  })

  for (const [id, re, extraEnv] of [
    ['acme/repeats', /page 2 of the file listing with the entries of page 1 again/, {}],
    ['acme/endless', /did not end after 7 full pages of 100 entries/, {MS_RESUME_MAX_LISTING_PAGES: '7'}],
    ['acme/unpaged', /page 1 of the file listing has 151 entries, more than the 100 asked for/, {}],
    ['acme/twice', /names "f001\.txt" twice \(again on page 2\)/, {}],
    ['acme/badsha', /"x\.bin" a malformed Sha256/, {}],
    ['acme/badsize', /"x\.bin" an invalid size \(-1\)/, {}],
  ] as Array<[string, RegExp, Record<string, string>]>) {
    it(`${id}: exit 5 [E_REMOTE] naming what is wrong, nothing written`, async () => {
      const res = await pull(id, [], extraEnv)
      expect(res.code, res.stderr).to.equal(5)
      const error = lines(res.stdout).find((e) => e.type === 'error')!
      expect(error.code).to.equal('E_REMOTE')
      expect(error.message).to.match(re)
      expect(await exists(path.join(home, id.replace('/', '_'))), 'nothing created').to.equal(false)
      expect(emu.log.filter((e) => e.content && e.repo === datasetKey(id))).to.have.length(0)
      if (id === 'acme/endless') expect(Math.max(...pagesAsked(id))).to.equal(7)
    })
  }

  it('a path that would escape the dataset directory: exit 5 [E_UNSAFE_PATH], nothing written anywhere', async () => {
    const res = await pull('acme/escape')
    expect(res.code, res.stderr).to.equal(5)
    expect(lines(res.stdout).find((e) => e.type === 'error')).to.include({code: 'E_UNSAFE_PATH'})
    expect(await exists(path.join(home, 'escape.bin'))).to.equal(false)
    expect(await exists(path.join(home, 'acme_escape'))).to.equal(false)
  })
})

describe('pull --dataset: flags and mistakes', function () {
  this.timeout(120_000)
  let emu: HubEmulator
  let home: string

  before(async () => {
    emu = await HubEmulator.start({
      datasets: [{id: DATASET, files: datasetFiles(20), branches: ['v2']}],
      models: [{id: 'acme/only-a-model', files: MODEL_FILES}],
    })
    home = await makeTmpDir()
  })
  after(async () => {
    await emu.stop()
    await fs.rm(home, {recursive: true, force: true})
  })

  it('--include/--exclude (fnmatch on the whole path), --revision and --local-dir as for a model', async () => {
    const dir = path.join(home, 'picked')
    const res = await runCli(['pull', '--dataset', DATASET, '--endpoint', emu.url, '--local-dir', dir, '--revision', 'v2', '--include', 'data/*', '--exclude', '*.json'], {env: testEnv(home)})
    expect(res.code, res.stderr).to.equal(0)
    expect(await listFiles(dir)).to.deep.equal(['data/train/part-0001.jsonl', 'data/train/part-0002.jsonl'])
    for (const e of emu.log.filter((x) => x.route === 'tree' || x.route === 'download')) expect(e.revision, e.url).to.equal('v2')
    expect(emu.log.filter((e) => e.route === 'download').map((e) => e.path).sort()).to.deep.equal(['data/train/part-0001.jsonl', 'data/train/part-0002.jsonl'])
    const manifest = JSON.parse(await fs.readFile(statePaths(dir).manifest, 'utf8'))
    expect(manifest).to.include({repoKind: 'dataset', revision: 'v2', modelId: DATASET})
  })

  it('a dataset or a revision that does not exist (a model of that id is not a dataset): exit 5 [E_NOT_FOUND] naming the dataset', async () => {
    for (const [id, rev] of [['acme/nope', 'master'], ['acme/only-a-model', 'master'], [DATASET, 'v9']]) {
      const res = await runCli(['pull', '--dataset', id, '--endpoint', emu.url, '--revision', rev, '--local-dir', path.join(home, 'x')], {env: testEnv(home)})
      expect(res.code, res.stderr).to.equal(5)
      expect(res.stderr).to.contain('[E_NOT_FOUND]').and.to.contain(`Dataset ${id} (revision ${rev}) was not found`)
      expect(res.stderr).not.to.match(/\n\s+at /)
    }
  })

  it('a model id and --dataset together, or a malformed dataset id: exit 2 [E_USAGE] before any request', async () => {
    emu.clearLog()
    const both = await runCli(['pull', 'acme/m', '--dataset', DATASET, '--endpoint', emu.url], {env: testEnv(home)})
    expect(both.code).to.equal(2)
    expect(both.stderr).to.contain('[E_USAGE]').and.to.contain('not both')
    const bad = await runCli(['pull', '--dataset', '../etc', '--endpoint', emu.url], {env: testEnv(home)})
    expect(bad.code).to.equal(2)
    expect(bad.stderr).to.contain('[E_USAGE]').and.to.contain('Not a dataset id: "../etc"')
    expect(emu.log).to.have.length(0)
  })
})
