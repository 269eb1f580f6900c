import fs from 'node:fs/promises'
import path from 'node:path'

import {expect} from 'chai'

import {HubEmulator, type LogEntry} from '../support/emulator.js'
import {makeTmpDir, runCli, testEnv} from '../support/cli.js'
import {journalClaimsProblems} from '../support/journal-check.js'
import {durablePrefixBytes, pullAndKillWhen, readJournal} from '../support/process.js'
import {statePaths} from '../support/state-paths.js'
import {TRANSPORTS, transport} from '../support/tls.js'

const MODEL = 'acme/lossy'
const FILE = 'w.bin'
const KiB = 1024
const MiB = 1024 * KiB

/** Content requests in arrival order. */
function contentRequests(emu: HubEmulator): LogEntry[] {
  return emu.contentRequests(MODEL, FILE)
}

/**
 * Issue 16: every received byte counts. A dropped connection costs a reconnect, never the bytes
 * that arrived; a kill costs at most about one checkpoint interval of transfer, at any speed.
 */
describe('lossy and slow links: every received byte counts', function () {
  this.timeout(180_000)
  let emu: HubEmulator | undefined
  let home: string

  afterEach(async () => {
    await emu?.stop()
    emu = undefined
    await fs.rm(home, {recursive: true, force: true})
  })

  for (const kind of TRANSPORTS) {
    const t = transport(kind)

    for (const dropBytes of [700 * KiB, 64 * KiB]) {
      it(`${kind}: a link that drops every connection after ${dropBytes / KiB} KB finishes, each byte sent once`, async () => {
        const size = dropBytes === 64 * KiB ? 3 * MiB + 777 : 16 * MiB + 777
        emu = await HubEmulator.start({models: [{id: MODEL, files: [{path: FILE, size}]}], tls: t.tls, rateLimitBytesPerSec: 16 * MiB})
        emu.setDefaultFault(MODEL, FILE, {kind: 'reset', afterBytes: dropBytes})
        home = await makeTmpDir()
        const dir = path.join(home, 'out')
        const res = await runCli(['pull', MODEL, '--endpoint', emu.url, '--local-dir', dir, '--connections', '1'], {env: testEnv(home, t.env), timeoutMs: 150_000})
        expect(res.code, res.stderr).to.equal(0)
        expect((await fs.readFile(path.join(dir, FILE))).equals(emu.contentOf(MODEL, FILE))).to.equal(true)
        const reqs = contentRequests(emu)
        expect(reqs.length, 'one request per drop').to.be.at.least(Math.floor(size / dropBytes))
        // Each retry asks for the exact next byte: where the last one stopped.
        let next = 0
        for (const r of reqs) {
          expect(r.rangeStart ?? 0, `request ${r.range}`).to.equal(next)
          next += r.bytesSent
        }
        expect(emu.totalBytesSent(MODEL, FILE), 'bytes sent').to.be.at.most(Math.ceil(size * 1.02))
      })
    }

    it(`${kind}: segmented download with drops on every connection`, async () => {
      const size = 24 * MiB + 4321
      emu = await HubEmulator.start({models: [{id: MODEL, files: [{path: FILE, size}]}], tls: t.tls, rateLimitBytesPerSec: 8 * MiB})
      emu.setDefaultFault(MODEL, FILE, {kind: 'reset', afterBytes: 500 * KiB})
      home = await makeTmpDir()
      const dir = path.join(home, 'out')
      const res = await runCli(['pull', MODEL, '--endpoint', emu.url, '--local-dir', dir, '--connections', '4'], {env: testEnv(home, t.env), timeoutMs: 150_000})
      expect(res.code, res.stderr).to.equal(0)
      expect((await fs.readFile(path.join(dir, FILE))).equals(emu.contentOf(MODEL, FILE))).to.equal(true)
      const reqs = contentRequests(emu)
      expect(new Set(reqs.map((r) => r.rangeStart)).size, 'several connections').to.be.greaterThan(4)
      // A drop never costs what arrived; only a take-over of a tail may overlap by what was in flight.
      expect(emu.totalBytesSent(MODEL, FILE), 'bytes sent').to.be.at.most(Math.ceil(size * 1.05))
    })

    it(`${kind}: SIGKILL on a 100 KB/s link loses at most about a second of transfer`, async () => {
      const size = 4 * MiB
      const rate = 100 * 1000
      emu = await HubEmulator.start({models: [{id: MODEL, files: [{path: FILE, size}]}], tls: t.tls, rateLimitBytesPerSec: rate})
      home = await makeTmpDir()
      const dir = path.join(home, 'out')
      const args = ['pull', MODEL, '--endpoint', emu.url, '--local-dir', dir, '--connections', '1']
      // Killed once the journal claims 400 KB: less than half a chunk, which a whole-chunk
      // checkpoint could never claim.
      const killed = await pullAndKillWhen(args, testEnv(home, t.env), dir, (doc) => durablePrefixBytes(doc.files[FILE]) >= 400 * 1000)
      const claimed = durablePrefixBytes(killed.files[FILE])
      expect(claimed, 'a byte-exact claim inside the first chunk').to.be.lessThan(MiB)
      const {problems} = await journalClaimsProblems(dir)
      expect(problems).to.deep.equal([])
      const sentBeforeKill = emu.totalBytesSent(MODEL, FILE)
      // What arrived but is not claimed: at most about one checkpoint interval (1 s) plus what the
      // kernel buffers held, at 100 KB/s.
      expect(sentBeforeKill - claimed, 'lost to the kill').to.be.at.most(2.5 * rate)
      const before = contentRequests(emu).length
      emu.setRateLimit(undefined)
      const res = await runCli(args, {env: testEnv(home, t.env)})
      expect(res.code, res.stderr).to.equal(0)
      expect((await fs.readFile(path.join(dir, FILE))).equals(emu.contentOf(MODEL, FILE))).to.equal(true)
      const resumed = contentRequests(emu)[before]
      expect(resumed?.rangeStart, "resumed at the journal's byte, not at a chunk boundary").to.equal(claimed)
      expect(await readJournal(dir)).to.not.equal(undefined)
    })

    it(`${kind}: the bytes of a claimed partial chunk altered on disk are fetched again, never trusted`, async () => {
      const size = 4 * MiB
      const rate = 100 * 1000
      emu = await HubEmulator.start({models: [{id: MODEL, files: [{path: FILE, size}]}], tls: t.tls, rateLimitBytesPerSec: rate})
      home = await makeTmpDir()
      const dir = path.join(home, 'out')
      const args = ['pull', MODEL, '--endpoint', emu.url, '--local-dir', dir, '--connections', '1']
      const killed = await pullAndKillWhen(args, testEnv(home, t.env), dir, (doc) => (doc.files[FILE]?.partialChunks?.[0]?.bytes ?? 0) >= 200 * 1000)
      const claim = killed.files[FILE].partialChunks![0]
      expect(claim.index, 'the claim is inside the first chunk').to.equal(0)
      // One byte inside the claimed bytes, as a bad disk or another writer would leave it.
      const state = statePaths(dir)
      const [partial] = await fs.readdir(state.partials)
      expect(partial, 'the partial file').to.be.a('string')
      const fh = await fs.open(state.partial(partial), 'r+')
      const at = Math.floor(claim.bytes / 2)
      const old = Buffer.alloc(1)
      await fh.read(old, 0, 1, at)
      await fh.write(Buffer.from([old[0] ^ 0xff]), 0, 1, at)
      await fh.close()
      const before = contentRequests(emu).length
      emu.setRateLimit(undefined)
      const res = await runCli([...args, '--json'], {env: testEnv(home, t.env)})
      expect(res.code, res.stderr).to.equal(0)
      expect((await fs.readFile(path.join(dir, FILE))).equals(emu.contentOf(MODEL, FILE))).to.equal(true)
      expect(contentRequests(emu)[before]?.rangeStart, 'the chunk is fetched from its start').to.equal(0)
      const warnings = res.stdout.split('\n').filter((l) => l.startsWith('{')).map((l) => JSON.parse(l)).filter((e) => e.type === 'warning')
      expect(warnings.map((w) => w.message).join('\n')).to.match(/chunk 0 of the partial .* did not match its journal/)
    })
  }
})
