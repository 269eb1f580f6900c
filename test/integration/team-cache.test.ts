import {execFile} from 'node:child_process'
import fs from 'node:fs/promises'
import path from 'node:path'
import {promisify} from 'node:util'

import {expect} from 'chai'

import {HubEmulator} from '../support/emulator.js'
import {type CliResult, makeTmpDir, runCli, testEnv} from '../support/cli.js'
import {RunningCli, bindReadOnly, durablePrefixBytes, readJournal, unmount, waitUntil} from '../support/process.js'
import {statePaths} from '../support/state-paths.js'
import {ensureTeam, needOrSkip, signalGroup, startAs} from '../support/shared-fs.js'

const exec = promisify(execFile)
const MODEL = 'acme/team-model'
const MiB = 1024 * 1024
const BIG = 'model.safetensors'
const FILES = [
  {path: BIG, size: 10 * MiB + 3},
  {path: 'config.json', content: '{"layers": 2}\n'},
  {path: 'tokenizer.json', size: 200_000},
]
const GROUP = 'msr-team'
const ALICE = 'msr-alice'
const BOB = 'msr-bob'
/** Not in the group: may read the cache, not write it. */
const CAROL = 'msr-carol'

/** Every entry below `dir` with its type, mode, owner group, size, mtime and (for files) content. */
async function snapshot(dir: string): Promise<Record<string, string>> {
  const out: Record<string, string> = {}
  const walk = async (rel: string): Promise<void> => {
    for (const entry of await fs.readdir(path.join(dir, rel), {withFileTypes: true})) {
      const p = path.join(rel, entry.name)
      const stat = await fs.lstat(path.join(dir, p))
      out[p] = `${stat.mode.toString(8)}:${stat.gid}:${stat.size}:${stat.mtimeMs}${stat.isFile() ? `:${(await fs.readFile(path.join(dir, p))).toString('base64').slice(0, 64)}` : ''}`
      if (entry.isDirectory()) await walk(p)
    }
  }
  await walk('')
  return out
}

/** The error is one line (`ms-resume: ... [CODE]`, then its hint), no stack trace. */
function expectOneLineError(stderr: string, code: string): void {
  const errors = stderr.split('\n').filter((l) => l.startsWith('ms-resume:'))
  expect(errors, stderr).to.have.length(1)
  expect(errors[0]).to.match(new RegExp(`\\[${code}\\]$`))
  expect(stderr, 'no stack trace').not.to.match(/^\s+at /m)
}

/**
 * A team cache: one directory, setgid 2775 and of group `team`, used by several people at umask 002;
 * and readers who cannot write (someone outside the group, a read-only mount). Real users
 * (useradd, runuser) on a real filesystem: nobody chmods anything by hand.
 */
describe('a cache shared by a team (group, setgid, umask 002) and read by people who cannot write', function () {
  this.timeout(120_000)
  let emu: HubEmulator
  let root: string
  let cache: string
  let env: NodeJS.ProcessEnv
  let teamGid: number
  const running: RunningCli[] = []

  before(async function () {
    needOrSkip(this, await ensureTeam(GROUP, [ALICE, BOB], CAROL))
    teamGid = Number((await exec('getent', ['group', GROUP])).stdout.split(':')[2])
  })
  beforeEach(async () => {
    emu = await HubEmulator.start({models: [{id: MODEL, files: FILES}], rateLimitBytesPerSec: 2 * MiB})
    root = await makeTmpDir('msr-team-')
    await fs.chmod(root, 0o755)
    const home = path.join(root, 'home')
    await fs.mkdir(home, {mode: 0o1777})
    await fs.chmod(home, 0o1777)
    cache = path.join(root, 'cache')
    await fs.mkdir(cache)
    await fs.chown(cache, 0, teamGid)
    await fs.chmod(cache, 0o2775)
    env = testEnv(home, {MODELSCOPE_CACHE: cache})
  })
  afterEach(async () => {
    for (const r of running.splice(0)) {
      signalGroup(r.child, 'SIGKILL')
      await r.done
    }
    await emu.stop()
    await fs.rm(root, {recursive: true, force: true})
  })

  const modelDir = () => path.join(cache, 'models', 'acme', 'team-model')
  const state = () => statePaths(modelDir())
  function as(user: string, args: string[], umask = '002'): RunningCli {
    const run = new RunningCli(startAs(user, umask, args, env))
    running.push(run)
    return run
  }
  const pullArgs = (...extra: string[]) => ['pull', MODEL, '--endpoint', emu.url, ...extra]
  const ok = (res: CliResult) => expect(res.code, `${res.stdout}\n${res.stderr}`).to.equal(0)

  async function expectModelExact(): Promise<void> {
    for (const f of FILES) expect((await fs.readFile(path.join(modelDir(), f.path))).equals(emu.contentOf(MODEL, f.path)), f.path).to.equal(true)
  }

  async function expectGroupShared(rel: string, want: number): Promise<void> {
    const stat = await fs.stat(rel === '' ? state().dir : path.join(state().dir, rel))
    expect(stat.mode & 0o7777, `${rel} mode`).to.equal(want)
    expect(stat.gid, `${rel} group`).to.equal(teamGid)
  }

  it('alice is interrupted; bob resumes her partial; alice then finds the model complete; verify and status work for both, and for carol who cannot write', async () => {
    // alice, killed half-way (her lock stays behind, as after a crash).
    const alice = as(ALICE, pullArgs('--json'))
    await waitUntil(async () => durablePrefixBytes((await readJournal(modelDir()))?.files[BIG]) >= 2 * MiB, 'alice\'s durable prefix')
    signalGroup(alice.child, 'SIGKILL')
    await alice.done
    const offset = durablePrefixBytes((await readJournal(modelDir()))!.files[BIG])

    // Everything alice made follows the directory's group and her umask: no 0700, no 0600.
    await expectGroupShared('', 0o2775)
    await expectGroupShared(path.basename(state().partials), 0o2775)
    await expectGroupShared(path.basename(state().journal), 0o664)
    await expectGroupShared('lock', 0o2775)
    await expectGroupShared('lock/owner.json', 0o664)
    const [partial] = await fs.readdir(state().partials)
    await expectGroupShared(path.relative(state().dir, state().partial(partial)), 0o664)

    // carol cannot write here: her pull says so at once, in one line, and fetches nothing.
    const before = await snapshot(cache)
    const logFrom = emu.log.length
    const carolPull = await as(CAROL, pullArgs(), '022').done
    expect(carolPull.code, carolPull.stderr).to.equal(6)
    expectOneLineError(carolPull.stderr, 'E_PERMISSION')
    expect(carolPull.stderr).to.contain('(no write permission)').and.to.contain('1 of 3 files (10.0 MiB) still need to be fetched')
    expect(emu.log.slice(logFrom).filter((e) => e.content)).to.have.length(0)
    expect(await snapshot(cache), 'carol changed nothing').to.deep.equal(before)

    // bob takes over alice's dead lock and resumes her partial where its durable prefix ends.
    emu.setRateLimit(undefined)
    const bob = await as(BOB, pullArgs('--json')).done
    ok(bob)
    const firstBig = emu.log.slice(logFrom).find((e) => e.content && e.path === BIG)
    expect(offset).to.be.greaterThan(0)
    expect(firstBig?.rangeStart, 'bob resumed alice\'s partial').to.equal(offset)
    await expectModelExact()
    await expectGroupShared(path.basename(state().manifest), 0o664)
    await expectGroupShared(path.basename(state().journal), 0o664)

    // alice again: complete, nothing fetched.
    const fetchedBefore = emu.contentRequests(MODEL).length
    const again = await as(ALICE, pullArgs('--json')).done
    ok(again)
    expect(emu.contentRequests(MODEL).length, 'alice fetched nothing').to.equal(fetchedBefore)
    expect(JSON.parse(again.stdout.trim().split('\n').at(-1)!)).to.include({type: 'summary', downloadedBytes: 0})

    for (const user of [ALICE, BOB, CAROL]) {
      const verify = await as(user, ['verify', MODEL, '--json'], user === CAROL ? '022' : '002').done
      ok(verify)
      expect(JSON.parse(verify.stdout).ok, `verify as ${user}`).to.equal(true)
      const status = await as(user, ['status', MODEL, '--json'], user === CAROL ? '022' : '002').done
      ok(status)
      expect(JSON.parse(status.stdout).models[0], `status as ${user}`).to.include({complete: true, journal: 'ok'})
    }

    // carol's pull of the complete model succeeds without writing a thing (she could not).
    const snap = await snapshot(cache)
    const carolAgain = await as(CAROL, pullArgs('--json'), '022').done
    ok(carolAgain)
    expect(JSON.parse(carolAgain.stdout.trim().split('\n').at(-1)!)).to.include({type: 'summary', downloadedBytes: 0, reusedFiles: FILES.length})
    expect(emu.contentRequests(MODEL).length).to.equal(fetchedBefore)
    expect(await snapshot(cache)).to.deep.equal(snap)
  })

  it('a read-only mount: pulling a complete model succeeds without writing (no lock, no journal write); verify and status work; a pull that needs a new file stops at once (exit 6)', async function () {
    emu.setRateLimit(undefined)
    const dir = path.join(root, 'ro')
    ok(await runCli(pullArgs('--local-dir', dir, '--exclude', 'tokenizer.json', '--quiet'), {env}))
    needOrSkip(this, await bindReadOnly(dir))
    try {
      const logFrom = emu.log.length
      const snap = await snapshot(dir)
      const res = await runCli(pullArgs('--local-dir', dir, '--exclude', 'tokenizer.json', '--json'), {env})
      ok(res)
      expect(JSON.parse(res.stdout.trim().split('\n').at(-1)!)).to.include({type: 'summary', downloadedBytes: 0, reusedFiles: 2})
      const full = await runCli(pullArgs('--local-dir', dir, '--exclude', 'tokenizer.json', '--check', 'full', '--json'), {env})
      ok(full)
      ok(await runCli(['verify', MODEL, '--local-dir', dir], {env}))
      const status = await runCli(['status', '--local-dir', dir, '--json'], {env})
      ok(status)
      expect(JSON.parse(status.stdout).models[0]).to.include({complete: true})

      const more = await runCli(pullArgs('--local-dir', dir), {env})
      expect(more.code, more.stderr).to.equal(6)
      expectOneLineError(more.stderr, 'E_PERMISSION')
      expect(more.stderr).to.contain('(a read-only filesystem)').and.to.contain('1 of 3 files')
      expect(emu.log.slice(logFrom).filter((e) => e.content)).to.have.length(0)
      expect(await snapshot(dir)).to.deep.equal(snap)
    } finally {
      await unmount(dir)
    }
  })
})
