import fs from 'node:fs/promises'
import os from 'node:os'
import path from 'node:path'

import {expect} from 'chai'

import {HubEmulator} from '../support/emulator.js'
import {makeTmpDir, runCli, testEnv} from '../support/cli.js'
import {journalClaimsProblems} from '../support/journal-check.js'
import {type RunningCli, durablePrefixBytes, pullAndKillWhen, startJsonCli, strayTempFiles} from '../support/process.js'
import {statePaths} from '../support/state-paths.js'

const MODEL = 'acme/shared'
const MiB = 1024 * 1024
const FILES = [
  {path: 'model.safetensors', size: 12 * MiB + 5},
  {path: 'tokenizer.json', size: 300_000},
  {path: 'config.json', content: '{"layers": 2}\n'},
]
const MODEL_BYTES = FILES.reduce((n, f) => n + (f.size ?? Buffer.byteLength(f.content!)), 0)

/**
 * Several pulls of the same model into the same place: one lock per model (mkdir-based, so it also
 * works on network filesystems); the others wait with a `waiting-lock` event, or exit 6 [E_LOCKED]
 * with --lock-wait 0. The model crosses the network once, whatever the number of processes.
 */
describe('two (and four) pulls of the same model at once', function () {
  this.timeout(60_000)
  let emu: HubEmulator
  let home: string
  let dir: string

  beforeEach(async () => {
    // Slow enough that the first pull still holds the lock when the others ask for it.
    emu = await HubEmulator.start({models: [{id: MODEL, files: FILES}], rateLimitBytesPerSec: 4 * MiB})
    home = await makeTmpDir()
    dir = path.join(home, 'out')
  })
  afterEach(async () => {
    await emu.stop()
    await fs.rm(home, {recursive: true, force: true})
  })

  const args = (...extra: string[]) => ['pull', MODEL, '--endpoint', emu.url, '--local-dir', dir, ...extra]

  async function expectModelExactOnce(): Promise<void> {
    for (const f of FILES) expect((await fs.readFile(path.join(dir, f.path))).equals(emu.contentOf(MODEL, f.path)), f.path).to.equal(true)
    const contentBytes = emu.contentRequests(MODEL).reduce((n, e) => n + e.bytesSent, 0)
    expect(contentBytes, 'content bytes over the network, all processes together').to.equal(MODEL_BYTES)
    const stateDir = statePaths(dir).dir
    expect(await strayTempFiles(stateDir)).to.deep.equal([])
    expect(await fs.readdir(path.join(stateDir, 'partial-v1'))).to.deep.equal([])
    expect((await fs.readdir(stateDir)).filter((n) => n === 'lock'), 'lock released').to.deep.equal([])
    expect((await journalClaimsProblems(dir)).problems).to.deep.equal([])
  }

  for (const n of [2, 4]) {
    it(`${n} pulls started together: one downloads, ${n - 1} wait (waiting-lock), all exit 0, the model crosses the network once`, async () => {
      const runs: RunningCli[] = Array.from({length: n}, () => startJsonCli(args(), testEnv(home)))
      const results = await Promise.all(runs.map((r) => r.done))
      for (const r of results) expect(r.code, r.stderr).to.equal(0)
      const waited = runs.filter((r) => r.events.some((e) => e.type === 'waiting-lock'))
      expect(waited, 'processes that waited for the lock').to.have.length(n - 1)
      // Whoever waited found the files complete: nothing fetched by them.
      for (const r of waited) {
        const summary = r.events.find((e) => e.type === 'summary')
        expect(summary?.downloadedBytes, 'bytes fetched by a waiter').to.equal(0)
      }
      await expectModelExactOnce()
    })
  }

  it('--lock-wait 0 while another pull runs: exit 6 [E_LOCKED] at once, the running pull unharmed', async () => {
    const first = startJsonCli(args(), testEnv(home))
    await first.waitForEvent((e) => e.type === 'start')
    const started = Date.now()
    const second = await runCli(args('--lock-wait', '0', '--json'), {env: testEnv(home)})
    expect(second.code, second.stderr).to.equal(6)
    expect(second.stdout).to.contain('"code":"E_LOCKED"')
    expect(Date.now() - started, 'no waiting').to.be.lessThan(5000)
    expect((await first.done).code).to.equal(0)
    await expectModelExactOnce()
  })

  it('a stale lock from a SIGKILLed pull: the next pull, started at once, takes it over and resumes', async () => {
    const killed = await pullAndKillWhen(args(), testEnv(home), dir, (doc) => durablePrefixBytes(doc.files['model.safetensors']) >= 2 * MiB)
    expect(await fs.stat(statePaths(dir).lock).then(() => true, () => false), 'the dead pull left its lock').to.equal(true)
    emu.setRateLimit(undefined)
    const logFrom = emu.log.length
    const res = await runCli(args(), {env: testEnv(home)})
    expect(res.code, res.stderr).to.equal(0)
    const first = emu.log.slice(logFrom).find((e) => e.content && e.path === 'model.safetensors')
    expect(first?.rangeStart, 'resumed, not restarted').to.equal(durablePrefixBytes(killed.files['model.safetensors']))
    for (const f of FILES) expect((await fs.readFile(path.join(dir, f.path))).equals(emu.contentOf(MODEL, f.path)), f.path).to.equal(true)
  })

  it('a lock of an older ms-resume on another host (empty lock/, lock-owner.json beside it): waited for while fresh, taken over once 10 s old by the filesystem clock', async () => {
    const stateDir = statePaths(dir).dir
    await fs.mkdir(path.join(stateDir, 'lock'), {recursive: true})
    await fs.writeFile(path.join(stateDir, 'lock-owner.json'), JSON.stringify({pid: process.pid, host: `not-${os.hostname()}`, since: new Date().toISOString()}))
    // Fresh: nobody here can prove that holder dead, so a pull waits and gives up after --lock-wait.
    const fresh = await runCli(args('--lock-wait', '1', '--json'), {env: testEnv(home)})
    expect(fresh.code, fresh.stderr).to.equal(6)
    expect(fresh.stdout).to.contain('"code":"E_LOCKED"').and.to.contain('"type":"waiting-lock"')
    expect(emu.contentRequests(MODEL)).to.have.length(0)
    // Not refreshed for longer than the stale limit: the holder is gone; take it over.
    const old = new Date(Date.now() - 11_000)
    await fs.utimes(path.join(stateDir, 'lock'), old, old)
    emu.setRateLimit(undefined)
    const res = await runCli(args('--lock-wait', '1'), {env: testEnv(home)})
    expect(res.code, res.stderr).to.equal(0)
    await expectModelExactOnce()
  })

  it('what killed lock holders leave is swept by the next holder: moved-aside locks, clock probes, old owner files and their temp files', async () => {
    const stateDir = statePaths(dir).dir
    await fs.mkdir(path.join(stateDir, 'lock.stale-0123456789ab'), {recursive: true})
    await fs.writeFile(path.join(stateDir, 'lock.stale-0123456789ab', 'heartbeat'), 'x')
    const strays = ['.lock-owner.json.4242.tmp', 'lock-owner.json', '.clock-probe-4242-deadbeef.tmp']
    for (const name of strays) await fs.writeFile(path.join(stateDir, name), '{}')
    // Not ours: a name that only looks close stays.
    await fs.writeFile(path.join(stateDir, 'lock-owner.json.keep'), 'x')
    emu.setRateLimit(undefined)
    const res = await runCli(args(), {env: testEnv(home)})
    expect(res.code, res.stderr).to.equal(0)
    expect((await fs.readdir(stateDir)).filter((n) => n.includes('lock') || n.includes('probe')).sort()).to.deep.equal(['lock-owner.json.keep'])
  })

  it('Ctrl-C while waiting for the lock: exit 130 [E_INTERRUPTED], not a lock error', async () => {
    const first = startJsonCli(args(), testEnv(home))
    await first.waitForEvent((e) => e.type === 'start')
    const second = startJsonCli(args(), testEnv(home))
    await second.waitForEvent((e) => e.type === 'waiting-lock')
    const res = await second.kill('SIGINT')
    expect(res.code, res.stderr).to.equal(130)
    expect(second.events.find((e) => e.type === 'error')?.code).to.equal('E_INTERRUPTED')
    expect((await first.done).code).to.equal(0)
    await expectModelExactOnce()
  })
})
