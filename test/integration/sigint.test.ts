import fs from 'node:fs/promises'
import path from 'node:path'

import {expect} from 'chai'

import {HubEmulator} from '../support/emulator.js'
import {exists, makeTmpDir, runCli, testEnv} from '../support/cli.js'
import {journalClaimsProblems} from '../support/journal-check.js'
import {durablePrefixBytes, readJournal, startJsonCli} from '../support/process.js'
import {statePaths} from '../support/state-paths.js'

const MODEL = 'acme/interrupted'
const MiB = 1024 * 1024
const BIG = 'model.safetensors'
const SIZE = 24 * MiB + 17
const RATE = 4 * MiB
/** The pull checkpoints every 1 s or 8 MiB, whichever comes first: at RATE, 1 s. */
const CHECKPOINT_BYTES = Math.min(8 * MiB, RATE)

/**
 * Ctrl-C (and SIGTERM, which a service manager sends) mid-download: a checkpoint, exit 130
 * [E_INTERRUPTED], and a state the next run resumes from exactly where the journal says.
 */
describe('SIGINT (Ctrl-C) mid-download', function () {
  this.timeout(60_000)
  let emu: HubEmulator
  let home: string
  let dir: string

  beforeEach(async () => {
    emu = await HubEmulator.start({models: [{id: MODEL, files: [{path: BIG, size: SIZE}]}], rateLimitBytesPerSec: RATE})
    home = await makeTmpDir()
    dir = path.join(home, 'out')
  })
  afterEach(async () => {
    await emu.stop()
    await fs.rm(home, {recursive: true, force: true})
  })

  const args = () => ['pull', MODEL, '--endpoint', emu.url, '--local-dir', dir]

  /** The next run, unthrottled: starts at the durable offset the journal held, ends byte-exact. */
  async function resumesAt(heldBytes: number): Promise<void> {
    emu.setRateLimit(undefined)
    const logFrom = emu.log.length
    const res = await runCli(args(), {env: testEnv(home)})
    expect(res.code, res.stderr).to.equal(0)
    expect((await fs.readFile(path.join(dir, BIG))).equals(emu.contentOf(MODEL, BIG))).to.equal(true)
    const reqs = emu.log.slice(logFrom).filter((e) => e.content && e.path === BIG)
    expect(reqs[0].rangeStart, 'the next run resumes at (not before) the durable offset').to.equal(heldBytes)
  }

  for (const signal of ['SIGINT', 'SIGTERM'] as const) {
    it(`${signal}: checkpoint, exit 130 [E_INTERRUPTED], resumable from at least the bytes written before it`, async () => {
      const run = startJsonCli(args(), testEnv(home))
      const progress = await run.waitForEvent((e) => e.type === 'progress' && Number(e.bytesDone) >= 6 * MiB)
      const writtenBefore = Math.max(...run.events.filter((e) => e.type === 'progress').map((e) => Number(e.bytesDone)), Number(progress.bytesDone))
      const sentAt = Date.now()
      const res = await run.kill(signal)
      expect(res.code, res.stderr).to.equal(130)
      expect(Date.now() - sentAt, 'exits promptly').to.be.lessThan(5000)
      expect(run.events.find((e) => e.type === 'error')?.code).to.equal('E_INTERRUPTED')
      expect(await exists(path.join(dir, BIG)), 'nothing at the final path').to.equal(false)
      expect((await journalClaimsProblems(dir)).problems).to.deep.equal([])
      const held = durablePrefixBytes((await readJournal(dir))?.files[BIG])
      expect(held, `durable at exit vs ${writtenBefore} written before the signal`).to.be.at.least(writtenBefore - CHECKPOINT_BYTES)
      // Stricter, and what the pull does: the checkpoint taken on the signal covers every completed write.
      expect(held, 'the checkpoint on the signal covers every write reported before it').to.be.at.least(writtenBefore)
      expect(held).to.be.lessThan(SIZE)
      await fs.access(statePaths(dir).lock).then(() => expect.fail('lock left behind'), () => {})
      await resumesAt(held)
    })
  }

  it('a second Ctrl-C exits at once (130); the journal is still whole and honest, and the next run resumes', async () => {
    const run = startJsonCli(args(), testEnv(home))
    // Past one checkpoint (every 1 s or 8 MiB), so there is a journal for the hard exit to leave whole.
    await run.waitForEvent((e) => e.type === 'progress' && Number(e.bytesDone) >= CHECKPOINT_BYTES + 2 * MiB)
    run.child.kill('SIGINT')
    run.child.kill('SIGINT')
    const res = await run.done
    expect(res.code, res.stderr).to.equal(130)
    expect((await readJournal(dir))?.version).to.equal(1)
    expect((await journalClaimsProblems(dir)).problems).to.deep.equal([])
    await resumesAt(durablePrefixBytes((await readJournal(dir))?.files[BIG]))
  })
})
