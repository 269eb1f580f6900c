import fs from 'node:fs/promises'
import path from 'node:path'

import {expect} from 'chai'

import {DEFAULT_RETRY_POLICY} from '../../src/transfer/retry-policy.js'
import {type EmulatorFileSpec, type Fault, HubEmulator, type HubEmulatorOptions, type LogEntry} from '../support/emulator.js'
import {type CliResult, exists, makeTmpDir, runCli, startCli, testEnv} from '../support/cli.js'
import {journalClaimsProblems} from '../support/journal-check.js'
import {TRANSPORTS, transport} from '../support/tls.js'
import {statePaths} from '../support/state-paths.js'

const MODEL = 'acme/transport'
const MiB = 1024 * 1024
const BIG = 'model.safetensors'
/** 3 MiB + a tail: 4 chunks, the last one short. */
const SIZE = 3 * MiB + 4321
/** A reset after 1.5 MiB: every byte that arrived is kept, so every resume below starts at RESUME_AT. */
const CUT: Fault = {kind: 'reset', afterBytes: 1.5 * MiB}
/** The exact next byte after CUT (issue 16: not the last whole chunk). */
const RESUME_AT = 1.5 * MiB
/** Same bound as src/pull/file-job.ts (MAX_REMOTE_CHANGES): listings re-read before giving up. */
const MAX_REMOTE_CHANGES = 2

type JsonEvent = {type: string; [k: string]: unknown}

function eventsOf(res: CliResult): JsonEvent[] {
  return res.stdout.split('\n').filter((l) => l.startsWith('{')).map((l) => JSON.parse(l) as JsonEvent)
}

/**
 * The transport rows of fault-matrix.md, one fault-scripted file per test. Every success asserts the
 * file byte-exact at its final path; every failure asserts nothing reached it. Run twice: with the
 * bodies read through undici (small files; axios carries only the hub API), and through the raw
 * reader (large files, forced here with MS_RESUME_HTTP=raw so that the same faults hit it).
 */
for (const kind of TRANSPORTS) describe(`pull under transport faults over ${kind} (fault-matrix.md: Transport)`, function () {
  this.timeout(120_000)
  let emu: HubEmulator | undefined
  let home: string
  const t = transport(kind)
  beforeEach(async () => {
    home = await makeTmpDir()
  })
  afterEach(async () => {
    await emu?.stop()
    emu = undefined
    await fs.rm(home, {recursive: true, force: true})
  })

  async function startEmu(files: EmulatorFileSpec[] = [{path: BIG, size: SIZE}], opts: HubEmulatorOptions = {}): Promise<HubEmulator> {
    emu = await HubEmulator.start({models: [{id: MODEL, files}], tls: t.tls, ...opts})
    return emu
  }

  async function pull(args: string[] = [], dirName = 'out') {
    const dir = path.join(home, dirName)
    const started = Date.now()
    const res = await runCli(['pull', MODEL, '--endpoint', emu!.url, '--local-dir', dir, '--json', ...args], {env: testEnv(home, t.env)})
    return {res, dir, ms: Date.now() - started, events: eventsOf(res)}
  }

  /** Emulator + fault script for BIG + one pull. */
  async function pullWith(faults: Array<Fault | null>, args: string[] = [], opts: HubEmulatorOptions = {}) {
    await startEmu([{path: BIG, size: SIZE}], opts)
    emu!.setFaults(MODEL, BIG, faults)
    return pull(args)
  }

  async function expectExact(dir: string, p = BIG): Promise<void> {
    const data = await fs.readFile(path.join(dir, p))
    expect(data.length, `${p} size`).to.equal(emu!.sizeOf(MODEL, p))
    expect(data.equals(emu!.contentOf(MODEL, p)), `${p} byte-exact`).to.equal(true)
  }

  async function expectNothingFinal(dir: string, p = BIG): Promise<void> {
    expect(await exists(path.join(dir, p)), `${p} at its final path`).to.equal(false)
  }

  const content = () => emu!.contentRequests(MODEL, BIG)
  const listings = () => emu!.log.filter((e) => e.route === 'files')
  const errorCode = (events: JsonEvent[]) => events.find((e) => e.type === 'error')?.code
  const retries = (events: JsonEvent[]) => events.filter((e) => e.type === 'retry')

  /** A resume after CUT that was not thrown away: the last request continues from the exact next byte. */
  function expectResumedAfterCut(reqs: LogEntry[]): void {
    expect(reqs[0].rangeStart).to.equal(0)
    expect(reqs.at(-1)!.rangeStart, 'final request resumes from the exact next byte').to.equal(RESUME_AT)
    expect(reqs.at(-1)!.rangeEnd).to.equal(SIZE - 1)
  }

  it('connections are kept alive: no request asks the server to close', async () => {
    const {res, dir} = await pullWith([])
    expect(res.code, res.stderr).to.equal(0)
    await expectExact(dir)
    const reqs = emu!.log.filter((e) => e.route === 'download' || e.route === 'blob')
    expect(reqs.length).to.be.greaterThan(1)
    for (const r of reqs) expect(String(r.headers.connection ?? 'keep-alive').toLowerCase()).to.not.equal('close')
  })

  // ---- 206 start differs

  it('206 whose Content-Range start differs from the request: rejected, retried, never written at a wrong offset', async () => {
    const {res, dir, events} = await pullWith([CUT, {kind: 'wrongRangeStart', delta: -4096}, {kind: 'wrongRangeStart', delta: 4096}])
    expect(res.code, res.stderr).to.equal(0)
    await expectExact(dir)
    const reqs = content()
    expect(reqs).to.have.length(4)
    expect(reqs[1].fault).to.equal('wrongRangeStart')
    expect(reqs[2].fault).to.equal('wrongRangeStart')
    expectResumedAfterCut(reqs)
    // Bytes at a wrong offset would have surfaced as a SHA-256 mismatch.
    expect(events.filter((e) => e.type === 'integrity-retry')).to.have.length(0)
    expect(retries(events).map((e) => e.code)).to.deep.equal(['E_NETWORK', 'E_PROTOCOL', 'E_PROTOCOL'])
  })

  // ---- the remote file changed

  it('206 with another strong ETag on a resume (a mirror or CDN), listing unchanged: the partial is kept, the SHA-256 decides', async () => {
    const {res, dir, events} = await pullWith([CUT, {kind: 'changedEtag'}])
    expect(res.code, res.stderr).to.equal(0)
    await expectExact(dir)
    const reqs = content()
    expect(reqs.map((r) => r.rangeStart)).to.deep.equal([0, RESUME_AT])
    expect(reqs[1].fault).to.equal('changedEtag')
    // No If-Range: a stale validator would turn the resume into a full 200 from byte 0.
    for (const r of reqs) expect(r.headers['if-range']).to.equal(undefined)
    expect(listings(), 'the listing is read once more, to see that the file is the same').to.have.length(2)
    expect(events.filter((e) => e.type === 'remote-changed' || e.type === 'integrity-retry')).to.have.length(0)
  })

  for (const [name, fault] of [['/total differs from the listed size', {kind: 'wrongTotal'}]] as const) {
    it(`206 whose ${name} on a resume: partial dropped, listing re-read, restart from 0`, async () => {
      const {res, dir, events} = await pullWith([CUT, fault])
      expect(res.code, res.stderr).to.equal(0)
      await expectExact(dir)
      const reqs = content()
      expect(reqs.map((r) => r.rangeStart)).to.deep.equal([0, RESUME_AT, 0])
      expect(reqs[1].fault).to.equal(fault.kind)
      expect(listings(), 'a second files request').to.have.length(2)
      // The re-read listing comes between the rejected resume and the restart.
      expect(listings()[1].t).to.be.greaterThan(reqs[1].t).and.lessThan(reqs[2].t)
      expect(events.filter((e) => e.type === 'remote-changed')).to.have.length(1)
      if (fault.kind === 'changedEtag') expect(reqs[1].headers['if-range']).to.equal(emu!.etagOf(MODEL, BIG))
    })
  }

  it('the file changes on the hub between two runs (first run failed mid-file): the second run starts it over', async () => {
    const first = await pullWith([CUT], ['--retries', '0'])
    expect(first.res.code, first.res.stderr).to.equal(3)
    const {durablePrefix} = await journalClaimsProblems(first.dir)
    expect(durablePrefix[BIG], 'the first run left a durable partial').to.equal(RESUME_AT)
    const oldHead = emu!.rangeOf(MODEL, BIG, 0, MiB)
    emu!.mutateFile(MODEL, BIG)
    expect(emu!.rangeOf(MODEL, BIG, 0, MiB).equals(oldHead)).to.equal(false)
    emu!.clearFaults()
    emu!.clearLog()
    const second = await pull()
    expect(second.res.code, second.res.stderr).to.equal(0)
    await expectExact(second.dir) // against the emulator's current (new) content
    expect(content().map((r) => r.rangeStart)).to.deep.equal([0])
  })

  it('the file changes on the hub between two attempts of one run: detected on the resume, restarted against the new listing', async () => {
    let mutated = false
    await startEmu([{path: BIG, size: SIZE}], {
      onLog: (entry) => {
        if (!mutated && entry.content && entry.attempt === 0) {
          mutated = true
          emu!.mutateFile(MODEL, BIG)
        }
      },
    })
    emu!.setFaults(MODEL, BIG, [CUT])
    const {res, dir, events} = await pull()
    expect(res.code, res.stderr).to.equal(0)
    expect(mutated).to.equal(true)
    await expectExact(dir)
    const reqs = content()
    expect(reqs.map((r) => r.rangeStart)).to.deep.equal([0, RESUME_AT, 0])
    expect(listings()).to.have.length(2)
    expect(events.find((e) => e.type === 'file-done')?.sha256).to.equal(emu!.sha256Of(MODEL, BIG))
  })

  it('killed while re-listing after a remote change: the journal claims nothing of the dropped partial', async () => {
    // The new version is 1.5 GiB with a lazily computed Sha256: the re-listing takes seconds, a
    // window in which the partial is already gone. A kill there must leave a journal that agrees.
    let mutated = false
    await startEmu([{path: BIG, size: SIZE}], {
      onLog: (entry) => {
        if (!mutated && entry.content && entry.attempt === 0) {
          mutated = true
          emu!.mutateFile(MODEL, BIG, {size: 1536 * MiB})
        }
      },
    })
    emu!.setFaults(MODEL, BIG, [CUT])
    const dir = path.join(home, 'out')
    const child = startCli(['pull', MODEL, '--endpoint', emu!.url, '--local-dir', dir], {env: testEnv(home, t.env)})
    const exited = new Promise((resolve) => child.once('exit', resolve))
    const deadline = Date.now() + 20_000
    while (listings().length < 2 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 20))
    child.kill('SIGKILL')
    await exited
    expect(listings(), 'killed during the second listing').to.have.length(2)
    expect(listings()[1].status, 'the second listing was still being computed').to.equal(0)
    const {problems} = await journalClaimsProblems(dir)
    expect(problems).to.deep.equal([])
  })

  // ---- protocol errors: retried, then a clear failure

  const PROTOCOL_FAULTS: Array<[string, Fault]> = [
    ['malformed Content-Range', {kind: 'malformedContentRange'}],
    ['missing Content-Range', {kind: 'noContentRange'}],
    ['two Content-Length headers', {kind: 'duplicateContentLength'}],
    ['negative Content-Length', {kind: 'negativeContentLength'}],
    ['multipart reply (one part)', {kind: 'multipart'}],
    ['multipart reply (two parts)', {kind: 'multipart', parts: 2}],
  ]
  for (const [name, fault] of PROTOCOL_FAULTS) {
    it(`${name}: a protocol error, retried from the durable offset; when permanent, exit 3 [E_PROTOCOL] after the retry budget`, async () => {
      const once = await pullWith([CUT, fault])
      expect(once.res.code, once.res.stderr).to.equal(0)
      await expectExact(once.dir)
      const reqs = content()
      expect(reqs).to.have.length(3)
      expect(reqs[1].fault).to.equal(fault.kind)
      expectResumedAfterCut(reqs)
      expect(retries(once.events).at(-1)?.code).to.equal('E_PROTOCOL')

      emu!.clearLog()
      emu!.setDefaultFault(MODEL, BIG, fault)
      const always = await pull(['--retries', '2'], 'out2')
      expect(always.res.code, always.res.stderr).to.equal(3)
      expect(errorCode(always.events)).to.equal('E_PROTOCOL')
      expect(content(), '1 attempt + 2 retries').to.have.length(3)
      await expectNothingFinal(always.dir)
    })
  }

  // ---- longer bodies

  it('body longer than declared (extra bytes after Content-Length): stops at the listed size, SHA-256 decides', async () => {
    const {res, dir} = await pullWith([CUT, {kind: 'extraBytes', n: 4096}])
    expect(res.code, res.stderr).to.equal(0)
    await expectExact(dir)
    expect(content()[1].fault).to.equal('extraBytes')
    expectResumedAfterCut(content())
  })

  it('body longer than asked, declared in the headers: never written past the listed size', async () => {
    // Two connections: the first segment's longer reply still ends inside the file (accepted, cut at
    // the segment end); the last segment's reaches past the listed size (refused, retried).
    await startEmu([{path: BIG, size: 4 * MiB}])
    emu!.setFaults(MODEL, BIG, [{kind: 'extraBytes', n: 4096, declared: true}, {kind: 'extraBytes', n: 4096, declared: true}])
    const {res, dir, events} = await pull(['--connections', '2'])
    expect(res.code, res.stderr).to.equal(0)
    await expectExact(dir)
    const faulted = content().filter((r) => r.fault === 'extraBytes')
    expect(faulted.map((r) => r.rangeStart).sort()).to.deep.equal([0, 2 * MiB])
    expect(events.filter((e) => e.type === 'integrity-retry')).to.have.length(0)
  })

  it('a listing that says the file is shorter than the server does: the remote changed, re-listed, bounded (exit 5), nothing placed', async () => {
    await startEmu([{path: BIG, size: 2 * MiB, listedSize: 2 * MiB - 100}])
    const {res, dir} = await pull()
    expect(res.code, res.stderr).to.equal(5)
    expect(errorCode(eventsOf(res))).to.equal('E_REMOTE_CHANGED')
    expect(listings()).to.have.length(1 + MAX_REMOTE_CHANGES)
    await expectNothingFinal(dir)
  })

  // ---- 416

  it('416 */N on resume with N = the listed size: a protocol glitch, retried from the durable offset', async () => {
    const {res, dir, events} = await pullWith([CUT, {kind: 'status', status: 416, headers: {'Content-Range': `bytes */${SIZE}`}}])
    expect(res.code, res.stderr).to.equal(0)
    await expectExact(dir)
    expect(content()).to.have.length(3)
    expectResumedAfterCut(content())
    expect(listings()).to.have.length(1)
    expect(retries(events).at(-1)?.code).to.equal('E_PROTOCOL')
  })

  it('416 */N on resume with another N: the file changed, partial dropped, re-listed, restart from 0', async () => {
    const {res, dir, events} = await pullWith([CUT, {kind: 'status', status: 416, headers: {'Content-Range': `bytes */${MiB - 10}`}}])
    expect(res.code, res.stderr).to.equal(0)
    await expectExact(dir)
    expect(content().map((r) => r.rangeStart)).to.deep.equal([0, RESUME_AT, 0])
    expect(listings()).to.have.length(2)
    expect(events.filter((e) => e.type === 'remote-changed')).to.have.length(1)
  })

  // ---- gzip

  it('gzip on a range reply: we ask for identity, refuse the compressed range, retry, file exact', async () => {
    const {res, dir} = await pullWith([CUT, {kind: 'gzip'}])
    expect(res.code, res.stderr).to.equal(0)
    await expectExact(dir)
    const reqs = content()
    expect(reqs).to.have.length(3)
    expect(reqs[1].fault).to.equal('gzip')
    expectResumedAfterCut(reqs)
    for (const r of reqs) expect(r.headers['accept-encoding']).to.equal('identity')
  })

  // ---- signed URL expiry

  for (const separate of [false, true]) {
    it(`signed URL expires mid-file (403 from the blob route, ${separate ? 'separate' : 'same'} origin): resolved again through the hub, resumed`, async () => {
      const {res, dir} = await pullWith([CUT, {kind: 'expired'}], [], {blobOnSeparateOrigin: separate})
      expect(res.code, res.stderr).to.equal(0)
      await expectExact(dir)
      const log = emu!.log.filter((e) => e.route === 'download' || e.route === 'blob')
      const expired = log.findIndex((e) => e.route === 'blob' && e.status === 403)
      expect(expired).to.be.greaterThan(0)
      expect(log[expired].origin).to.equal(separate ? 'blob' : 'main')
      const after = log.slice(expired + 1)
      expect(after[0]?.route, 'a new download-route request after the 403').to.equal('download')
      expect(after[1]?.route).to.equal('blob')
      expect(after[1]?.rangeStart, 'resume offset > 0').to.equal(RESUME_AT)
    })
  }

  // ---- redirects

  const REDIRECT_FAULTS: Array<[string, Fault]> = [
    ['redirect loop (chain)', {kind: 'redirectLoop', mode: 'chain'}],
    ['redirect loop (self)', {kind: 'redirectLoop', mode: 'self'}],
    ['Location ftp://', {kind: 'badLocation', location: 'ftp://127.0.0.1/blob'}],
    ['Location file://', {kind: 'badLocation', location: 'file:///etc/passwd'}],
  ]
  for (const [name, fault] of REDIRECT_FAULTS) {
    it(`${name}: capped at about 10 redirects, fails clearly (exit 3, E_PROTOCOL)`, async () => {
      const {res, dir, ms, events} = await pullWith([fault])
      expect(res.code, res.stderr).to.equal(3)
      expect(errorCode(events)).to.equal('E_PROTOCOL')
      await expectNothingFinal(dir)
      const downloads = emu!.log.filter((e) => e.route === 'download').length
      const hops = emu!.log.filter((e) => e.url.startsWith('/loop/')).length
      expect(downloads).to.be.within(1, DEFAULT_RETRY_POLICY.maxRetries + 1)
      expect(hops, 'redirects followed per download attempt').to.be.at.most(10 * downloads)
      if (fault.kind === 'redirectLoop') expect(hops).to.be.at.least(5)
      else expect(hops).to.equal(0)
      expect(content()).to.have.length(0)
      expect(ms).to.be.lessThan(20_000)
    })
  }

  it('cross-origin redirect: Cookie and Authorization stripped on the other origin', async () => {
    const TOKEN = 'tok-cross-origin-42'
    const {res, dir} = await pullWith([{kind: 'crossOriginRedirect'}], ['--token', TOKEN], {token: TOKEN})
    expect(res.code, res.stderr).to.equal(0)
    await expectExact(dir)
    const other = emu!.log.filter((e) => e.origin === 'blob')
    expect(other).to.have.length(1)
    expect(other[0].route).to.equal('blob')
    expect(other[0].headers.cookie).to.equal(undefined)
    expect(other[0].headers.authorization).to.equal(undefined)
    const main = emu!.log.filter((e) => e.origin === 'main')
    expect(main.length).to.be.greaterThan(2)
    for (const e of main) expect(e.headers.authorization, e.url).to.equal(`Bearer ${TOKEN}`)
  })

  // ---- Retry-After

  it('503 with Retry-After as an HTTP date, then 429 with seconds: waits as told each time', async () => {
    await startEmu()
    // Whole seconds on the wire: 3 s ahead is 2 to 3 s when written, at least 1.4 s when the CLI reads it.
    const at = new Date(Date.now() + 3000).toUTCString()
    emu!.setFaults(MODEL, BIG, [
      {kind: 'status', status: 503, headers: {'Retry-After': at}},
      {kind: 'status', status: 429, headers: {'Retry-After': '1'}},
    ])
    const {res, dir, events} = await pull()
    expect(res.code, res.stderr).to.equal(0)
    await expectExact(dir)
    const reqs = content()
    expect(reqs.map((r) => r.status)).to.deep.equal([503, 429, 206])
    // Our own backoff in tests is 20 ms: gaps this long can only come from Retry-After.
    expect(reqs[1].t - reqs[0].t).to.be.at.least(1000)
    expect(reqs[2].t - reqs[1].t).to.be.at.least(950)
    const delays = retries(events).map((e) => e.delayMs as number)
    expect(delays[0]).to.be.within(1000, 3000)
    expect(delays[1]).to.equal(1000)
  })

  it('Retry-After huge: the wait is capped (retry event delayMs = the cap)', async () => {
    await startEmu()
    emu!.setFaults(MODEL, BIG, [{kind: 'status', status: 503, headers: {'Retry-After': '999999999'}}])
    const child = startCli(['pull', MODEL, '--endpoint', emu!.url, '--local-dir', path.join(home, 'out'), '--json'], {env: testEnv(home, t.env)})
    const retry = await new Promise<JsonEvent | undefined>((resolve) => {
      let buf = ''
      child.stdout!.on('data', (d) => {
        buf += d
        for (const line of buf.split('\n').slice(0, -1)) {
          const e = JSON.parse(line) as JsonEvent
          if (e.type === 'retry') resolve(e)
        }
        buf = buf.slice(buf.lastIndexOf('\n') + 1)
      })
      child.on('exit', () => resolve(undefined))
    })
    // It is waiting: no second request comes while we look.
    await new Promise((r) => setTimeout(r, 500))
    child.kill('SIGKILL')
    await new Promise((r) => child.once('close', r))
    expect(retry, 'a retry event').to.not.equal(undefined)
    expect(retry!.delayMs).to.equal(DEFAULT_RETRY_POLICY.maxRetryAfterMs)
    expect(content()).to.have.length(1)
  })

  it('Retry-After junk: ignored, our backoff applies', async () => {
    const {res, dir, events} = await pullWith([{kind: 'status', status: 503, headers: {'Retry-After': 'soon 12'}}])
    expect(res.code, res.stderr).to.equal(0)
    await expectExact(dir)
    const [retry] = retries(events)
    // Backoff in tests: base 20 ms, first retry within [10, 20] ms; "soon 12" read as a date would be 0.
    expect(retry.delayMs).to.be.within(10, 20)
    expect(content()).to.have.length(2)
  })

  it('503 forever: gives up within the retry budget (exit 3), nothing placed', async () => {
    await startEmu()
    emu!.setDefaultFault(MODEL, BIG, {kind: 'status', status: 503, headers: {'Retry-After': '0'}})
    const {res, dir, events} = await pull(['--retries', '2'])
    expect(res.code, res.stderr).to.equal(3)
    expect(errorCode(events)).to.equal('E_NETWORK')
    expect(content()).to.have.length(3)
    await expectNothingFinal(dir)
  })

  // ---- 401/403/404 mid-pull

  const FATAL: Array<[string, Fault, string]> = [
    ['401 from the hub', {kind: 'status', status: 401, on: 'download'}, 'E_AUTH'],
    ['403 from the hub', {kind: 'status', status: 403, on: 'download'}, 'E_AUTH'],
    ['404 from the hub', {kind: 'status', status: 404, on: 'download'}, 'E_NOT_FOUND'],
    ['404 from the blob host', {kind: 'status', status: 404}, 'E_NOT_FOUND'],
  ]
  for (const [name, fault, code] of FATAL) {
    it(`${name} mid-pull: no endless retry, the partial kept, exit 5 [${code}]`, async () => {
      const {res, dir, events} = await pullWith([CUT, fault])
      expect(res.code, res.stderr).to.equal(5)
      expect(errorCode(events)).to.equal(code)
      expect(res.stdout + res.stderr).not.to.match(/\n\s+at /)
      await expectNothingFinal(dir)
      // Nothing after the refusal: one faulted request, no retry of it.
      expect(emu!.attemptsOf(MODEL, BIG)).to.equal(2)
      expect(retries(events).filter((e) => e.code === code)).to.have.length(0)
      // The partial and the journal's claim on it survive, and agree.
      const {problems, durablePrefix} = await journalClaimsProblems(dir)
      expect(problems).to.deep.equal([])
      expect(durablePrefix[BIG]).to.equal(RESUME_AT)
      const partials = await fs.readdir(statePaths(dir).partials)
      expect(partials).to.have.length(1)
      // And the next run resumes it.
      emu!.clearFaults()
      emu!.clearLog()
      const again = await pull()
      expect(again.res.code, again.res.stderr).to.equal(0)
      await expectExact(again.dir)
      expect(content().map((r) => r.rangeStart)).to.deep.equal([RESUME_AT])
    })
  }

  // ---- trickle

  it('trickle (a byte a second after 1.5 MiB): the minimum-speed window drops it, reconnects, resumes', async () => {
    const {res, dir, ms, events} = await pullWith([{kind: 'trickle', bytesPerSec: 1, afterBytes: 1.5 * MiB}], ['--timeout', '2', '--min-speed', '1K'])
    expect(res.code, res.stderr).to.equal(0)
    await expectExact(dir)
    const reqs = content()
    expect(reqs).to.have.length(2)
    expect(reqs[0].fault).to.equal('trickle')
    // Bytes kept coming (never idle for --timeout): the speed window, not the idle timer, cut it.
    expect(reqs[0].bytesSent).to.be.greaterThan(1.5 * MiB)
    // Even the trickled bytes are kept: the retry asks for the first byte not yet received.
    expect(reqs[1].rangeStart).to.equal(reqs[0].bytesSent)
    expect(retries(events).map((e) => e.code)).to.deep.equal(['E_TIMEOUT'])
    expect(ms).to.be.lessThan(20_000)
  })

  // ---- empty bodies

  it('empty 206 body: never completes from it; retried from the durable offset, exact after the fault clears', async () => {
    const {res, dir} = await pullWith([CUT, {kind: 'empty', status: 206}])
    expect(res.code, res.stderr).to.equal(0)
    await expectExact(dir)
    expect(content()).to.have.length(3)
    expectResumedAfterCut(content())
  })

  it('empty 200 body: another file than listed, re-listed, restarted, exact after the fault clears', async () => {
    const {res, dir} = await pullWith([CUT, {kind: 'empty', status: 200}])
    expect(res.code, res.stderr).to.equal(0)
    await expectExact(dir)
    expect(content().map((r) => r.rangeStart)).to.deep.equal([0, RESUME_AT, 0])
    expect(listings()).to.have.length(2)
  })

  for (const status of [200, 206] as const) {
    it(`empty ${status} body forever: bounded, fails clearly, nothing placed (never the empty-file hash)`, async () => {
      await startEmu()
      emu!.setDefaultFault(MODEL, BIG, {kind: 'empty', status})
      const {res, dir, events} = await pull(['--retries', '2'])
      expect(res.code, res.stderr).to.equal(status === 206 ? 3 : 5)
      expect(errorCode(events)).to.equal(status === 206 ? 'E_PROTOCOL' : 'E_REMOTE_CHANGED')
      expect(content().length).to.be.at.most(3 * (1 + MAX_REMOTE_CHANGES))
      expect(events.filter((e) => e.type === 'file-done')).to.have.length(0)
      await expectNothingFinal(dir)
    })
  }
})
