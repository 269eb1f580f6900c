import {execFileSync} from 'node:child_process'
import fs from 'node:fs/promises'
import http from 'node:http'
import https from 'node:https'
import net, {type AddressInfo} from 'node:net'
import path from 'node:path'

import {expect} from 'chai'

import {type EmulatorFileSpec, HubEmulator, type HubEmulatorOptions} from '../support/emulator.js'
import {type CliResult, exists, makeTmpDir, runCli, testEnv} from '../support/cli.js'
import {statePaths} from '../support/state-paths.js'
import {TRANSPORTS, type Transport, transport} from '../support/tls.js'

const MODEL = 'acme/failover'
const MiB = 1024 * 1024
const BIG = 'model.safetensors'
/** Sorts after BIG: listed, hence pulled (--concurrency 1), after it. */
const SMALL = 'tokenizer.json'
/** 3 MiB + a tail: 4 chunks, the last one short. */
const SIZE = 3 * MiB + 4321
/** The first endpoint dies after this many body bytes of BIG; every one of them is kept. */
const CUT = 1.5 * MiB
const TOKEN = 'failover-secret-token'
const RETRIES = 5
/** Low, so that a blackholed endpoint costs little; the retry budget stays --timeout (30 s) times the retries. */
const CONNECT_TIMEOUT_MS = 1500
const TIMEOUT_S = 30

type JsonEvent = {type: string; [k: string]: unknown}

const escaped = (text: string) => text.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')

function eventsOf(res: CliResult): JsonEvent[] {
  return res.stdout.split('\n').filter((l) => l.startsWith('{')).map((l) => JSON.parse(l) as JsonEvent)
}

const FILES: EmulatorFileSpec[] = [{path: BIG, size: SIZE}, {path: SMALL, content: '{"model_type": "failover"}\n'}]

/** A port nothing listens on: connecting is refused at once. */
async function refusedPort(): Promise<number> {
  const server = net.createServer()
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
  const {port} = server.address() as AddressInfo
  await new Promise<void>((resolve) => server.close(() => resolve()))
  return port
}

/** A listening socket that accepts and never says a word (a relay to nowhere): counts its connections. */
async function blackhole(): Promise<{port: number; connections: () => number; close: () => Promise<void>}> {
  const held = new Set<net.Socket>()
  let count = 0
  const server = net.createServer((s) => {
    count++
    held.add(s)
    s.on('error', () => {})
    s.on('close', () => held.delete(s))
  })
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
  return {
    port: (server.address() as AddressInfo).port,
    connections: () => count,
    close: async () => {
      for (const s of held) s.destroy()
      await new Promise<void>((resolve) => server.close(() => resolve()))
    },
  }
}

/**
 * A server reached as https:// whose TLS handshake fails: over `http` one that speaks plain HTTP;
 * over `https` a TLS server with a certificate the client does not trust (made here, not the test CA).
 */
async function tlsFailure(kind: Transport, dir: string): Promise<{port: number; close: () => Promise<void>}> {
  let server: net.Server
  if (kind === 'http') {
    server = net.createServer((s) => {
      s.on('error', () => {})
      s.once('data', () => s.end('HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n'))
    })
  } else {
    const keyPath = path.join(dir, 'untrusted-key.pem')
    const certPath = path.join(dir, 'untrusted-cert.pem')
    execFileSync('openssl', ['req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-days', '2', '-subj', '/CN=127.0.0.1',
      '-addext', 'subjectAltName=IP:127.0.0.1', '-keyout', keyPath, '-out', certPath], {stdio: 'ignore'})
    server = https.createServer({key: await fs.readFile(keyPath), cert: await fs.readFile(certPath)}, (_req, res) => res.end('{}'))
  }
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
  return {port: (server.address() as AddressInfo).port, close: () => new Promise<void>((resolve) => server.close(() => resolve()))}
}

/**
 * Endpoint failover (issue 13): `--endpoint` repeated, in order of preference. Real servers on
 * 127.0.0.1, over HTTP and TLS; assertions on bytes on disk, exit and error codes, and what each
 * server saw.
 */
for (const kind of TRANSPORTS) describe(`endpoint failover over ${kind}`, function () {
  this.timeout(120_000)
  const t = transport(kind)
  const scheme = kind
  const servers: Array<{stop?: () => Promise<void>; close?: () => Promise<void>}> = []
  let home: string

  beforeEach(async () => {
    home = await makeTmpDir()
  })
  afterEach(async () => {
    for (const s of servers.splice(0)) await (s.stop ?? s.close)!.call(s)
    await fs.rm(home, {recursive: true, force: true})
  })

  async function emulator(opts: HubEmulatorOptions = {}, files: EmulatorFileSpec[] = FILES): Promise<HubEmulator> {
    const emu = await HubEmulator.start({models: [{id: MODEL, files}], tls: t.tls, ...opts})
    servers.push(emu)
    return emu
  }

  /** An emulator that serves CUT bytes of BIG, then dies: its servers close (later connects are refused). */
  async function dyingEmulator(opts: HubEmulatorOptions = {}): Promise<HubEmulator> {
    let emu: HubEmulator | undefined
    emu = await emulator({
      ...opts,
      onLog: (e) => {
        if (e.content && e.path === BIG && e.bytesSent > 0) void emu!.stop()
      },
    })
    emu.setFaults(MODEL, BIG, [{kind: 'reset', afterBytes: CUT}])
    // Should a retry slip in before the servers close, it fails the same way.
    emu.setDefaultFault(MODEL, BIG, {kind: 'reset', afterBytes: 0})
    return emu
  }

  async function pull(endpoints: string[], args: string[] = [], env: Record<string, string | undefined> = {}, limits = {retries: RETRIES, timeoutS: TIMEOUT_S}) {
    const dir = path.join(home, 'out')
    const started = Date.now()
    const res = await runCli(
      ['pull', MODEL, ...endpoints.flatMap((e) => ['--endpoint', e]), '--local-dir', dir, '--retries', String(limits.retries), '--timeout', String(limits.timeoutS), ...args],
      {env: testEnv(home, {...t.env, MS_RESUME_CONNECT_TIMEOUT_MS: String(CONNECT_TIMEOUT_MS), ...env}), timeoutMs: 110_000},
    )
    return {res, dir, ms: Date.now() - started, events: eventsOf(res)}
  }

  async function expectExact(dir: string, emu: HubEmulator, p = BIG): Promise<void> {
    const data = await fs.readFile(path.join(dir, p))
    expect(data.equals(emu.contentOf(MODEL, p)), `${p} byte-exact`).to.equal(true)
  }

  const summaryOf = (events: JsonEvent[]) => events.find((e) => e.type === 'summary') as JsonEvent & {endpoint: string; failovers: Array<Record<string, string>>}
  const failoversOf = (events: JsonEvent[]) => events.filter((e) => e.type === 'failover')

  it('mid-file: the first endpoint dies after CUT bytes; the file completes from the second, which is asked only for the bytes after CUT; later files start there', async () => {
    const a = await dyingEmulator()
    const b = await emulator()
    // Mirrors name one file by different ETags: the listing's sha256 and size vouch for the partial.
    b.setDefaultFault(MODEL, BIG, {kind: 'changedEtag', etag: '"mirror-etag"'})
    const {res, dir, events} = await pull([a.url, b.url], ['--json', '--concurrency', '1', '--connections', '1'])
    expect(res.code, res.stderr + res.stdout.slice(-2000)).to.equal(0)
    await expectExact(dir, b)
    await expectExact(dir, b, SMALL)

    expect(a.contentRequests(MODEL, BIG)[0].bytesSent, 'the first endpoint sent CUT bytes').to.equal(CUT)
    const fromB = b.contentRequests(MODEL, BIG)
    expect(fromB.map((e) => e.rangeStart), 'the second endpoint is asked from the first byte not on disk').to.deep.equal([CUT])
    expect(fromB.reduce((n, e) => n + e.bytesSent, 0), 'no byte fetched twice').to.equal(SIZE - CUT)

    expect(b.log.filter((e) => e.route === 'files'), 'one listing of the second endpoint: another ETag there asks for no second one').to.have.length(1)
    const moves = failoversOf(events)
    expect(moves, 'one failover').to.have.length(1)
    expect(moves[0]).to.include({from: a.url, to: b.url, path: BIG})
    expect(['E_NETWORK', 'E_TIMEOUT', 'E_PROTOCOL']).to.include(moves[0].code)
    expect(events.find((e) => e.type === 'start')?.endpoint, 'the listing came from the first endpoint').to.equal(a.url)
    // Refused mid-file: a second refusal moves the file on, not the whole retry budget with backoff.
    expect(events.filter((e) => e.type === 'retry' && e.path === BIG).length, 'retries spent on the dead endpoint').to.be.at.most(2)
    // The small file started after the failover: on the second endpoint, without a retry spent on the dead one.
    expect(events.filter((e) => e.type === 'retry' && e.path === SMALL)).to.deep.equal([])
    expect(b.contentRequests(MODEL, SMALL)).to.have.length(1)
    const summary = summaryOf(events)
    expect(summary.endpoint).to.equal(b.url)
    expect(summary.failovers.map((f) => [f.from, f.to])).to.deep.equal([[a.url, b.url]])
  })

  it('mid-file stall: the first endpoint stops sending after CUT bytes and never recovers; after its retries the file goes on at the second from CUT', async () => {
    const a = await emulator()
    a.setFaults(MODEL, BIG, [{kind: 'stall', afterBytes: CUT}])
    a.setDefaultFault(MODEL, BIG, {kind: 'stall'})
    const b = await emulator()
    const {res, dir, events} = await pull([a.url, b.url], ['--json', '--connections', '1'], {}, {retries: 2, timeoutS: 1})
    expect(res.code, res.stderr + res.stdout.slice(-2000)).to.equal(0)
    await expectExact(dir, b)
    expect(a.contentRequests(MODEL, BIG), 'the first endpoint: the cut request and its retries').to.have.length(3)
    expect(b.contentRequests(MODEL, BIG).map((e) => e.rangeStart)).to.deep.equal([CUT])
    const moves = failoversOf(events)
    expect(moves).to.have.length(1)
    expect(moves[0]).to.include({from: a.url, to: b.url, path: BIG, code: 'E_TIMEOUT'})
  })

  it('from the start: a refused first endpoint is left at once (no retry), the pull runs on the second', async () => {
    const dead = `${scheme}://127.0.0.1:${await refusedPort()}`
    const b = await emulator()
    const {res, dir, events} = await pull([dead, b.url], ['--json'])
    expect(res.code, res.stderr).to.equal(0)
    await expectExact(dir, b)
    expect(events.filter((e) => e.type === 'retry'), 'no retry spent on a refused endpoint').to.deep.equal([])
    const moves = failoversOf(events)
    expect(moves).to.have.length(1)
    expect(moves[0]).to.include({from: dead, to: b.url, path: '', code: 'E_NETWORK', reason: 'connection refused'})
    expect(events.find((e) => e.type === 'listing')?.endpoint).to.equal(dead)
    expect(events.find((e) => e.type === 'start')?.endpoint).to.equal(b.url)
    expect(summaryOf(events).endpoint).to.equal(b.url)
  })

  it('from the start: a blackholed first endpoint (accepts, says nothing) costs one connect timeout, well under the retry budget', async () => {
    const hole = await blackhole()
    servers.push(hole)
    const dead = `${scheme}://127.0.0.1:${hole.port}`
    const b = await emulator()
    const {res, dir, events, ms} = await pull([dead, b.url], ['--json'])
    expect(res.code, res.stderr).to.equal(0)
    await expectExact(dir, b)
    const moves = failoversOf(events)
    expect(moves).to.have.length(1)
    expect(moves[0]).to.include({from: dead, to: b.url, code: 'E_TIMEOUT'})
    expect(events.filter((e) => e.type === 'retry'), 'no retry spent on the blackhole').to.deep.equal([])
    // One listing: its two requests (revisions and files) in parallel, and the connection warmed
    // for the first file request meanwhile (pull's preconnect); a retry would open more.
    expect(hole.connections(), 'connections to the blackhole').to.be.within(1, 3)
    // The retry budget against it would be (retries + 1) x --timeout = 180 s.
    expect(ms, 'well under the retry budget').to.be.below(TIMEOUT_S * 1000)
  })

  it(`from the start: a TLS failure on the first endpoint (${kind === 'http' ? 'it speaks no TLS' : 'an untrusted certificate'}) moves on at once`, async () => {
    const broken = await tlsFailure(kind, home)
    servers.push(broken)
    const dead = `https://127.0.0.1:${broken.port}`
    const b = await emulator()
    const {res, dir, events} = await pull([dead, b.url], ['--json'])
    expect(res.code, res.stderr).to.equal(0)
    await expectExact(dir, b)
    const moves = failoversOf(events)
    expect(moves).to.have.length(1)
    expect(moves[0]).to.include({from: dead, to: b.url, code: 'E_NETWORK'})
    expect(moves[0].reason).to.match(/^TLS failure/)
    expect(events.filter((e) => e.type === 'retry')).to.deep.equal([])
  })

  it('the second endpoint lists another sha256 for the file: the partial is discarded, not mixed; the file is that endpoint\'s, fetched from byte 0', async () => {
    const a = await dyingEmulator()
    const b = await emulator({}, [{path: BIG, size: SIZE, seed: 'another version'}, FILES[1]])
    expect(b.sha256Of(MODEL, BIG)).not.to.equal(a.sha256Of(MODEL, BIG))
    const {res, dir, events} = await pull([a.url, b.url], ['--json', '--connections', '1'])
    expect(res.code, res.stderr + res.stdout.slice(-2000)).to.equal(0)
    await expectExact(dir, b)
    expect(b.contentRequests(MODEL, BIG).map((e) => e.rangeStart), 'fetched whole from the second endpoint').to.deep.equal([0])
    expect(events.filter((e) => e.type === 'remote-changed' && e.path === BIG)).to.have.length(1)
    expect(events.filter((e) => e.type === 'integrity-retry'), 'no mixed file was ever hashed').to.deep.equal([])
    expect(await exists(statePaths(dir).quarantine), 'nothing quarantined').to.equal(false)
    const done = events.find((e) => e.type === 'file-done' && e.path === BIG)
    expect(done?.sha256).to.equal(b.sha256Of(MODEL, BIG))
    // The model's manifest records what was verified: the second endpoint's version.
    const manifest = JSON.parse(await fs.readFile(statePaths(dir).manifest, 'utf8')) as {files: Array<{path: string; sha256: string; size: number}>}
    expect(manifest.files.find((f) => f.path === BIG)?.sha256).to.equal(b.sha256Of(MODEL, BIG))
    const verify = await runCli(['verify', MODEL, '--local-dir', dir, '--level', 'full'], {env: testEnv(home, t.env)})
    expect(verify.code, verify.stdout + verify.stderr).to.equal(0)
  })

  it('the token goes only to the origins named with --endpoint: never to their CDN origin, never to MODELSCOPE_ENDPOINT when --endpoint is given', async () => {
    const a = await dyingEmulator({token: TOKEN, blobOnSeparateOrigin: true})
    const b = await emulator({token: TOKEN, blobOnSeparateOrigin: true})
    const unnamed = await emulator({token: TOKEN})
    const {res, dir} = await pull([a.url, b.url], ['--token', TOKEN], {MODELSCOPE_ENDPOINT: unnamed.url})
    expect(res.code, res.stderr).to.equal(0)
    await expectExact(dir, b)
    expect(res.stderr).not.to.contain(TOKEN)
    const lines = res.stderr.split('\n')
    const failoverLines = lines.filter((l) => l.startsWith('failover: '))
    expect(failoverLines, 'the failover is one line').to.have.length(1)
    expect(failoverLines[0]).to.match(new RegExp(`^failover: ${escaped(a.url)} failed on ${escaped(BIG)} \\(.+\\) \\[E_[A-Z]+\\]; going on with ${escaped(b.url)}$`))
    expect(lines, 'the summary says which endpoint served').to.include(`served by ${b.url} after 1 failover (${a.url})`)

    const carriesToken = (h: http.IncomingHttpHeaders) => JSON.stringify([h.authorization ?? '', h.cookie ?? '']).includes(TOKEN)
    for (const [name, emu] of [['first', a], ['second', b]] as const) {
      const api = emu.log.filter((e) => e.origin === 'main')
      expect(api.length, `${name} endpoint was asked`).to.be.greaterThan(0)
      expect(api.every((e) => carriesToken(e.headers)), `${name} endpoint (named) got the token`).to.equal(true)
      const cdn = emu.log.filter((e) => e.origin === 'blob')
      expect(cdn.length, `${name} endpoint's CDN origin served bytes`).to.be.greaterThan(0)
      expect(cdn.filter((e) => carriesToken(e.headers)).map((e) => e.url), `${name} endpoint's CDN origin never saw the token`).to.deep.equal([])
    }
    expect(unnamed.log, 'MODELSCOPE_ENDPOINT is replaced by --endpoint: never contacted').to.deep.equal([])
  })

  it('every endpoint dead: exit 3 with E_ENDPOINTS, one line naming each endpoint tried; the last one gets its retries', async () => {
    const refused = `${scheme}://127.0.0.1:${await refusedPort()}`
    let listings = 0
    const handler = (req: http.IncomingMessage, res: http.ServerResponse) => {
      if (req.url?.includes('/repo/files')) listings++
      res.writeHead(503, {'Content-Type': 'text/plain'}).end('busy')
    }
    const busy = t.tls ? https.createServer({key: t.tls.key, cert: t.tls.cert}, handler) : http.createServer(handler)
    await new Promise<void>((resolve) => busy.listen(0, '127.0.0.1', resolve))
    servers.push({close: () => new Promise<void>((resolve) => busy.close(() => resolve()))})
    const last = `${scheme}://127.0.0.1:${(busy.address() as AddressInfo).port}`

    const {res, dir} = await pull([refused, last])
    expect(res.code, res.stderr).to.equal(3)
    const lines = res.stderr.trim().split('\n')
    const errorLines = lines.filter((l) => l.includes('[E_ENDPOINTS]'))
    expect(errorLines, res.stderr).to.have.length(1)
    expect(errorLines[0]).to.contain(`${refused} (connection refused)`).and.to.contain(`${last} (HTTP 503)`)
    expect(lines.filter((l) => l.startsWith('failover: ')), 'the failover is one line').to.have.length(1)
    expect(res.stderr).not.to.match(/^\s+at /m)
    expect(listings, 'the last endpoint: one listing and its retries').to.equal(RETRIES + 1)
    expect(await exists(path.join(dir, BIG))).to.equal(false)
  })

  it('verify --remote compares with the first endpoint that answers and says which one', async () => {
    const b = await emulator()
    const first = await pull([b.url])
    expect(first.res.code, first.res.stderr).to.equal(0)
    b.mutateFile(MODEL, SMALL, {content: '{"model_type": "changed upstream"}\n'})
    const dead = `${scheme}://127.0.0.1:${await refusedPort()}`
    const res = await runCli(['verify', MODEL, '--local-dir', first.dir, '--remote', '--endpoint', dead, '--endpoint', b.url, '--level', 'size', '--json'], {
      env: testEnv(home, {...t.env, MS_RESUME_CONNECT_TIMEOUT_MS: String(CONNECT_TIMEOUT_MS)}),
    })
    expect(res.code, res.stderr).to.equal(0)
    const report = JSON.parse(res.stdout.trim()) as {remote: {endpoint: string; changed: Array<{path: string}>; failovers: Array<Record<string, string>>}}
    expect(report.remote.endpoint).to.equal(b.url)
    expect(report.remote.changed.map((c) => c.path), 'the listing is the second endpoint\'s').to.deep.equal([SMALL])
    expect(report.remote.failovers).to.have.length(1)
    expect(report.remote.failovers[0]).to.include({from: dead, to: b.url, code: 'E_NETWORK', reason: 'connection refused'})
  })
})
