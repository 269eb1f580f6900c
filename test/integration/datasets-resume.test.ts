import crypto from 'node:crypto'
import fs from 'node:fs/promises'
import path from 'node:path'

import {expect} from 'chai'

import {HubEmulator, datasetKey} from '../support/emulator.js'
import {listFiles, makeTmpDir, runCli, startCli, testEnv} from '../support/cli.js'
import {journalClaimsProblems} from '../support/journal-check.js'
import {readJournal, waitUntil} from '../support/process.js'
import {statePaths} from '../support/state-paths.js'
import {TRANSPORTS, transport} from '../support/tls.js'

const DATASET = 'acme/resume.set'
const KEY = datasetKey(DATASET)
const MiB = 1024 * 1024
const LISTED = 'big/listed.bin'
/** Listed without a SHA-256: resumed all the same, its hash taken from the bytes kept plus the rest. */
const UNLISTED = 'big/size-only.bin'
const FILES = [
  {path: LISTED, size: 24 * MiB + 11},
  {path: UNLISTED, size: 20 * MiB + 5, noSha256: 'absent' as const},
  ...Array.from({length: 300}, (_, i) => ({path: `small/f${i}.txt`, size: 100 + i})),
]
const sha256 = (b: Buffer) => crypto.createHash('sha256').update(b).digest('hex')

for (const kind of TRANSPORTS) {
  describe(`pull --dataset killed with SIGKILL, then resumed (${kind})`, function () {
    this.timeout(180_000)
    const t = transport(kind)
    let emu: HubEmulator
    let home: string

    before(async () => {
      // 4 MiB/s per connection: a kill 1.5 s into the transfer leaves both big files unfinished,
      // past their first checkpoint (every second or 8 MiB).
      emu = await HubEmulator.start({datasets: [{id: DATASET, files: FILES}], rateLimitBytesPerSec: 4 * MiB, tls: t.tls})
      home = await makeTmpDir()
    })
    after(async () => {
      await emu.stop()
      await fs.rm(home, {recursive: true, force: true})
    })

    it('resumes every file where the journal says, fetches no durable byte again, ends byte-exact with the size-only file marked', async () => {
      const dir = path.join(home, 'out')
      const args = ['pull', '--dataset', DATASET, '--endpoint', emu.url, '--local-dir', dir, '--concurrency', '2', '--connections', '1']
      const child = startCli(args, {env: testEnv(home, t.env)})
      const exited = new Promise<number | null>((resolve) => child.on('exit', (c) => resolve(c)))
      // The clock starts at the first content request: start-up time on a busy machine never decides.
      let ended = false
      void exited.then(() => (ended = true))
      await waitUntil(async () => ended || emu.log.some((e) => e.content), 'a content request', 60_000, 10)
      await new Promise((resolve) => setTimeout(resolve, 1500))
      child.kill('SIGKILL')
      expect(await exited, 'killed mid-pull, not finished').to.equal(null)

      expect((await journalClaimsProblems(dir)).problems, 'the journal after the kill').to.deep.equal([])
      const before = (await readJournal(dir))!
      const durable: Record<string, number> = (await journalClaimsProblems(dir)).durablePrefix
      for (const p of [LISTED, UNLISTED]) {
        expect(before.files[p]?.status, p).to.not.equal('complete')
        expect(durable[p], `${p}: bytes kept by the killed run`).to.be.greaterThan(0)
      }
      expect(before.files[UNLISTED].sha256, 'size only in the journal').to.equal('')

      const logFrom = emu.log.length
      const res = await runCli([...args, '--json'], {env: testEnv(home, t.env)})
      expect(res.code, res.stderr).to.equal(0)
      for (const p of [LISTED, UNLISTED]) {
        const reqs = emu.contentRequests(KEY, p).filter((e) => emu.log.indexOf(e) >= logFrom)
        expect(reqs.length, p).to.be.greaterThan(0)
        for (const e of reqs) expect(e.rangeStart ?? 0, `${p}: ${e.range} asks for bytes the journal held`).to.be.at.least(durable[p])
        const resumed = res.stdout.split('\n').filter((l) => l.includes('"resume"')).map((l) => JSON.parse(l)).find((e) => e.path === p)
        expect(resumed?.offsetBytes, `${p} resumed at the durable offset`).to.equal(durable[p])
      }
      expect(await listFiles(dir)).to.have.length(FILES.length + 1)
      for (const f of [...FILES.map((x) => x.path), '.gitattributes']) {
        expect((await fs.readFile(path.join(dir, ...f.split('/')))).equals(emu.contentOf(KEY, f)), f).to.equal(true)
      }
      const manifest = JSON.parse(await fs.readFile(statePaths(dir).manifest, 'utf8'))
      const entry = manifest.files.find((f: {path: string}) => f.path === UNLISTED)
      expect(entry).to.include({sizeOnly: true, sha256: sha256(emu.contentOf(KEY, UNLISTED))})
      expect(await fs.readdir(statePaths(dir).partials)).to.deep.equal([])
    })
  })
}
