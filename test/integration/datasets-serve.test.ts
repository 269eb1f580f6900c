import fs from 'node:fs/promises'
import path from 'node:path'

import {expect} from 'chai'

import {HubEmulator, datasetKey} from '../support/emulator.js'
import {listFiles, makeTmpDir, runCli, testEnv} from '../support/cli.js'
import {DATASET, SIZE_ONLY, datasetFiles, fullListing} from '../support/datasets.js'
import {type ServeRun, envelopeOf, request, startServe, stopServe} from '../support/serve.js'

const KEY = datasetKey(DATASET)
const FILES = datasetFiles(150)
const MODEL_FILES = [{path: 'config.json', content: '{"a": 1}\n'}, {path: 'README.md', content: '# the model\n'}]

describe('serve: datasets on the routes the official clients use', function () {
  this.timeout(180_000)
  let emu: HubEmulator
  let home: string
  let serve: ServeRun

  before(async () => {
    emu = await HubEmulator.start({datasets: [{id: DATASET, files: FILES}], models: [{id: DATASET, files: MODEL_FILES}]})
    home = await makeTmpDir()
    for (const args of [['--dataset', DATASET], [DATASET]]) {
      const res = await runCli(['pull', ...args, '--endpoint', emu.url], {env: testEnv(home)})
      expect(res.code, res.stderr).to.equal(0)
    }
    serve = await startServe([], testEnv(home))
  })
  after(async () => {
    await stopServe(serve)
    await emu.stop()
    await fs.rm(home, {recursive: true, force: true})
  })

  it('ms-resume pull --dataset from the mirror: every file byte-exact, size-only files still size only, nothing from the hub', async () => {
    const seen = emu.log.length
    const out = path.join(home, 'from-mirror')
    const res = await runCli(['pull', '--dataset', DATASET, '--endpoint', serve.url, '--local-dir', out, '--json'], {env: testEnv(home)})
    expect(res.code, res.stderr).to.equal(0)
    const listed = [...FILES.map((f) => f.path), '.gitattributes'].sort()
    expect(await listFiles(out)).to.deep.equal(listed)
    for (const p of listed) expect((await fs.readFile(path.join(out, ...p.split('/')))).equals(emu.contentOf(KEY, p)), p).to.equal(true)
    const summary = JSON.parse(res.stdout.trim().split('\n').at(-1)!)
    expect(summary).to.include({repoKind: 'dataset', sizeOnlyFiles: SIZE_ONLY.length, files: listed.length})
    expect(emu.log.length, 'the hub saw nothing').to.equal(seen)
    const access = serve.access().filter((e) => e.route === 'tree')
    expect(access.length).to.be.greaterThan(1)
    for (const e of access) expect(e).to.include({repoKind: 'dataset', modelId: DATASET, status: 200})
  })

  it('the 1.x client\'s requests: info with an Id, the listing by that Id page by page, as by owner/name; size-only entries with Sha256 null', async () => {
    const info = envelopeOf(await request(serve.url, `/api/v1/datasets/${DATASET}`))
    expect(info).to.include({Code: 200, Success: true})
    expect(info.Data).to.include({Name: 'corpus.v1.5', Namespace: 'acme'})
    expect(info.Data.Id).to.be.a('number')
    const byId = await fullListing(serve.url, DATASET, info.Data.Id)
    const byName = await fullListing(serve.url, DATASET, undefined, 200)
    expect(byId).to.deep.equal(byName)
    const hub = (await fullListing(emu.url, DATASET)).filter((e) => e.Type === 'blob')
    const blobs = byId.filter((e) => e.Type === 'blob')
    expect(blobs.map((b) => `${b.Path} ${b.Size} ${b.Revision}`)).to.deep.equal(hub.map((b) => `${b.Path} ${b.Size} ${b.Revision}`))
    for (const b of blobs) {
      if (SIZE_ONLY.includes(b.Path as string)) expect(b.Sha256, b.Path as string).to.equal(null)
      else expect(b.Sha256, b.Path as string).to.equal(emu.sha256Of(KEY, b.Path as string))
    }
    expect(byId.filter((e) => e.Type === 'tree').map((e) => e.Path)).to.include.members(['data', 'data/train', 'data/dev/nested/deep', 'many', 'unverified'])
    // Page edges: an exact page, past the end, a made-up Id, a revision the cache does not have.
    const page2 = envelopeOf(await request(serve.url, `/api/v1/datasets/${info.Data.Id}/repo/tree?Revision=master&Root=/&Recursive=True&PageNumber=2&PageSize=100`))
    expect(page2.Data.Files).to.deep.equal(byId.slice(100, 200))
    const past = envelopeOf(await request(serve.url, `/api/v1/datasets/${DATASET}/repo/tree?Revision=master&Recursive=True&PageNumber=99&PageSize=100`))
    expect(past.Data.Files).to.deep.equal([])
    expect((await request(serve.url, `/api/v1/datasets/${info.Data.Id + 1}/repo/tree?Revision=master`)).status).to.equal(404)
    expect((await request(serve.url, `/api/v1/datasets/${DATASET}/repo/tree?Revision=v9`)).status).to.equal(404)
    expect((await request(serve.url, '/api/v1/datasets/acme/nope')).status).to.equal(404)
  })

  it('downloads with Range from the dataset route; the model of the same id stays the model; state files are never served', async () => {
    const target = `/api/v1/datasets/${DATASET}/repo?${new URLSearchParams({Source: 'SDK', Revision: 'master', FilePath: 'data/train/part-0002.jsonl'})}`
    const r = await request(serve.url, target, {headers: {Range: 'bytes=100-199'}})
    expect(r.status).to.equal(206)
    expect(r.body.equals(emu.rangeOf(KEY, 'data/train/part-0002.jsonl', 100, 200))).to.equal(true)
    const model = await request(serve.url, `/api/v1/models/${DATASET}/repo?${new URLSearchParams({Revision: 'master', FilePath: 'README.md'})}`)
    expect(model.body.toString()).to.equal('# the model\n')
    const dsReadme = await request(serve.url, `/api/v1/datasets/${DATASET}/repo?${new URLSearchParams({Revision: 'master', FilePath: 'README.md'})}`)
    expect(dsReadme.body.equals(emu.contentOf(KEY, 'README.md'))).to.equal(true)
    expect((await request(serve.url, `/api/v1/models/${DATASET}/repo?${new URLSearchParams({Revision: 'master', FilePath: 'many/f0001.txt'})}`)).status).to.equal(404)
    for (const p of ['.msc', '.ms-resume/journal-v1.json', '.mv']) {
      const refused = await request(serve.url, `/api/v1/datasets/${DATASET}/repo?${new URLSearchParams({Revision: 'master', FilePath: p})}`)
      expect(refused.status, p).to.equal(400)
    }
  })
})
