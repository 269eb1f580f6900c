import crypto from 'node:crypto'
import fs from 'node:fs/promises'
import path from 'node:path'

import {expect} from 'chai'

import {type EmulatorFileSpec, HubEmulator} from '../support/emulator.js'
import {listFiles, makeTmpDir, runCli, testEnv} from '../support/cli.js'
import {durablePrefixBytes, pullAndKillWhen, readJournal, startJsonCli, waitUntil, writeJournal} from '../support/process.js'
import {type ServeRun, connect, downloadTarget, envelopeOf, request, startServe, stopServe} from '../support/serve.js'
import {statePaths} from '../support/state-paths.js'

const MODEL = 'acme/mirror.model-v1.5'
const MiB = 1024 * 1024
const FILES: EmulatorFileSpec[] = [
  {path: 'config.json', content: '{"hidden_size": 8}\n'},
  {path: 'empty.txt', content: ''},
  {path: 'weights/model-00001.safetensors', size: 3 * MiB + 123},
  {path: 'sub dir/näme ünïcode+plus.bin', size: 70_000},
  {path: 'weights/[1]*.bin', size: 4096},
]
const BIG = 'weights/model-00001.safetensors'
const rssBytes = async (pid: number) => Number(/VmRSS:\s+(\d+) kB/.exec(await fs.readFile(`/proc/${pid}/status`, 'utf8'))![1]) * 1024
const sha256 = (b: Buffer) => crypto.createHash('sha256').update(b).digest('hex')

describe('serve: a mirror of the verified files of a cache', function () {
  this.timeout(120_000)
  let emu: HubEmulator
  let home: string
  let serve: ServeRun
  const modelDir = () => path.join(home, 'cache', 'models', 'acme', 'mirror___model-v1___5')

  before(async () => {
    emu = await HubEmulator.start({models: [
      {id: MODEL, files: FILES},
      {id: 'acme/half', files: [{path: 'small.json', content: '{}\n'}, {path: 'big.bin', size: 16 * MiB}]},
    ]})
    home = await makeTmpDir()
    const res = await runCli(['pull', MODEL, '--endpoint', emu.url], {env: testEnv(home)})
    expect(res.code, res.stderr).to.equal(0)
    serve = await startServe([], testEnv(home))
  })
  after(async () => {
    await stopServe(serve)
    await emu.stop()
    await fs.rm(home, {recursive: true, force: true})
  })

  it('ms-resume pull --endpoint <serve> gets every file byte-exact, without a byte from the hub', async () => {
    const seenByHub = emu.log.length
    const out = path.join(home, 'out-pull')
    const res = await runCli(['pull', MODEL, '--endpoint', serve.url, '--local-dir', out, '--json'], {env: testEnv(home)})
    expect(res.code, res.stderr).to.equal(0)
    expect(await listFiles(out)).to.deep.equal(FILES.map((f) => f.path).sort())
    for (const f of FILES) expect((await fs.readFile(path.join(out, ...f.path.split('/')))).equals(emu.contentOf(MODEL, f.path)), f.path).to.equal(true)
    expect(emu.log.length, 'the hub saw nothing').to.equal(seenByHub)
    // The NDJSON access log: one complete 206 per non-empty file, with what it sent.
    const nonEmpty = FILES.filter((x) => emu.sizeOf(MODEL, x.path) > 0)
    const downloads206 = () => serve.access().filter((e) => e.route === 'download' && e.status === 206)
    await waitUntil(async () => downloads206().length >= nonEmpty.length, 'the access lines of the pull', 10_000)
    const downloads = downloads206()
    for (const f of nonEmpty) {
      const lines = downloads.filter((e) => e.path === f.path)
      expect(lines, f.path).to.have.length(1)
      expect(lines[0]).to.include({method: 'GET', modelId: MODEL, source: 'cache', complete: true, bytes: emu.sizeOf(MODEL, f.path)})
      expect(lines[0].url).to.be.a('string').and.match(/^\/api\/v1\/models\/acme\/mirror\.model-v1\.5\/repo\?/)
      expect(lines[0].time).to.be.a('string')
      expect(lines[0].ms).to.be.a('number')
    }
  })

  it('answers the 1.x client\'s requests: probe, revisions, listing, then a Range from 0 per file (206)', async () => {
    const probe = await request(serve.url, `/api/v1/models/${MODEL}`, {headers: {Cookie: 'm_session_id=anything'}})
    expect(probe.status).to.equal(200)
    expect(envelopeOf(probe)).to.include({Code: 200, Success: true, Message: 'success'})
    expect(envelopeOf(probe).RequestId).to.match(/^[0-9a-f-]{36}$/)
    const revisions = envelopeOf(await request(serve.url, `/api/v1/models/${MODEL}/revisions`))
    expect(revisions.Data.RevisionMap.Branches.map((b: {Revision: string}) => b.Revision)).to.deep.equal(['master'])
    expect(revisions.Data.RevisionMap.Branches[0].CreatedAt).to.be.a('number')
    const listing = envelopeOf(await request(serve.url, `/api/v1/models/${MODEL}/repo/files?Revision=master&Recursive=True`))
    const blobs = listing.Data.Files.filter((f: {Type: string}) => f.Type === 'blob')
    expect(blobs.map((f: {Path: string}) => f.Path).sort()).to.deep.equal(FILES.map((f) => f.path).sort())
    expect(listing.Data.Files.filter((f: {Type: string}) => f.Type === 'tree').map((f: {Path: string}) => f.Path)).to.deep.equal(['sub dir', 'weights'])
    for (const f of blobs) {
      expect(f.Sha256, f.Path).to.equal(emu.sha256Of(MODEL, f.Path))
      expect(f.Size, f.Path).to.equal(emu.sizeOf(MODEL, f.Path))
      expect(f.Revision, f.Path).to.equal(emu.revisionOf(MODEL, f.Path))
      expect(f.Name).to.equal(f.Path.split('/').pop())
      if (f.Size === 0) continue // the official client makes no request for an empty file
      const r = await request(serve.url, downloadTarget(MODEL, f.Path), {headers: {Range: `bytes=0-${f.Size - 1}`, Cookie: 'm_session_id=anything'}})
      expect(r.status, f.Path).to.equal(206)
      expect(r.headers['content-range']).to.equal(`bytes 0-${f.Size - 1}/${f.Size}`)
      expect(sha256(r.body), f.Path).to.equal(f.Sha256)
    }
    // Root limits the listing to one directory.
    const weights = envelopeOf(await request(serve.url, `/api/v1/models/${MODEL}/repo/files?Revision=master&Recursive=True&Root=weights`))
    expect(weights.Data.Files.map((f: {Path: string}) => f.Path).sort()).to.deep.equal(['weights/[1]*.bin', BIG])
  })

  it('answers the 2.x client\'s requests: revisions, the listing twice, then plain GETs (200, whole file)', async () => {
    expect((await request(serve.url, `/api/v1/models/${MODEL}/revisions`)).status).to.equal(200)
    const first = envelopeOf(await request(serve.url, `/api/v1/models/${MODEL}/repo/files?Revision=master&Recursive=True`))
    const second = envelopeOf(await request(serve.url, `/api/v1/models/${MODEL}/repo/files?Revision=master&Recursive=True`))
    expect(second.Data.Files).to.deep.equal(first.Data.Files)
    for (const f of first.Data.Files.filter((x: {Type: string}) => x.Type === 'blob')) {
      const r = await request(serve.url, downloadTarget(MODEL, f.Path), {headers: {Authorization: 'Bearer anything', Cookie: 'm_session_id=anything'}})
      expect(r.status, f.Path).to.equal(200)
      expect(r.body.equals(emu.contentOf(MODEL, f.Path)), f.Path).to.equal(true)
      expect(r.headers.etag).to.equal(`"${f.Sha256}"`)
    }
  })

  it('Range, If-Range, If-None-Match, HEAD and 416 on a served file', async () => {
    const target = downloadTarget(MODEL, BIG)
    const size = emu.sizeOf(MODEL, BIG)
    const content = emu.contentOf(MODEL, BIG)
    const etag = `"${emu.sha256Of(MODEL, BIG)}"`
    const mid = await request(serve.url, target, {headers: {Range: 'bytes=1000000-1000099'}})
    expect(mid.status).to.equal(206)
    expect(mid.headers['content-range']).to.equal(`bytes 1000000-1000099/${size}`)
    expect(mid.headers['content-length']).to.equal('100')
    expect(mid.headers.etag).to.equal(etag)
    expect(mid.body.equals(content.subarray(1_000_000, 1_000_100))).to.equal(true)
    const tail = await request(serve.url, target, {headers: {Range: 'bytes=-10'}})
    expect(tail.status).to.equal(206)
    expect(tail.body.equals(content.subarray(size - 10))).to.equal(true)
    const open = await request(serve.url, target, {headers: {Range: `bytes=${size - 5}-`, 'If-Range': etag}})
    expect(open.status).to.equal(206)
    expect(open.body.equals(content.subarray(size - 5))).to.equal(true)
    // A resume against another version must not get a slice of this one.
    const changed = await request(serve.url, target, {headers: {Range: 'bytes=5-', 'If-Range': `"${'0'.repeat(64)}"`}})
    expect(changed.status).to.equal(200)
    expect(changed.body.equals(content)).to.equal(true)
    const past = await request(serve.url, target, {headers: {Range: `bytes=${size}-`}})
    expect(past.status).to.equal(416)
    expect(past.headers['content-range']).to.equal(`bytes */${size}`)
    expect(past.body.length).to.equal(0)
    // An empty file has no range to cut: the whole (empty) file, so a slicing proxy passes it on.
    const empty = await request(serve.url, downloadTarget(MODEL, 'empty.txt'), {headers: {Range: 'bytes=0-8388607'}})
    expect(empty.status).to.equal(200)
    expect(empty.headers['content-length']).to.equal('0')
    const head = await request(serve.url, target, {method: 'HEAD'})
    expect(head.status).to.equal(200)
    expect(head.headers['content-length']).to.equal(String(size))
    expect(head.headers['accept-ranges']).to.equal('bytes')
    expect(head.headers.etag).to.equal(etag)
    expect(head.body.length).to.equal(0)
    const headRange = await request(serve.url, target, {method: 'HEAD', headers: {Range: 'bytes=0-9'}})
    expect(headRange.status).to.equal(206)
    expect(headRange.headers['content-range']).to.equal(`bytes 0-9/${size}`)
    const cached = await request(serve.url, target, {headers: {'If-None-Match': etag}})
    expect(cached.status).to.equal(304)
    expect(cached.body.length).to.equal(0)
    expect((await request(serve.url, target, {method: 'POST'})).status).to.equal(405)
  })

  it('unknown models, revisions and files: 404 in the hub\'s JSON envelope', async () => {
    for (const target of [`/api/v1/models/acme/nope`, `/api/v1/models/acme/nope/revisions`, `/api/v1/models/acme/nope/repo/files?Revision=master&Recursive=True`, downloadTarget('acme/nope', 'config.json'),
      `/api/v1/models/${MODEL}/repo/files?Revision=v9&Recursive=True`, downloadTarget(MODEL, 'config.json', 'v9'), downloadTarget(MODEL, 'missing.bin'), '/api/v1/datasets/acme/x']) {
      const r = await request(serve.url, target)
      expect(r.status, target).to.equal(404)
      expect(r.headers['content-type']).to.match(/^application\/json/)
      const e = envelopeOf(r)
      expect(e, target).to.include({Code: 404, Success: false, Data: null})
      expect(e.Message).to.be.a('string').and.not.equal('')
    }
    // ms-resume pull reads it as "not found" (exit 5, E_NOT_FOUND).
    const res = await runCli(['pull', 'acme/nope', '--endpoint', serve.url, '--local-dir', path.join(home, 'nope'), '--json'], {env: testEnv(home)})
    expect(res.code).to.equal(5)
    expect(res.stdout).to.contain('"code":"E_NOT_FOUND"')
  })

  it('traversal in the model id or FilePath never reaches a file outside the model directory', async () => {
    const secret = `top secret ${crypto.randomUUID()}`
    await fs.writeFile(path.join(home, 'cache', 'models', 'secret.txt'), secret)
    await fs.writeFile(path.join(home, 'cache', 'models', 'acme', 'secret.txt'), secret)
    const targets = [
      `/api/v1/models/acme/../secret.txt`,
      `/api/v1/models/acme/%2e%2e/repo?Revision=master&FilePath=secret.txt`,
      `/api/v1/models/..%2Facme/x/repo?Revision=master&FilePath=secret.txt`,
      `/api/v1/models/acme/mirror.model-v1.5/../../secret.txt`,
      `/api/v1/models/acme/mirror.model-v1.5%2F..%2F..%2F/repo?FilePath=secret.txt`,
      `/api/v1/models/acme/mirror.model-v1.5%00/repo?FilePath=config.json`,
      `/api/v1/models/acme%5C..%5C/x/repo?FilePath=secret.txt`,
      ...['../secret.txt', '../../secret.txt', '%2e%2e/secret.txt', 'weights/../../secret.txt', '/etc/passwd', path.join(home, 'cache', 'models', 'secret.txt'),
        '..\\secret.txt', 'config.json\u0000.txt', './config.json', 'weights//x', '%252e%252e%252fsecret.txt'].map((p) => downloadTarget(MODEL, p)),
      `/api/v1/models/${MODEL}/repo?Revision=master&FilePath=%2e%2e%2fsecret.txt`,
      `/api/v1/models/${MODEL}/repo?Revision=master&FilePath=..%5csecret.txt`,
    ]
    for (const t of targets) {
      const r = await request(serve.url, t)
      expect([400, 404], t).to.include(r.status)
      expect(r.body.toString('latin1'), t).not.to.contain('top secret')
      expect(envelopeOf(r).Success, t).to.equal(false)
    }
  })

  it('a listed file that is a symlink out of the model directory is neither listed nor served', async () => {
    const secret = `linked secret ${crypto.randomUUID()}`
    const outside = path.join(home, 'outside.txt')
    await fs.writeFile(outside, secret)
    await fs.symlink(outside, path.join(modelDir(), 'link.txt'))
    const doc = (await readJournal(modelDir()))!
    doc.files['link.txt'] = {...doc.files['config.json'], path: 'link.txt', size: secret.length, sha256: sha256(Buffer.from(secret)), chunks: [doc.files['config.json'].chunks[0]]}
    await writeJournal(modelDir(), doc)
    try {
      const listing = envelopeOf(await request(serve.url, `/api/v1/models/${MODEL}/repo/files?Revision=master&Recursive=True`))
      expect(listing.Data.Files.map((f: {Path: string}) => f.Path)).not.to.include('link.txt')
      const r = await request(serve.url, downloadTarget(MODEL, 'link.txt'))
      expect(r.status).to.equal(404)
      expect(r.body.toString()).not.to.contain('linked secret')
    } finally {
      delete doc.files['link.txt']
      await writeJournal(modelDir(), doc)
      await fs.rm(path.join(modelDir(), 'link.txt'))
    }
  })

  it('state files are never served: ms-resume\'s journal, manifest, partials; the official .msc/.mdl/.mv; ._____temp', async () => {
    const journalText = await fs.readFile(statePaths(modelDir()).journal, 'utf8')
    expect(journalText.length).to.be.greaterThan(0)
    for (const f of ['.msc', '.mdl', '.mv']) expect((await fs.stat(path.join(modelDir(), f))).isFile(), f).to.equal(true)
    await fs.mkdir(path.join(modelDir(), '._____temp'), {recursive: true})
    await fs.writeFile(path.join(modelDir(), '._____temp', 'x.bin'), 'temp')
    // Even a hostile journal that calls a state file a complete model file changes nothing.
    const doc = (await readJournal(modelDir()))!
    const msc = await fs.readFile(path.join(modelDir(), '.msc'))
    doc.files['.msc'] = {...doc.files['config.json'], path: '.msc', size: msc.length, sha256: sha256(msc), chunks: [doc.files['config.json'].chunks[0]]}
    await writeJournal(modelDir(), doc)
    try {
      for (const p of ['.ms-resume/journal-v1.json', '.ms-resume/manifest-v1.json', '.MS-RESUME/journal-v1.json', '.ms-resume/lock', '.msc', '.mdl', '.mv', '._____temp/x.bin', '.ms-resume/partial-v1/x']) {
        const r = await request(serve.url, downloadTarget(MODEL, p))
        expect(r.status, p).to.equal(400)
        expect(envelopeOf(r), p).to.include({Code: 400, Success: false, Data: null})
        expect(r.body.toString(), p).not.to.contain('"kind"')
      }
      const listing = envelopeOf(await request(serve.url, `/api/v1/models/${MODEL}/repo/files?Revision=master&Recursive=True`))
      expect(listing.Data.Files.map((f: {Path: string}) => f.Path).filter((p: string) => p.startsWith('.'))).to.deep.equal([])
    } finally {
      delete doc.files['.msc']
      await writeJournal(modelDir(), doc)
    }
  })

  it('unverified files (a pull killed mid-file) are not listed and not served; verified ones of that model are', async () => {
    emu.setDefaultFault('acme/half', 'big.bin', {kind: 'trickle', bytesPerSec: 2 * MiB})
    const halfDir = path.join(home, 'cache', 'models', 'acme', 'half')
    const doc = await pullAndKillWhen(['pull', 'acme/half', '--endpoint', emu.url], testEnv(home), halfDir,
      (d) => d.files['small.json']?.status === 'complete' && durablePrefixBytes(d.files['big.bin']) > 0)
    emu.clearFaults()
    expect(doc.files['big.bin'].status).not.to.equal('complete')
    expect((await fs.readdir(statePaths(halfDir).partials)).length, 'a partial exists').to.be.greaterThan(0)
    const listing = envelopeOf(await request(serve.url, '/api/v1/models/acme/half/repo/files?Revision=master&Recursive=True'))
    expect(listing.Data.Files.map((f: {Path: string}) => f.Path)).to.deep.equal(['small.json'])
    expect((await request(serve.url, downloadTarget('acme/half', 'big.bin'))).status).to.equal(404)
    const small = await request(serve.url, downloadTarget('acme/half', 'small.json'))
    expect(small.status).to.equal(200)
    expect(small.body.toString()).to.equal('{}\n')
  })

  it('a client that stops reading holds no memory and is dropped after --timeout', async () => {
    const streamHome = await makeTmpDir()
    let slow: ServeRun | undefined
    try {
      // 1 GiB (sparse): far more than loopback's socket buffers (up to 32 MiB here) can swallow.
      const size = 1024 * MiB
      const dir = path.join(streamHome, 'cache', 'models', 'acme', 'stream')
      await fs.mkdir(statePaths(dir).dir, {recursive: true})
      await fs.truncate(await fs.open(path.join(dir, 'huge.bin'), 'w').then(async (h) => {
        await h.close()
        return path.join(dir, 'huge.bin')
      }), size)
      const now = new Date().toISOString()
      // The journal's word that it is verified (serve trusts it; this test is about the socket).
      await writeJournal(dir, {kind: 'ms-resume/journal', version: 1, hub: 'modelscope', endpoint: emu.url, modelId: 'acme/stream', revision: 'master', createdAt: now, updatedAt: now, files: {
        'huge.bin': {path: 'huge.bin', size, sha256: '5'.repeat(64), commit: '', status: 'complete', chunkSizeBytes: MiB, chunks: Array.from({length: size / MiB}, () => '0'.repeat(16)), integrityFailures: 0},
      }})
      slow = await startServe(['--timeout', '1'], testEnv(streamHome))
      const rssBefore = await rssBytes(slow.run.child.pid!)
      const socket = await connect(slow.url)
      socket.pause()
      socket.write(`GET ${downloadTarget('acme/stream', 'huge.bin')} HTTP/1.1\r\nHost: x\r\n\r\n`)
      const line = await slow.run.waitForEvent((e) => e.type === 'access' && e.path === 'huge.bin')
      expect(line.complete).to.equal(false)
      expect(line.status).to.equal(200)
      expect(Number(line.bytes)).to.be.greaterThan(0).and.lessThan(size)
      // What the server read ahead for the stalled client: its two read buffers, not the file.
      expect(await rssBytes(slow.run.child.pid!) - rssBefore).to.be.lessThan(48 * MiB)
      // The client sees the end of the connection once it reads what the kernels buffered.
      let received = 0
      socket.on('data', (d: Buffer) => (received += d.length))
      const closed = new Promise<void>((resolve) => socket.on('close', () => resolve()))
      socket.resume()
      await closed
      expect(received).to.be.lessThan(size)
    } finally {
      await stopServe(slow)
      await fs.rm(streamHome, {recursive: true, force: true})
    }
  })

  it('connections beyond --max-connections are refused, with a warning', async () => {
    const capped = await startServe(['--max-connections', '2'], testEnv(home))
    try {
      const held = [await connect(capped.url), await connect(capped.url)]
      await waitUntil(async () => (await request(capped.url, `/api/v1/models/${MODEL}`).then(() => false, () => true)), 'a third connection to be refused', 10_000)
      const warning = await capped.run.waitForEvent((e) => e.type === 'warning')
      expect(String(warning.message)).to.contain('--max-connections')
      for (const s of held) s.destroy()
      await waitUntil(async () => (await request(capped.url, `/api/v1/models/${MODEL}`).then((r) => r.status === 200, () => false)), 'a connection once the others closed', 10_000)
    } finally {
      await stopServe(capped)
    }
  })

  describe('with --token-file', () => {
    let guarded: ServeRun
    const TOKEN = 'tok-0123456789abcdef'
    before(async () => {
      await fs.writeFile(path.join(home, 'token'), `${TOKEN}\n`)
      guarded = await startServe(['--token-file', path.join(home, 'token')], testEnv(home))
    })
    after(() => stopServe(guarded))

    it('requests without the token get 401 in the envelope; the cookie or a Bearer header pass', async () => {
      const target = `/api/v1/models/${MODEL}/repo/files?Revision=master&Recursive=True`
      for (const headers of [{}, {Cookie: 'm_session_id=wrong'}, {Authorization: 'Bearer wrong'}, {Authorization: `Basic ${Buffer.from(`x:${TOKEN}`).toString('base64')}`}, {Cookie: `session=${TOKEN}`}] as Array<Record<string, string>>) {
        const r = await request(guarded.url, target, {headers})
        expect(r.status, JSON.stringify(headers)).to.equal(401)
        expect(envelopeOf(r)).to.include({Code: 401, Success: false})
      }
      expect((await request(guarded.url, downloadTarget(MODEL, 'config.json'))).status).to.equal(401)
      expect((await request(guarded.url, target, {headers: {Cookie: `a=b; m_session_id=${TOKEN}`}})).status).to.equal(200)
      expect((await request(guarded.url, target, {headers: {Authorization: `Bearer ${TOKEN}`}})).status).to.equal(200)
    })

    it('ms-resume pull with --token downloads; without it fails with E_AUTH (exit 5)', async () => {
      const denied = await runCli(['pull', MODEL, '--endpoint', guarded.url, '--local-dir', path.join(home, 'denied'), '--json'], {env: testEnv(home)})
      expect(denied.code).to.equal(5)
      expect(denied.stdout).to.contain('"code":"E_AUTH"')
      const out = path.join(home, 'with-token')
      const ok = await runCli(['pull', MODEL, '--endpoint', guarded.url, '--local-dir', out, '--token', TOKEN], {env: testEnv(home)})
      expect(ok.code, ok.stderr).to.equal(0)
      expect((await fs.readFile(path.join(out, ...BIG.split('/')))).equals(emu.contentOf(MODEL, BIG))).to.equal(true)
    })
  })

  it('binding beyond loopback without --token-file warns; a bad token file or an address not here is a usage error', async () => {
    // 192.0.2.1 (TEST-NET-1) is on no interface here: the bind fails after the warning, nothing listens.
    const exposed = await runCli(['serve', '--host', '192.0.2.1', '--port', '0'], {env: testEnv(home)})
    expect(exposed.stderr).to.contain('without --token-file')
    expect(exposed.code).to.equal(2)
    expect(exposed.stderr).to.match(/\[E_USAGE\]/)
    await fs.writeFile(path.join(home, 'token2'), 'x')
    const guarded = await runCli(['serve', '--host', '192.0.2.1', '--port', '0', '--token-file', path.join(home, 'token2')], {env: testEnv(home)})
    expect(guarded.stderr).not.to.contain('without --token-file')
    await fs.writeFile(path.join(home, 'bad-token'), 'two words\n')
    const bad = await runCli(['serve', '--port', '0', '--token-file', path.join(home, 'bad-token')], {env: testEnv(home)})
    expect(bad.code).to.equal(2)
    expect(bad.stderr).to.contain('one token on one line')
    const missing = await runCli(['serve', '--port', '0', '--token-file', path.join(home, 'no-such-file')], {env: testEnv(home)})
    expect(missing.code).to.equal(2)
    expect(missing.stderr).not.to.match(/\n\s+at /)
  })
})

describe('serve --upstream: pull-through', function () {
  this.timeout(180_000)
  const REMOTE = 'acme/remote'
  const REMOTE_FILES: EmulatorFileSpec[] = [
    {path: 'config.json', content: '{"a": 1}\n'},
    {path: 'model.safetensors', size: 6 * MiB + 7},
    {path: 'weights/[1].bin', size: 10_000},
  ]
  let up: HubEmulator
  let home: string
  let serve: ServeRun | undefined

  beforeEach(async () => {
    up = await HubEmulator.start({models: [{id: REMOTE, files: REMOTE_FILES}, {id: 'acme/slow', files: [{path: 'big.bin', size: 24 * MiB}]}]})
    home = await makeTmpDir()
  })
  afterEach(async () => {
    await stopServe(serve)
    serve = undefined
    await up.stop()
    await fs.rm(home, {recursive: true, force: true})
  })

  it('two clients at once: each upstream file is fetched once, both get every byte, the cache keeps it verified', async () => {
    serve = await startServe(['--upstream', up.url], testEnv(home))
    // Slow upstream, so the second client asks while the first download is still running.
    up.setRateLimit(256 * 1024)
    const clientEnv = testEnv(await makeTmpDir())
    const a = startJsonCli(['pull', REMOTE, '--endpoint', serve.url, '--local-dir', path.join(home, 'a')], clientEnv)
    await a.waitForEvent((e) => e.type === 'file-start' && e.path === 'model.safetensors')
    const b = startJsonCli(['pull', REMOTE, '--endpoint', serve.url, '--local-dir', path.join(home, 'b')], clientEnv)
    await b.waitForEvent((e) => e.type === 'file-start' && e.path === 'model.safetensors')
    // Give b's request time to reach serve before the upstream speeds up.
    await new Promise((resolve) => setTimeout(resolve, 1500))
    up.setRateLimit(undefined)
    const [ra, rb] = await Promise.all([a.done, b.done])
    expect(ra.code, ra.stderr).to.equal(0)
    expect(rb.code, rb.stderr).to.equal(0)
    for (const dir of ['a', 'b']) {
      for (const f of REMOTE_FILES) expect((await fs.readFile(path.join(home, dir, ...f.path.split('/')))).equals(up.contentOf(REMOTE, f.path)), `${dir}/${f.path}`).to.equal(true)
    }
    for (const f of REMOTE_FILES) expect(up.contentRequests(REMOTE, f.path), f.path).to.have.length(1)
    const waited = serve.access().filter((e) => e.path === 'model.safetensors' && e.source === 'upstream')
    expect(waited, 'both clients waited for the one download').to.have.length(2)
    const pulls = serve.run.events.filter((e) => e.type === 'pull-through' && e.phase === 'start' && (e.paths as string[]).includes('model.safetensors'))
    expect(pulls).to.have.length(1)
    // In the cache as pull puts it, verified: a third client is served without asking upstream.
    const cached = path.join(home, 'cache', 'models', 'acme', 'remote', 'model.safetensors')
    expect((await fs.readFile(cached)).equals(up.contentOf(REMOTE, 'model.safetensors'))).to.equal(true)
    const seen = up.log.length
    const c = await runCli(['pull', REMOTE, '--endpoint', serve.url, '--local-dir', path.join(home, 'c')], {env: clientEnv})
    expect(c.code, c.stderr).to.equal(0)
    expect(up.log.filter((e) => e.content).length).to.equal(up.log.slice(0, seen).filter((e) => e.content).length)
  })

  it('a file upstream does not have is 404; upstream auth trouble is 502, not the client\'s 401', async () => {
    serve = await startServe(['--upstream', up.url], testEnv(home))
    expect((await request(serve.url, downloadTarget(REMOTE, 'nope.bin'))).status).to.equal(404)
    expect((await request(serve.url, '/api/v1/models/acme/absent')).status).to.equal(404)
    expect((await request(serve.url, '/api/v1/models/acme/absent/repo/files?Revision=master&Recursive=True')).status).to.equal(404)
    up.setToken('upstream-secret')
    const r = await request(serve.url, downloadTarget('acme/slow', 'big.bin'))
    expect(r.status).to.equal(502)
    expect(envelopeOf(r).Message).to.contain('E_AUTH')
  })

  it('upstream gone: cached files are still served; a file only upstream has is 502 naming the network error', async () => {
    serve = await startServe(['--upstream', up.url], testEnv(home))
    const first = await request(serve.url, downloadTarget(REMOTE, 'config.json'))
    expect(first.status).to.equal(200)
    expect((await serve.run.waitForEvent((e) => e.type === 'access' && e.path === 'config.json')).source).to.equal('upstream')
    await up.stop()
    const again = await request(serve.url, downloadTarget(REMOTE, 'config.json'))
    expect(again.status).to.equal(200)
    expect(again.body.equals(up.contentOf(REMOTE, 'config.json'))).to.equal(true)
    const missing = await request(serve.url, downloadTarget(REMOTE, 'model.safetensors'))
    expect(missing.status).to.equal(502)
    expect(envelopeOf(missing).Message).to.match(/E_NETWORK|E_TIMEOUT/)
  })

  it('SIGTERM: stops, the upstream pull checkpoints, exit 0; the next serve resumes it from the checkpoint', async () => {
    serve = await startServe(['--upstream', up.url], testEnv(home))
    up.setRateLimit(2 * MiB)
    const client = startJsonCli(['pull', 'acme/slow', '--endpoint', serve.url, '--local-dir', path.join(home, 'out')], testEnv(await makeTmpDir()))
    const dir = path.join(home, 'cache', 'models', 'acme', 'slow')
    await waitUntil(async () => durablePrefixBytes((await readJournal(dir))?.files['big.bin']) > 0, 'a checkpoint of the upstream pull')
    serve.run.child.kill('SIGTERM')
    const exit = await serve.run.done
    expect(exit.code, exit.stderr).to.equal(0)
    expect(serve.run.events.some((e) => e.type === 'pull-through' && e.phase === 'failed' && e.code === 'E_INTERRUPTED')).to.equal(true)
    expect(serve.run.events.at(-1)).to.include({type: 'stopped', reason: 'SIGTERM'})
    await client.kill('SIGKILL')
    const record = (await readJournal(dir))!.files['big.bin']
    expect(record.status).not.to.equal('complete')
    const kept = durablePrefixBytes(record)
    expect(kept).to.be.greaterThan(0)
    up.setRateLimit(undefined)
    serve = await startServe(['--upstream', up.url], testEnv(home))
    const out = path.join(home, 'out2')
    const res = await runCli(['pull', 'acme/slow', '--endpoint', serve.url, '--local-dir', out], {env: testEnv(await makeTmpDir())})
    expect(res.code, res.stderr).to.equal(0)
    expect((await fs.readFile(path.join(out, 'big.bin'))).equals(up.contentOf('acme/slow', 'big.bin'))).to.equal(true)
    const fetches = up.contentRequests('acme/slow', 'big.bin')
    expect(fetches.at(-1)!.rangeStart, 'resumed, not restarted').to.be.at.least(kept)
  })
})
