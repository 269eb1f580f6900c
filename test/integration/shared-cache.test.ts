import fs from 'node:fs/promises'
import path from 'node:path'

import {expect} from 'chai'

import {HubEmulator} from '../support/emulator.js'
import {makeTmpDir, testEnv} from '../support/cli.js'
import {type JsonEvent, RunningCli, durablePrefixBytes, journalBytes, readJournal, waitUntil} from '../support/process.js'
import {statePaths} from '../support/state-paths.js'
import {type HostOptions, SshfsPair, faketimeUnavailable, findLibfaketime, needOrSkip, signalGroup, sshfsUnavailable, startOnHost} from '../support/shared-fs.js'

const MODEL = 'acme/team-model'
const MiB = 1024 * 1024
const BIG = 'model.safetensors'
const FILES = [
  {path: BIG, size: 12 * MiB + 17},
  {path: 'config.json', content: '{"layers": 2}\n'},
]
const MODEL_BYTES = 12 * MiB + 17 + 14
/** Over the size from which partials are written with O_DIRECT (which FUSE may refuse or take). */
const LARGE = 'acme/large-model'
/** Staleness for these tests: a beat every 0.8 s, confirmation 2.3 s (see lock-staleness.ts). */
const STALE_MS = 4000
const BEAT_MS = 800
/** sshfs (SFTP v3) stamps whole seconds. */
const MTIME_GRANULARITY_MS = 1000

/**
 * A model cache shared by two hosts over a real network filesystem: one directory exported by sshd
 * on 127.0.0.1 and mounted twice with sshfs (each mount its own attribute cache, mtimes set by the
 * server), each "host" a CLI with its own host name and pid namespace (unshare). What must hold:
 * the model crosses the network once; a crashed host's lock is taken over after the staleness and
 * its partial resumed; a live lock is never taken, whatever the clocks of the hosts say; a host
 * that lost its lock writes nothing more.
 */
describe('a cache shared by two hosts over a network filesystem (sshfs, unshare)', function () {
  this.timeout(120_000)
  let pair: SshfsPair
  let root: string
  let emu: HubEmulator
  let n = 0
  let modelName: string
  const running: RunningCli[] = []

  before(async function () {
    needOrSkip(this, await sshfsUnavailable())
    root = await makeTmpDir('msr-sshfs-')
    pair = await SshfsPair.start(root)
  })
  after(async () => {
    await pair?.stop()
    if (root) await fs.rm(root, {recursive: true, force: true})
  })
  beforeEach(async () => {
    emu = await HubEmulator.start({models: [{id: MODEL, files: FILES}, {id: LARGE, files: [{path: 'large.bin', size: 40 * MiB + 3}]}], rateLimitBytesPerSec: 2 * MiB})
    modelName = `m${++n}`
  })
  afterEach(async () => {
    for (const r of running.splice(0)) {
      signalGroup(r.child, 'SIGCONT')
      signalGroup(r.child, 'SIGKILL')
      await r.done
    }
    await emu.stop()
  })

  /** The model directory as seen through host A's mount, host B's, and the server's own disk. */
  const dirOn = (who: 'a' | 'b' | 'server') => path.join(who === 'a' ? pair.mounts[0] : who === 'b' ? pair.mounts[1] : pair.exportDir, modelName)
  const env = (extra: Record<string, string> = {}) => testEnv(root, {MS_RESUME_LOCK_STALE_MS: String(STALE_MS), ...extra})

  function host(who: 'a' | 'b', args: string[], opts: Partial<HostOptions> = {}): RunningCli {
    const run = new RunningCli(startOnHost([...args, '--json'], {hostname: `host-${who}`, env: env(), ...opts}))
    running.push(run)
    return run
  }
  const pull = (who: 'a' | 'b', ...extra: string[]) => ['pull', MODEL, '--endpoint', emu.url, '--local-dir', dirOn(who), '--connections', '1', ...extra]

  async function expectModelOnServer(): Promise<void> {
    for (const f of FILES) expect((await fs.readFile(path.join(dirOn('server'), f.path))).equals(emu.contentOf(MODEL, f.path)), f.path).to.equal(true)
    expect(await fs.readdir(statePaths(dirOn('server')).partials)).to.deep.equal([])
    expect((await fs.readdir(statePaths(dirOn('server')).dir)).filter((e) => e.startsWith('lock')), 'no lock left').to.deep.equal([])
  }

  const contentBytes = () => emu.contentRequests(MODEL).reduce((sum, e) => sum + e.bytesSent, 0)
  const durableOnServer = async () => durablePrefixBytes((await readJournal(dirOn('server')))?.files[BIG])
  const errorCode = (run: RunningCli) => run.events.find((e) => e.type === 'error')?.code

  it('two hosts pull one model at once: it crosses the network once; one waits, naming the other host', async () => {
    const a = host('a', pull('a'))
    const b = host('b', pull('b'))
    const [ra, rb] = await Promise.all([a.done, b.done])
    expect(ra.code, ra.stdout + ra.stderr).to.equal(0)
    expect(rb.code, rb.stdout + rb.stderr).to.equal(0)
    const waits = [a, b].flatMap((r, i) => r.events.filter((e) => e.type === 'waiting-lock').map((e) => ({i, e})))
    expect(waits, 'exactly one host waited').to.have.length(1)
    expect(waits[0].e.holder).to.match(new RegExp(`^pid \\d+ on host-${waits[0].i === 0 ? 'b' : 'a'}\\b`))
    expect(contentBytes(), 'content bytes over the network, both hosts together').to.equal(MODEL_BYTES)
    await expectModelOnServer()
  })

  it('a file written with O_DIRECT through the network mount, then verified in full from the other host, byte-exact', async () => {
    emu.setRateLimit(undefined)
    const a = host('a', ['pull', LARGE, '--endpoint', emu.url, '--local-dir', dirOn('a')])
    const ra = await a.done
    expect(ra.code, ra.stderr).to.equal(0)
    expect((await fs.readFile(path.join(dirOn('server'), 'large.bin'))).equals(emu.contentOf(LARGE, 'large.bin'))).to.equal(true)
    const v = host('b', ['verify', LARGE, '--local-dir', dirOn('b'), '--level', 'full'])
    const rv = await v.done
    expect(rv.code, rv.stderr).to.equal(0)
    expect(JSON.parse(rv.stdout).ok).to.equal(true)
  })

  it('host A crashes (SIGKILL) half-way: host B waits while the lock is fresh, takes over after the staleness, resumes at A\'s durable offset', async () => {
    const a = host('a', pull('a'))
    await waitUntil(async () => (await durableOnServer()) >= 2 * MiB, 'a durable prefix on the server')
    const b = host('b', pull('b'))
    const waiting = await b.waitForEvent((e) => e.type === 'waiting-lock')
    expect(waiting.holder).to.match(/^pid \d+ on host-a\b/)
    await waitUntil(async () => (await durableOnServer()) >= 4 * MiB, 'more progress while B waits')
    expect(b.events.some((e) => e.type === 'start'), 'B never started while A was alive').to.equal(false)
    signalGroup(a.child, 'SIGKILL')
    const killedAt = Date.now()
    await a.done
    const killed = await readJournal(dirOn('server'))
    const offset = durablePrefixBytes(killed!.files[BIG])
    emu.setRateLimit(undefined)
    const logFrom = emu.log.length
    await b.waitForEvent((e) => e.type === 'start', 60_000)
    // The lock is taken only once its heartbeat is older than the staleness by the server's clock:
    // the last beat was at most one beat before the kill, and the server stamps whole seconds.
    expect(Date.now() - killedAt, 'ms from the kill to the takeover').to.be.at.least(STALE_MS - BEAT_MS - MTIME_GRANULARITY_MS)
    const rb = await b.done
    expect(rb.code, rb.stderr).to.equal(0)
    const first = emu.log.slice(logFrom).find((e) => e.content && e.path === BIG)
    expect(offset, 'A left a partial').to.be.greaterThan(0)
    expect(first?.rangeStart, 'B resumed at A\'s durable offset, not at 0').to.equal(offset)
    await expectModelOnServer()
  })

  it('status on host B names the host, process and start of host A\'s lock; once A is dead and the heartbeat old, it says stale', async () => {
    const a = host('a', pull('a'))
    await a.waitForEvent((e) => e.type === 'start')
    const owner = JSON.parse(await fs.readFile(path.join(statePaths(dirOn('server')).lock, 'owner.json'), 'utf8'))
    const status = async () => {
      const s = host('b', ['status', '--local-dir', dirOn('b')])
      const res = await s.done
      expect(res.code, res.stderr).to.equal(0)
      return JSON.parse(res.stdout).models[0]
    }
    const live = await status()
    expect(live.lockedBy).to.equal(`pid ${owner.pid} on host-a (root)`)
    expect(live.lock).to.include({host: 'host-a', pid: owner.pid, user: 'root', stale: false})
    expect(Date.parse(live.lock.since)).to.be.at.most(Date.parse(live.lock.heartbeatAt))
    expect(live.lock.heartbeatAgeMs).to.be.at.most(STALE_MS)
    const human = await new RunningCli(startOnHost(['status', '--local-dir', dirOn('b')], {hostname: 'host-b', env: env()})).done
    expect(human.stdout).to.match(new RegExp(`lock: +held by pid ${owner.pid} on host-a \\(root\\) since ${live.lock.since}`))

    signalGroup(a.child, 'SIGKILL')
    await a.done
    await new Promise((resolve) => setTimeout(resolve, STALE_MS + 2 * MTIME_GRANULARITY_MS))
    const dead = await status()
    expect(dead.lockedBy).to.equal(undefined)
    expect(dead.lock).to.include({host: 'host-a', pid: owner.pid, stale: true})
    expect(dead.lock.heartbeatAgeMs).to.be.greaterThan(STALE_MS)
  })

  describe('clock skew between hosts (libfaketime shifts a CLI\'s clock; the server keeps the real one)', () => {
    let lib: string
    beforeEach(async function () {
      needOrSkip(this, await faketimeUnavailable())
      lib = (await findLibfaketime())!
    })

    it('an observer whose clock runs 1 h ahead never takes over a live lock', async () => {
      // A takes about 12 s, well past B's --lock-wait.
      emu.setRateLimit(1 * MiB)
      const a = host('a', pull('a'))
      await a.waitForEvent((e) => e.type === 'start')
      const b = host('b', pull('b', '--lock-wait', '4'), {faketime: {lib, offset: '+1h'}})
      const rb = await b.done

      expect(rb.code, rb.stderr).to.equal(6)
      expect(errorCode(b)).to.equal('E_LOCKED')
      emu.setRateLimit(undefined)
      expect((await a.done).code).to.equal(0)
      expect(contentBytes(), 'the model crossed the network once').to.equal(MODEL_BYTES)
      await expectModelOnServer()
    })

    it('a crashed holder whose clock ran 1 h ahead is taken over after the staleness, not after an hour', async () => {
      const a = host('a', pull('a'), {faketime: {lib, offset: '+1h'}})
      await waitUntil(async () => (await durableOnServer()) >= 2 * MiB, 'a durable prefix on the server')
      signalGroup(a.child, 'SIGKILL')
      await a.done
      const offset = await durableOnServer()
      emu.setRateLimit(undefined)
      const logFrom = emu.log.length
      const b = host('b', pull('b', '--lock-wait', '30'))
      const rb = await b.done
      expect(rb.code, rb.stderr).to.equal(0)
      expect(emu.log.slice(logFrom).find((e) => e.content && e.path === BIG)?.rangeStart).to.equal(offset)
      await expectModelOnServer()
    })
  })

  describe('a filesystem that lies about mtimes (set by another client)', () => {
    it('a live holder\'s heartbeat set an hour back over and over is not taken over: its counter still moves', async () => {
      emu.setRateLimit(1 * MiB)
      const a = host('a', pull('a'))
      await a.waitForEvent((e) => e.type === 'start')
      const heartbeat = path.join(statePaths(dirOn('b')).lock, 'heartbeat')
      let backdating = true
      const backdater = (async () => {
        while (backdating) {
          const old = new Date(Date.now() - 3_600_000)
          await fs.utimes(heartbeat, old, old).catch(() => {})
          await new Promise((resolve) => setTimeout(resolve, 100))
        }
      })()
      try {
        const b = host('b', pull('b', '--lock-wait', '4'))
        const rb = await b.done
        expect(rb.code, rb.stderr).to.equal(6)
        expect(errorCode(b)).to.equal('E_LOCKED')
      } finally {
        backdating = false
        await backdater
      }
      emu.setRateLimit(undefined)
      expect((await a.done).code).to.equal(0)
      expect(contentBytes()).to.equal(MODEL_BYTES)
    })

    it('a dead holder\'s heartbeat stamped an hour ahead does not make the next pull wait an hour', async () => {
      const a = host('a', pull('a'))
      await waitUntil(async () => (await durableOnServer()) >= 2 * MiB, 'a durable prefix on the server')
      signalGroup(a.child, 'SIGKILL')
      await a.done
      const future = new Date(Date.now() + 3_600_000)
      await fs.utimes(path.join(statePaths(dirOn('b')).lock, 'heartbeat'), future, future)
      const offset = await durableOnServer()
      emu.setRateLimit(undefined)
      const logFrom = emu.log.length
      const b = host('b', pull('b', '--lock-wait', '30'))
      const rb = await b.done
      expect(rb.code, rb.stderr).to.equal(0)
      expect(emu.log.slice(logFrom).find((e) => e.content && e.path === BIG)?.rangeStart).to.equal(offset)
      await expectModelOnServer()
    })
  })

  describe('a host that lost its lock (frozen longer than the staleness, then thawed)', () => {
    /** Host A pulls, is frozen half-way; host B takes over. */
    async function freezeAAndLetBTakeOver(bArgs: string[]): Promise<{a: RunningCli; b: RunningCli}> {
      const a = host('a', pull('a'))
      await waitUntil(async () => (await durableOnServer()) >= 2 * MiB, 'a durable prefix on the server')
      signalGroup(a.child, 'SIGSTOP')
      // Slow enough that B still holds the lock when A is thawed.
      emu.setRateLimit(1 * MiB)
      const b = host('b', bArgs)
      await b.waitForEvent((e: JsonEvent) => e.type === 'start', 60_000)
      return {a, b}
    }

    it('writes no journal after the new holder finished: the journal stays the new holder\'s, no lock is made', async () => {
      const {a, b} = await freezeAAndLetBTakeOver(pull('b'))
      emu.setRateLimit(undefined)
      expect((await b.done).code).to.equal(0)
      const journal = await journalBytes(dirOn('server'))
      signalGroup(a.child, 'SIGCONT')
      const ra = await a.done
      expect(ra.code, ra.stderr).to.equal(6)
      expect(errorCode(a), ra.stdout).to.equal('E_LOCKED')
      expect((await journalBytes(dirOn('server'))).equals(journal), 'journal (snapshot and log) untouched by the host that lost the lock').to.equal(true)
      await expectModelOnServer()
    })

    it('removes nothing of the new holder\'s lock while it runs; the new holder finishes', async () => {
      const {a, b} = await freezeAAndLetBTakeOver(pull('b'))
      const ownerPath = path.join(statePaths(dirOn('server')).lock, 'owner.json')
      const owner = await fs.readFile(ownerPath, 'utf8')
      expect(JSON.parse(owner).host).to.equal('host-b')
      signalGroup(a.child, 'SIGCONT')
      const ra = await a.done
      expect(ra.code, ra.stderr).to.equal(6)
      expect(errorCode(a)).to.equal('E_LOCKED')
      expect(b.exited, 'B still pulling when A gave up').to.equal(false)
      expect(await fs.readFile(ownerPath, 'utf8'), 'B\'s owner record').to.equal(owner)
      emu.setRateLimit(undefined)
      const rb = await b.done
      expect(rb.code, rb.stderr).to.equal(0)
      await expectModelOnServer()
    })
  })

  describe('two containers with one host name sharing a cache (local disk, separate pid namespaces)', () => {
    it('a live holder in the other container is waited for: its pid, absent here, does not make its lock look dead', async () => {
      const dir = path.join(root, `local-${modelName}`)
      const args = (...extra: string[]) => ['pull', MODEL, '--endpoint', emu.url, '--local-dir', dir, '--connections', '1', ...extra]
      // Same host name; A's CLI gets a pid that does not exist in B's fresh namespace.
      emu.setRateLimit(1 * MiB)
      const a = host('a', args(), {hostname: 'same-host', burnPids: 40})
      await a.waitForEvent((e) => e.type === 'start')
      const b = host('b', args('--lock-wait', '3'), {hostname: 'same-host'})
      const rb = await b.done
      expect(rb.code, rb.stderr).to.equal(6)
      expect(errorCode(b)).to.equal('E_LOCKED')
      const holder = /^pid (\d+) on same-host\b/.exec(String(b.events.find((e) => e.type === 'waiting-lock')?.holder))
      expect(Number(holder?.[1]), 'A\'s pid in its namespace, not one in B\'s').to.be.greaterThan(40)
      emu.setRateLimit(undefined)
      expect((await a.done).code).to.equal(0)
      expect(contentBytes(), 'the model crossed the network once').to.equal(MODEL_BYTES)
    })

    it('a holder SIGKILLed in the other container is taken over after the staleness, and its partial resumed', async () => {
      const dir = path.join(root, `local-${modelName}`)
      const args = (...extra: string[]) => ['pull', MODEL, '--endpoint', emu.url, '--local-dir', dir, '--connections', '1', ...extra]
      const a = host('a', args(), {hostname: 'same-host', burnPids: 40})
      await waitUntil(async () => durablePrefixBytes((await readJournal(dir))?.files[BIG]) >= 2 * MiB, 'a durable prefix')
      signalGroup(a.child, 'SIGKILL')
      await a.done
      const offset = durablePrefixBytes((await readJournal(dir))!.files[BIG])
      emu.setRateLimit(undefined)
      const logFrom = emu.log.length
      const b = host('b', args(), {hostname: 'same-host'})
      const rb = await b.done
      expect(rb.code, rb.stderr).to.equal(0)
      expect(b.events.some((e) => e.type === 'waiting-lock'), 'B waited for the heartbeat to go stale').to.equal(true)
      expect(emu.log.slice(logFrom).find((e) => e.content && e.path === BIG)?.rangeStart).to.equal(offset)
    })
  })
})
