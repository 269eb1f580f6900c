import fs from 'node:fs/promises'
import path from 'node:path'

import {expect} from 'chai'

import {HubEmulator} from '../support/emulator.js'
import {exists, makeTmpDir, runCli, testEnv} from '../support/cli.js'
import {journalClaimsProblems} from '../support/journal-check.js'
import {bindReadOnly, durablePrefixBytes, journalBytes, mountTmpfs, pullAndKillWhen, readJournal, skipBecause, startJsonCli, unmount, waitUntil} from '../support/process.js'

const MODEL = 'acme/disk'
const MiB = 1024 * 1024
const BIG = 'model.safetensors'
const SIZE = 16 * MiB + 321

/** Fills the filesystem holding `file` until the kernel says ENOSPC; returns the bytes written. */
async function fillDisk(file: string): Promise<number> {
  const fh = await fs.open(file, 'w')
  let written = 0
  try {
    for (const block of [MiB, 64 * 1024, 4096, 512, 1]) {
      const buf = Buffer.alloc(block, 0xee)
      for (;;) {
        try {
          await fh.write(buf, 0, block, written)
          written += block
        } catch (error) {
          if ((error as NodeJS.ErrnoException).code !== 'ENOSPC') throw error
          break
        }
      }
    }
    await fh.sync()
  } finally {
    await fh.close()
  }
  return written
}

/**
 * A full disk and a read-only target, on real (tmpfs) filesystems mounted for the test. Root and
 * mount permission are needed; without them the tests are skipped with the reason.
 */
describe('disk faults: ENOSPC and a read-only target', function () {
  this.timeout(60_000)
  let emu: HubEmulator
  let home: string
  let mnt: string
  let mounted: string[] = []

  beforeEach(async () => {
    emu = await HubEmulator.start({models: [{id: MODEL, files: [{path: BIG, size: SIZE}, {path: 'config.json', content: '{}\n'}]}]})
    home = await makeTmpDir()
    mnt = path.join(home, 'mnt')
    mounted = []
  })
  afterEach(async () => {
    for (const m of mounted.reverse()) await unmount(m)
    await emu.stop()
    await fs.rm(home, {recursive: true, force: true})
  })

  async function mount(dir: string, options: string, ctx: Mocha.Context): Promise<void> {
    const reason = await mountTmpfs(dir, options)
    if (reason) skipBecause(ctx, reason)
    mounted.push(dir)
  }

  it('ENOSPC up front: listed sizes do not fit; exit 6 [E_DISK_FULL] before any content request', async function () {
    await mount(mnt, 'size=8m', this)
    const dir = path.join(mnt, 'out')
    const res = await runCli(['pull', MODEL, '--endpoint', emu.url, '--local-dir', dir, '--json'], {env: testEnv(home)})
    expect(res.code, res.stderr).to.equal(6)
    expect(res.stdout).to.contain('"code":"E_DISK_FULL"')
    expect(emu.contentRequests(MODEL)).to.have.length(0)
    expect(await exists(path.join(dir, BIG))).to.equal(false)
  })

  it('ENOSPC mid-download: stops cleanly (exit 6 [E_DISK_FULL], journal honest), resumes once space is freed', async function () {
    await mount(mnt, 'size=24m', this)
    const dir = path.join(mnt, 'out')
    emu.setRateLimit(4 * MiB)
    const args = ['pull', MODEL, '--endpoint', emu.url, '--local-dir', dir]
    const run = startJsonCli(args, testEnv(home))
    // Past the up-front check and a checkpoint or two: now the disk fills up under the pull.
    await waitUntil(async () => durablePrefixBytes((await readJournal(dir))?.files[BIG]) >= 2 * MiB, 'two durable chunks')
    const ballast = path.join(mnt, 'ballast')
    await fillDisk(ballast)
    const res = await run.done
    expect(res.code, res.stderr).to.equal(6)
    expect(run.events.find((e) => e.type === 'error')?.code).to.equal('E_DISK_FULL')
    expect(await exists(path.join(dir, BIG)), 'nothing at the final path').to.equal(false)
    expect((await journalClaimsProblems(dir)).problems).to.deep.equal([])
    const held = durablePrefixBytes((await readJournal(dir))?.files[BIG])
    expect(held, 'the journal kept its durable prefix').to.be.at.least(2 * MiB)

    await fs.rm(ballast)
    emu.setRateLimit(undefined)
    const logFrom = emu.log.length
    const again = await runCli(args, {env: testEnv(home)})
    expect(again.code, again.stderr).to.equal(0)
    expect((await fs.readFile(path.join(dir, BIG))).equals(emu.contentOf(MODEL, BIG))).to.equal(true)
    const reqs = emu.log.slice(logFrom).filter((e) => e.content && e.path === BIG)
    expect(reqs[0].rangeStart, 'resumed at the durable prefix, not from 0').to.equal(held)
  })

  it('read-only target (read-only filesystem): exit 6 [E_PERMISSION] before any content request', async function () {
    await mount(mnt, 'ro,size=1m', this)
    const dir = path.join(mnt, 'out')
    const res = await runCli(['pull', MODEL, '--endpoint', emu.url, '--local-dir', dir, '--json'], {env: testEnv(home)})
    expect(res.code, res.stderr).to.equal(6)
    expect(res.stdout).to.contain('"code":"E_PERMISSION"')
    expect(emu.contentRequests(MODEL)).to.have.length(0)
  })

  it('read-only target with a partial pull in it: exit 6 [E_PERMISSION], nothing fetched or changed; resumes once writable', async function () {
    await mount(mnt, 'size=64m', this)
    const dir = path.join(mnt, 'out')
    const args = ['pull', MODEL, '--endpoint', emu.url, '--local-dir', dir]
    emu.setRateLimit(4 * MiB)
    const before = await pullAndKillWhen(args, testEnv(home), dir, (doc) => durablePrefixBytes(doc.files[BIG]) >= 2 * MiB)
    emu.setRateLimit(undefined)
    const journalBefore = await journalBytes(dir)
    const reason = await bindReadOnly(dir)
    if (reason) skipBecause(this, reason)
    mounted.push(dir)
    const logFrom = emu.log.length
    const res = await runCli([...args, '--json'], {env: testEnv(home)})
    expect(res.code, res.stderr).to.equal(6)
    expect(res.stdout).to.contain('"code":"E_PERMISSION"')
    expect(emu.log.slice(logFrom).filter((e) => e.content)).to.have.length(0)
    expect((await journalBytes(dir)).equals(journalBefore), 'the journal (snapshot and log) unchanged').to.equal(true)

    await unmount(dir)
    mounted.pop()
    const again = await runCli(args, {env: testEnv(home)})
    expect(again.code, again.stderr).to.equal(0)
    expect((await fs.readFile(path.join(dir, BIG))).equals(emu.contentOf(MODEL, BIG))).to.equal(true)
    const first = emu.log.slice(logFrom).find((e) => e.content && e.path === BIG)
    expect(first?.rangeStart).to.equal(durablePrefixBytes(before.files[BIG]))
  })
})
