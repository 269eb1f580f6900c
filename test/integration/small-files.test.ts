import {createHash} from 'node:crypto'
import fs from 'node:fs/promises'
import path from 'node:path'

import {expect} from 'chai'
import xxhash from 'xxhash-wasm'

import {type EmulatorFileSpec, HubEmulator} from '../support/emulator.js'
import {exists, makeTmpDir, runCli, testEnv} from '../support/cli.js'
import {journalClaimsProblems} from '../support/journal-check.js'
import {readJournal, startJsonCli, strayTempFiles, waitUntil} from '../support/process.js'
import {statePaths} from '../support/state-paths.js'
import {TRANSPORTS, transport} from '../support/tls.js'

const MODEL = 'acme/smallfiles'
const KiB = 1024
/** src/pull/small-file.ts SMALL_FILE_MAX_BYTES: files up to it take the one-request path. */
const SMALL_MAX = 256 * KiB

/** Sizes at the edges of the small-file path, and a few over it (the resumable path). */
function files(): EmulatorFileSpec[] {
  const sizes = [0, 1, 17, 4096, 4097, 65_536, SMALL_MAX - 1, SMALL_MAX, SMALL_MAX + 1, 300 * KiB]
  return [
    ...sizes.map((size, i) => ({path: `edge/f${i}-${size}.bin`, size})),
    ...Array.from({length: 60}, (_, i) => ({path: `shards/d${i % 6}/s${i}.bin`, size: 100 + i * 211})),
    {path: 'config.json', content: '{"small": true}\n'},
  ]
}

/**
 * Small files take one request, a hash in memory and one write (src/pull/small-file.ts): byte-exact
 * over HTTP and TLS, recorded in the journal with the chunk sums a manifest needs, only after the
 * bytes and the rename are durable; a kill leaves nothing unverified and the next run fetches
 * nothing twice that was recorded; anything odd hands the file to the resumable path.
 */
describe('small files: one request, verified in memory, written whole', function () {
  this.timeout(120_000)
  let emu: HubEmulator
  let home: string
  let dir: string
  afterEach(async () => {
    await emu?.stop()
    await fs.rm(home, {recursive: true, force: true})
  })

  const start = async (opts: {tls?: {key: string; cert: string}; rate?: number; specs?: EmulatorFileSpec[]} = {}) => {
    emu = await HubEmulator.start({models: [{id: MODEL, files: opts.specs ?? files()}], tls: opts.tls, rateLimitBytesPerSec: opts.rate})
    home = await makeTmpDir()
    dir = path.join(home, 'out')
  }
  const args = (...extra: string[]) => ['pull', MODEL, '--endpoint', emu.url, '--local-dir', dir, ...(extra.includes('--concurrency') ? [] : ['--concurrency', '8']), ...extra]
  const expectExact = async (specs = files()) => {
    for (const f of specs) expect((await fs.readFile(path.join(dir, f.path))).equals(emu.contentOf(MODEL, f.path)), `${f.path} byte-exact`).to.equal(true)
  }

  for (const kind of TRANSPORTS) {
    it(`${kind}: byte-exact; one ranged request per small file, none for an empty one; journal and manifest carry their chunk sums`, async () => {
      const t = transport(kind)
      await start({tls: t.tls})
      const res = await runCli(args('--json'), {env: testEnv(home, t.env)})
      expect(res.code, res.stderr).to.equal(0)
      await expectExact()
      const {h64Raw} = await xxhash()
      const journal = (await readJournal(dir))!
      const manifest = JSON.parse(await fs.readFile(statePaths(dir).manifest, 'utf8')) as {files: Array<{path: string; xxh64: string[]}>}
      for (const f of files()) {
        const size = emu.sizeOf(MODEL, f.path)
        const requests = emu.contentRequests(MODEL, f.path)
        if (size === 0) expect(requests, f.path).to.have.length(0)
        else if (size <= SMALL_MAX) {
          // The server saw one request for the whole file, from byte 0, as the official client asks.
          expect(requests.map((r) => r.range), f.path).to.deep.equal([`bytes=0-${size - 1}`])
        }
        const sums = size === 0 ? [] : [h64Raw(emu.contentOf(MODEL, f.path)).toString(16).padStart(16, '0')]
        const record = journal.files[f.path]
        expect(record?.status, f.path).to.equal('complete')
        if (size <= SMALL_MAX) expect(record.chunks, f.path).to.deep.equal(sums)
        expect(manifest.files.find((m) => m.path === f.path)?.xxh64, f.path).to.deep.equal(record.chunks)
      }
      const events = res.stdout.trim().split('\n').map((l) => JSON.parse(l) as {type: string; path?: string; downloadedBytes?: number})
      const done = events.filter((e) => e.type === 'file-done')
      expect(done.map((e) => e.path).sort()).to.deep.equal(files().map((f) => f.path).sort())
      expect(done.find((e) => e.path === 'config.json')?.downloadedBytes).to.equal(16)
      expect(await fs.readdir(statePaths(dir).partials)).to.deep.equal([])
    })
  }

  it('hundreds of small files over two kept-alive connections: --quiet prints nothing (no listener piles up on a reused connection)', async () => {
    const specs = Array.from({length: 200}, (_, i) => ({path: `q/f${i}.bin`, size: 500 + i}))
    await start({specs})
    const res = await runCli(args('--concurrency', '2', '--quiet'), {env: testEnv(home)})
    expect(res.code, res.stderr).to.equal(0)
    expect(res.stderr).to.equal('')
    expect(res.stdout).to.equal('')
    await expectExact(specs)
  })

  it('a SIGKILL mid-pull leaves nothing unverified; the next run fetches none of what the journal recorded, nor what is in place', async () => {
    const specs = Array.from({length: 120}, (_, i) => ({path: `many/d${i % 4}/f${i}.bin`, size: 20_000 + i}))
    // 100 KiB/s per connection: 120 files take about 6 s on 4 connections, the kill lands mid-run.
    await start({rate: 100 * KiB, specs})
    const run = startJsonCli(args('--concurrency', '4'), testEnv(home))
    await waitUntil(async () => run.events.filter((e) => e.type === 'file-done').length >= 30 || run.exited, 'some files done', 60_000, 10)
    const killed = await run.kill('SIGKILL')
    expect(killed.signal, `killed mid-run: ${killed.stdout.slice(-500)}`).to.equal('SIGKILL')
    // Whatever is at a final path is the verified file; whatever the journal calls complete is there.
    for (const f of specs) if (await exists(path.join(dir, f.path))) expect((await fs.readFile(path.join(dir, f.path))).equals(emu.contentOf(MODEL, f.path)), f.path).to.equal(true)
    expect((await journalClaimsProblems(dir)).problems).to.deep.equal([])
    const recorded = Object.values((await readJournal(dir))?.files ?? {}).filter((r) => r.status === 'complete').map((r) => r.path)
    const inPlace = []
    for (const f of specs) if (await exists(path.join(dir, f.path))) inPlace.push(f.path)
    expect(recorded.length, 'the journal recorded files before the kill').to.be.greaterThan(0)
    expect(inPlace.length, 'and some are not all').to.be.lessThan(specs.length)

    emu.setRateLimit(undefined)
    const logFrom = emu.log.length
    const res = await runCli(args(), {env: testEnv(home)})
    expect(res.code, res.stderr).to.equal(0)
    await expectExact(specs)
    const fetchedAgain = new Set(emu.log.slice(logFrom).filter((e) => e.content).map((e) => e.path))
    for (const p of inPlace) expect(fetchedAgain.has(p), `${p} was in place (verified or adopted by hash), not fetched again`).to.equal(false)
    expect(await strayTempFiles(statePaths(dir).dir)).to.deep.equal([])
    expect(await fs.readdir(statePaths(dir).partials)).to.deep.equal([])
  })

  it('killed before the rename: the verified partial is left; the next run finishes the file through the resumable path', async () => {
    const specs = [{path: 'a/one.json', content: '{"one": 1}\n'}]
    await start({specs})
    const crashed = await runCli(args(), {env: testEnv(home, {MS_RESUME_CRASH_AT: 'before-finalize-rename'})})
    expect(crashed.signal).to.equal('SIGKILL')
    expect(await exists(path.join(dir, 'a/one.json')), 'nothing at the final path').to.equal(false)
    expect(await fs.readdir(statePaths(dir).partials), 'the partial, whole and synced').to.have.length(1)
    const res = await runCli(args(), {env: testEnv(home)})
    expect(res.code, res.stderr).to.equal(0)
    await expectExact(specs)
    expect(await fs.readdir(statePaths(dir).partials)).to.deep.equal([])
  })

  const odd: Array<[string, EmulatorFileSpec['faults']]> = [
    ['a 503 first', [{kind: 'status', status: 503}]],
    ['a reset mid-body first', [{kind: 'reset', afterBytes: 1000}]],
    ['corrupt bytes first (the hash in memory fails)', [{kind: 'corrupt', offsets: [10, 4000]}]],
    ['a gzip-encoded range first', [{kind: 'gzip'}]],
    ['a 206 at the wrong offset first', [{kind: 'wrongRangeStart', delta: 5}]],
  ]
  for (const [name, faults] of odd) {
    it(`${name}: the resumable path takes over; byte-exact, nothing unverified ever at the final path`, async () => {
      const specs = [{path: 'odd.bin', size: 6000, faults}, {path: 'fine.bin', size: 5000}]
      await start({specs})
      const res = await runCli(args('--json'), {env: testEnv(home)})
      expect(res.code, res.stderr).to.equal(0)
      await expectExact(specs)
      expect(emu.contentRequests(MODEL, 'odd.bin').length, 'tried again after the odd reply').to.be.at.least(2)
      expect(emu.contentRequests(MODEL, 'fine.bin')).to.have.length(1)
      expect(res.stdout).not.to.contain('"integrity-retry"')
    })
  }

  it('a file the hub keeps serving wrong: the resumable path gives up with E_INTEGRITY (exit 4); nothing at the final path', async () => {
    const specs = [{path: 'bad.bin', size: 3000, listedSha256: 'f'.repeat(64)}]
    await start({specs})
    const res = await runCli(args('--json'), {env: testEnv(home)})
    expect(res.code, res.stderr).to.equal(4)
    expect(res.stdout).to.contain('"code":"E_INTEGRITY"')
    expect(await exists(path.join(dir, 'bad.bin'))).to.equal(false)
  })

  it('a directory where a small file belongs: exit 6 [E_LOCAL] naming it, the directory untouched; the verified bytes are kept and placed, without a request, once it is gone', async () => {
    const specs = [{path: 'taken/x.json', content: '{}\n'}]
    await start({specs})
    await fs.mkdir(path.join(dir, 'taken', 'x.json', 'inside'), {recursive: true})
    await fs.writeFile(path.join(dir, 'taken', 'x.json', 'inside', 'keep.txt'), 'keep')
    const res = await runCli(args('--json'), {env: testEnv(home)})
    expect(res.code, res.stderr).to.equal(6)
    expect(res.stdout).to.contain('"code":"E_LOCAL"')
    expect(res.stdout).to.contain('is a directory')
    expect(await fs.readFile(path.join(dir, 'taken', 'x.json', 'inside', 'keep.txt'), 'utf8')).to.equal('keep')
    expect(await fs.readdir(statePaths(dir).partials), 'the verified download is kept').to.have.length(1)
    expect((await journalClaimsProblems(dir)).problems).to.deep.equal([])
    await fs.rm(path.join(dir, 'taken', 'x.json'), {recursive: true})
    emu.clearLog()
    const again = await runCli(args(), {env: testEnv(home)})
    expect(again.code, again.stderr).to.equal(0)
    await expectExact(specs)
    expect(emu.contentRequests(MODEL), 'placed from the kept partial').to.have.length(0)
  })

  it('a 503 with Retry-After on the one try: reported as a retry and waited for, then the resumable path succeeds', async () => {
    const specs = [{path: 'busy.json', size: 3000, faults: [{kind: 'status' as const, status: 503, headers: {'Retry-After': '1'}}]}]
    await start({specs})
    const res = await runCli(args('--json'), {env: testEnv(home)})
    expect(res.code, res.stderr).to.equal(0)
    await expectExact(specs)
    const reqs = emu.contentRequests(MODEL, 'busy.json')
    expect(reqs.map((r) => r.status)).to.deep.equal([503, 206])
    expect(reqs[1].t - reqs[0].t, 'Retry-After honoured').to.be.at.least(950)
    const retries = res.stdout.trim().split('\n').map((l) => JSON.parse(l) as {type: string; code?: string; delayMs?: number}).filter((e) => e.type === 'retry')
    expect(retries).to.have.length(1)
    expect(retries[0].delayMs).to.be.at.least(1000)
  })

  it('a 404 on the one try is what the resumable path would report: exit 5 [E_NOT_FOUND], one request', async () => {
    const specs = [{path: 'gone.json', size: 3000, faults: [{kind: 'status' as const, status: 404}]}]
    await start({specs})
    const res = await runCli(args('--json'), {env: testEnv(home)})
    expect(res.code, res.stderr).to.equal(5)
    expect(res.stdout).to.contain('"code":"E_NOT_FOUND"')
    expect(emu.contentRequests(MODEL, 'gone.json')).to.have.length(1)
  })

  it('a correct file already at its final path is adopted by hash, not fetched; a wrong one is replaced', async () => {
    const specs = [{path: 'have/right.bin', size: 9000}, {path: 'have/wrong.bin', size: 9000}]
    await start({specs})
    await fs.mkdir(path.join(dir, 'have'), {recursive: true})
    await fs.writeFile(path.join(dir, 'have/right.bin'), emu.contentOf(MODEL, 'have/right.bin'))
    await fs.writeFile(path.join(dir, 'have/wrong.bin'), Buffer.alloc(9000, 1))
    const res = await runCli(args(), {env: testEnv(home)})
    expect(res.code, res.stderr).to.equal(0)
    await expectExact(specs)
    expect(emu.contentRequests(MODEL, 'have/right.bin')).to.have.length(0)
    expect(emu.contentRequests(MODEL, 'have/wrong.bin')).to.have.length(1)
    expect(createHash('sha256').update(await fs.readFile(path.join(dir, 'have/wrong.bin'))).digest('hex')).to.equal(emu.sha256Of(MODEL, 'have/wrong.bin'))
  })
})
