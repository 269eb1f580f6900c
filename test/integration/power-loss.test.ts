import fs from 'node:fs/promises'
import path from 'node:path'

import {expect} from 'chai'

import {makeTmpDir, runCli, testEnv} from '../support/cli.js'
import {HubEmulator} from '../support/emulator.js'
import {ForgetfulFs, forgetfulFsUnavailable} from '../support/forgetful-fs.js'
import {journalClaimsProblems} from '../support/journal-check.js'
import {durablePrefixBytes, pullAndKillWhen, readJournal, skipBecause} from '../support/process.js'
import {TRANSPORTS, transport} from '../support/tls.js'

const MODEL = 'acme/power'
const BIG = 'w.bin'
const MiB = 1024 * 1024
const FILES = [
  {path: BIG, size: 6 * MiB + 4321},
  {path: 'config.json', content: '{"hidden_size": 8}\n'},
  ...Array.from({length: 6}, (_, i) => ({path: `small/s${i}.bin`, size: 3000 + i})),
]

/**
 * The blind spot of every SIGKILL test: the page cache survives a kill, so a tool that never
 * fsynced would pass them. Here the model directory is on a FUSE file system that holds file data
 * in memory until fsync/fdatasync (test/support/forgetful_fs.py); the "power cut" kills it, and
 * what is left is what a disk would hold. Whatever the journal still claims then must be on disk,
 * every file it calls complete must be at its final path with its hash, and the next pull must
 * resume from those claims and end byte-exact.
 */
describe('power loss: nothing the journal claims was only in the page cache', function () {
  this.timeout(180_000)
  let emu: HubEmulator | undefined
  let home: string | undefined
  let disk: ForgetfulFs | undefined

  before(async function () {
    const why = await forgetfulFsUnavailable()
    if (why) skipBecause(this, why)
  })

  afterEach(async () => {
    await disk?.powerCut()
    disk = undefined
    await emu?.stop()
    emu = undefined
    if (home) await fs.rm(home, {recursive: true, force: true})
    home = undefined
  })

  for (const kind of TRANSPORTS) {
    const t = transport(kind)

    it(`${kind}: a power cut mid-pull loses only unclaimed bytes; the next pull resumes from the claims and ends byte-exact`, async () => {
      emu = await HubEmulator.start({models: [{id: MODEL, files: FILES}], tls: t.tls, rateLimitBytesPerSec: 2 * MiB})
      home = await makeTmpDir()
      disk = new ForgetfulFs(path.join(home, 'disk'), path.join(home, 'mnt'))
      await disk.mount()
      const dir = path.join(disk.mountPoint, 'out')
      const args = ['pull', MODEL, '--endpoint', emu.url, '--local-dir', dir, '--connections', '1', '--concurrency', '2']
      // Killed once the journal (as seen through the mount, synced or not) claims 2 MiB of the big file.
      await pullAndKillWhen(args, testEnv(home, t.env), dir, (doc) => durablePrefixBytes(doc.files[BIG]) >= 2 * MiB, 60_000)
      await disk.powerCut()
      await disk.mount()

      const survived = await readJournal(dir)
      expect(survived, 'the journal survives the power cut').to.not.equal(undefined)
      const claimed = durablePrefixBytes(survived!.files[BIG])
      // The claims that survived: not zero (else this test would prove nothing), and each on disk.
      expect(claimed, 'the synced journal still claims part of the big file').to.be.greaterThan(0)
      const {problems} = await journalClaimsProblems(dir)
      expect(problems, 'claims that the power cut proved false').to.deep.equal([])
      const completeBefore = Object.values(survived!.files).filter((r) => r.status === 'complete').length
      expect(completeBefore, 'small files completed before the cut').to.be.greaterThan(0)

      const before = emu.contentRequests(MODEL, BIG).length
      emu.setRateLimit(undefined)
      const res = await runCli(args, {env: testEnv(home, t.env)})
      expect(res.code, res.stderr).to.equal(0)
      for (const f of FILES) {
        const onDisk = await fs.readFile(path.join(dir, ...f.path.split('/')))
        expect(onDisk.equals(emu.contentOf(MODEL, f.path)), `${f.path} byte-exact`).to.equal(true)
      }
      expect(emu.contentRequests(MODEL, BIG)[before]?.rangeStart, "the resume starts at the surviving journal's byte").to.equal(claimed)

      // And durable at the end: one more cut after the pull changes nothing.
      await disk.powerCut()
      await disk.mount()
      for (const f of FILES) {
        const onDisk = await fs.readFile(path.join(dir, ...f.path.split('/')))
        expect(onDisk.equals(emu.contentOf(MODEL, f.path)), `${f.path} byte-exact after a cut at the end`).to.equal(true)
      }
      expect((await journalClaimsProblems(dir)).problems).to.deep.equal([])
    })
  }
})
