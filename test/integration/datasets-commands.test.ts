import crypto from 'node:crypto'
import fs from 'node:fs/promises'
import path from 'node:path'

import {Ajv2020} from 'ajv/dist/2020.js'
import {expect} from 'chai'

import {HubEmulator, datasetKey} from '../support/emulator.js'
import {REPO_ROOT, exists, listFiles, makeTmpDir, runCli, testEnv} from '../support/cli.js'
import {DATASET, MiB, SIZE_ONLY, datasetDir, datasetFiles, modelDirOf} from '../support/datasets.js'
import {type JournalView, pullAndKillWhen, readJournal} from '../support/process.js'
import {statePaths} from '../support/state-paths.js'

const KEY = datasetKey(DATASET)
const BIG = 'data/train/part-0001.jsonl'
const SIZE_ONLY_FILE = SIZE_ONLY[0]
const sha256 = (b: Buffer) => crypto.createHash('sha256').update(b).digest('hex')

async function flipByte(file: string, offset: number): Promise<void> {
  const fh = await fs.open(file, 'r+')
  try {
    const b = Buffer.alloc(1)
    await fh.read(b, 0, 1, offset)
    b[0] ^= 0xff
    await fh.write(b, 0, 1, offset)
  } finally {
    await fh.close()
  }
}

describe('verify, status, clean and manifest with --dataset', function () {
  this.timeout(180_000)
  let emu: HubEmulator
  let home: string
  let cache: string
  let dir: string
  const cli = (args: string[]) => runCli(args, {env: testEnv(home)})

  before(async () => {
    emu = await HubEmulator.start({
      datasets: [{id: DATASET, files: datasetFiles(30)}, {id: 'acme/halfway', files: [{path: 'a.txt', content: 'a\n'}, {path: 'big.bin', size: 24 * MiB}]}],
      models: [{id: DATASET, files: [{path: 'config.json', content: '{}\n'}]}],
    })
    home = await makeTmpDir()
    cache = path.join(home, 'cache')
    dir = datasetDir(cache)
    for (const args of [['--dataset', DATASET], [DATASET]]) {
      const res = await cli(['pull', ...args, '--endpoint', emu.url])
      expect(res.code, res.stderr).to.equal(0)
    }
  })
  after(async () => {
    await emu.stop()
    await fs.rm(home, {recursive: true, force: true})
  })

  it('verify --dataset: the dataset\'s manifest, not the model\'s of the same id; size-only files held to the hash the pull recorded', async () => {
    const ok = await cli(['verify', '--dataset', DATASET, '--json'])
    expect(ok.code, ok.stderr).to.equal(0)
    const report = JSON.parse(ok.stdout)
    expect(report).to.include({type: 'verify', modelId: DATASET, repoKind: 'dataset', ok: true, modelDir: dir, level: 'full'})
    expect(report.counts.files).to.equal(datasetFiles(30).length + 1)
    const text = await cli(['verify', '--dataset', DATASET, '--level', 'fast'])
    expect(text.stdout).to.match(/^verified: dataset acme\/corpus\.v1\.5@master, 40 files \(40 ok\) at level fast/m)

    await flipByte(path.join(dir, ...BIG.split('/')), 2 * MiB + 5)
    await flipByte(path.join(dir, ...SIZE_ONLY_FILE.split('/')), 100)
    const bad = await cli(['verify', '--dataset', DATASET, '--json'])
    expect(bad.code).to.equal(4)
    const files = new Map((JSON.parse(bad.stdout).files as Array<Record<string, any>>).map((f) => [f.path, f]))
    expect(files.get(BIG)!.status).to.equal('sha256-mismatch')
    expect(files.get(SIZE_ONLY_FILE)!.status).to.equal('sha256-mismatch')
    expect(files.get(SIZE_ONLY_FILE)!.expectedSha256).to.equal(sha256(emu.contentOf(KEY, SIZE_ONLY_FILE)))

    emu.clearLog()
    const repaired = await cli(['verify', '--dataset', DATASET, '--level', 'fast', '--repair', '--endpoint', emu.url, '--json'])
    expect(repaired.code, repaired.stderr).to.equal(0)
    // The damaged MiB of the big file only, and the one chunk of the size-only file.
    expect(emu.contentRequests(KEY, BIG).map((e) => e.range)).to.deep.equal([`bytes=${2 * MiB}-${3 * MiB - 1}`])
    expect(emu.contentRequests(KEY, SIZE_ONLY_FILE)).to.have.length(1)
    for (const p of [BIG, SIZE_ONLY_FILE]) expect((await fs.readFile(path.join(dir, ...p.split('/')))).equals(emu.contentOf(KEY, p)), p).to.equal(true)
    expect((await cli(['verify', '--dataset', DATASET])).code).to.equal(0)
  })

  it('status: a scan of the cache lists the model and the dataset of one id apart; --dataset shows one', async () => {
    const scan = await cli(['status', '--json'])
    expect(scan.code, scan.stderr).to.equal(0)
    const report = JSON.parse(scan.stdout)
    expect(report.searched).to.equal(cache)
    const kinds = (report.models as Array<Record<string, any>>).map((m) => `${m.repoKind} ${m.modelId} ${m.modelDir} ${m.complete}`)
    expect(kinds).to.deep.equal([`model ${DATASET} ${modelDirOf(cache, DATASET)} true`, `dataset ${DATASET} ${dir} true`])
    const one = JSON.parse((await cli(['status', '--dataset', DATASET, '--json'])).stdout)
    expect(one.models).to.have.length(1)
    expect(one.models[0]).to.include({repoKind: 'dataset', modelDir: dir, complete: true})
    expect(one.models[0].fileList).to.have.length(datasetFiles(30).length + 1)
    const text = await cli(['status'])
    expect(text.stdout).to.match(/^acme\/corpus\.v1\.5@master: complete$/m).and.to.match(/^dataset acme\/corpus\.v1\.5@master: complete$/m)
  })

  it('manifest --dataset: kind and size-only files marked, valid against the schema; pull --manifest holds a size-only file to the pinned hash', async () => {
    const out = path.join(home, 'pinned.json')
    const res = await cli(['manifest', '--dataset', DATASET, '--out', out])
    expect(res.code, res.stderr).to.equal(0)
    const manifest = JSON.parse(await fs.readFile(out, 'utf8'))
    expect(manifest).to.include({kind: 'ms-resume/manifest', modelId: DATASET, repoKind: 'dataset'})
    expect(manifest.files.filter((f: {sizeOnly?: boolean}) => f.sizeOnly).map((f: {path: string}) => f.path).sort()).to.deep.equal([...SIZE_ONLY].sort())
    const ajv = new Ajv2020({strict: true, allErrors: true})
    ajv.addFormat('date-time', (s: string) => !Number.isNaN(Date.parse(s)))
    const validate = ajv.compile(JSON.parse(await fs.readFile(path.join(REPO_ROOT, 'manifests', 'manifest-v1.schema.json'), 'utf8')))
    expect(validate(manifest), JSON.stringify(validate.errors)).to.equal(true)
    // The model's manifest, asked for as a model, is the model's.
    expect(JSON.parse((await cli(['manifest', DATASET])).stdout)).not.to.have.property('repoKind')

    // Pinned: the kind comes from the manifest; exactly those bytes.
    const pinnedDir = path.join(home, 'pinned')
    const pulled = await cli(['pull', '--manifest', out, '--endpoint', emu.url, '--local-dir', pinnedDir, '--json'])
    expect(pulled.code, pulled.stderr).to.equal(0)
    expect((await fs.readFile(path.join(pinnedDir, ...SIZE_ONLY_FILE.split('/')))).equals(emu.contentOf(KEY, SIZE_ONLY_FILE))).to.equal(true)
    const written = JSON.parse(await fs.readFile(statePaths(pinnedDir).manifest, 'utf8'))
    expect(written.files.find((f: {path: string}) => f.path === SIZE_ONLY_FILE)).to.include({sizeOnly: true, sha256: sha256(emu.contentOf(KEY, SIZE_ONLY_FILE))})
    expect((await cli(['pull', 'acme/other', '--manifest', out])).stderr).to.contain('[E_USAGE]').and.to.contain('The manifest is for dataset acme/corpus.v1.5')

    // A hub serving other bytes of the right size under the same listing: a plain pull cannot tell
    // (size only), a pinned pull refuses them and places nothing.
    emu.setDefaultFault(KEY, SIZE_ONLY_FILE, {kind: 'corrupt', offsets: [7]})
    try {
      const strict = path.join(home, 'strict')
      const refused = await cli(['pull', '--manifest', out, '--endpoint', emu.url, '--local-dir', strict, '--include', 'unverified/*'])
      expect(refused.code, refused.stderr).to.equal(4)
      expect(refused.stderr).to.contain('[E_INTEGRITY]')
      expect(await exists(path.join(strict, ...SIZE_ONLY_FILE.split('/')))).to.equal(false)
      const lax = path.join(home, 'lax')
      const taken = await cli(['pull', '--dataset', DATASET, '--endpoint', emu.url, '--local-dir', lax, '--include', SIZE_ONLY_FILE])
      expect(taken.code, taken.stderr).to.equal(0)
      expect(taken.stderr).to.contain('size only: 1 file has no SHA-256')
    } finally {
      emu.clearFaults()
    }
    // Changed upstream (same size, new commit): the pin no longer matches.
    emu.mutateFile(KEY, SIZE_ONLY[1], {content: 'HELLO', noSha256: 'null'})
    const mismatch = await cli(['pull', '--manifest', out, '--endpoint', emu.url, '--local-dir', path.join(home, 'pinned2')])
    expect(mismatch.code).to.equal(5)
    expect(mismatch.stderr).to.contain('[E_MANIFEST_MISMATCH]').and.to.contain('unverified/b.txt: size 5 commit')
  })

  it('clean --dataset (and a scan) removes what a killed pull of a dataset left, keeps every verified file', async () => {
    const halfway = datasetDir(cache, 'acme/halfway')
    emu.setRateLimit(2 * MiB)
    try {
      await pullAndKillWhen(['pull', '--dataset', 'acme/halfway', '--endpoint', emu.url, '--connections', '1'], testEnv(home), halfway,
        (doc: JournalView) => doc.files['a.txt']?.status === 'complete' && (doc.files['big.bin']?.chunks ?? []).some((c) => c !== null))
    } finally {
      emu.setRateLimit(undefined)
    }
    expect(await fs.readdir(statePaths(halfway).partials)).to.have.length(1)
    const dry = JSON.parse((await cli(['clean', '--json', '--dry-run'])).stdout)
    expect((dry.models as Array<Record<string, any>>).find((m) => m.modelDir === halfway)).to.include({repoKind: 'dataset', modelId: 'acme/halfway'})
    const res = await cli(['clean', '--dataset', 'acme/halfway', '--json'])
    expect(res.code, res.stderr).to.equal(0)
    const result = JSON.parse(res.stdout).models[0]
    expect(result).to.include({repoKind: 'dataset', modelId: 'acme/halfway'})
    expect(result.items.map((i: {kind: string}) => i.kind)).to.deep.equal(['partial'])
    expect(result.journalEntries).to.deep.equal(['big.bin'])
    expect(await fs.readdir(statePaths(halfway).partials)).to.deep.equal([])
    expect(Object.keys((await readJournal(halfway))!.files).sort()).to.deep.equal(['.gitattributes', 'a.txt'])
    expect(await fs.readFile(path.join(halfway, 'a.txt'), 'utf8')).to.equal('a\n')
    // The other dataset and the model were left alone.
    expect(await listFiles(dir)).to.include(BIG)
    expect((await cli(['verify', '--dataset', DATASET, '--level', 'size'])).code).to.equal(0)
  })
})
