import fs from 'node:fs/promises'
import path from 'node:path'

import {expect} from 'chai'

import {HubEmulator} from '../support/emulator.js'
import {exists, makeTmpDir, runCli, startCli, testEnv} from '../support/cli.js'
import {journalClaimsProblems} from '../support/journal-check.js'
import {mulberry32} from '../support/process.js'
import {statePaths} from '../support/state-paths.js'

const MODEL = 'acme/killme'
const MiB = 1024 * 1024

describe('pull killed with SIGKILL at random moments', function () {
  const KILLS = Number(process.env.MS_RESUME_SOAK_KILLS ?? 20)
  this.timeout(Math.max(240_000, KILLS * 6000))
  let emu: HubEmulator
  let home: string
  const files = [
    {path: 'a.safetensors', size: 40 * MiB + 1234},
    {path: 'nested/b.bin', size: 40 * MiB},
    {path: 'c.json', size: 2000},
  ]

  before(async () => {
    emu = await HubEmulator.start({models: [{id: MODEL, files}], rateLimitBytesPerSec: 4 * MiB})
    home = await makeTmpDir()
  })
  after(async () => {
    await emu.stop()
    await fs.rm(home, {recursive: true, force: true})
  })

  it(`resumes after ${KILLS} kills from the last checkpoint; nothing wrong ever at a final path`, async () => {
    const dir = path.join(home, 'out')
    const args = ['pull', MODEL, '--endpoint', emu.url, '--local-dir', dir, '--concurrency', '1', '--connections', '1']
    const random = mulberry32(Number(process.env.MS_RESUME_SOAK_SEED ?? 20261128))
    let kills = 0
    let resumedRequests = 0
    for (let run = 0; kills < KILLS && run < KILLS * 3; run++) {
      const before = await journalClaimsProblems(dir)
      const logFrom = emu.log.length
      const child = startCli(args, {env: testEnv(home)})
      let output = ''
      child.stderr!.on('data', (d) => (output += d))
      const delay = 700 + Math.floor(random() * 2500)
      const exited = await new Promise<number | null>((resolve) => {
        const timer = setTimeout(() => {
          child.kill('SIGKILL')
        }, delay)
        child.on('exit', (code) => {
          clearTimeout(timer)
          resolve(code)
        })
      })
      if (exited === 0) break
      kills++
      // After every kill: final paths hold only exact bytes, the journal claims only what is on disk.
      for (const f of files) {
        const p = path.join(dir, f.path)
        if (await exists(p)) expect((await fs.readFile(p)).equals(emu.contentOf(MODEL, f.path)), `${f.path} after kill ${kills}`).to.equal(true)
      }
      const after = await journalClaimsProblems(dir)
      expect(after.problems, `journal after kill ${kills}`).to.deep.equal([])
      // This run's first request for each file started at the durable prefix the journal held before it.
      for (const f of files) {
        const first = emu.log.slice(logFrom).find((e) => e.content && e.path === f.path)
        if (!first) continue
        expect(first.rangeStart, `${f.path} run ${run}: ${output}`).to.equal(before.durablePrefix[f.path] ?? 0)
        if ((first.rangeStart ?? 0) > 0) resumedRequests++
      }
    }
    expect(kills).to.be.at.least(Math.min(KILLS, 10))
    expect(resumedRequests, 'some runs resumed past byte 0').to.be.at.least(3)
    const final = await runCli(args, {env: testEnv(home)})
    expect(final.code, final.stderr).to.equal(0)
    for (const f of files) expect((await fs.readFile(path.join(dir, f.path))).equals(emu.contentOf(MODEL, f.path)), f.path).to.equal(true)
    expect(await fs.readdir(statePaths(dir).partials)).to.deep.equal([])
  })
})
