import fs from 'node:fs/promises'
import path from 'node:path'

import {expect} from 'chai'

import {HubEmulator, type LogEntry} from '../support/emulator.js'
import {exists, makeTmpDir, runCli, startCli, testEnv} from '../support/cli.js'
import {journalClaimsProblems} from '../support/journal-check.js'
import {durableChunkIndices, mulberry32, readJournal, waitUntil} from '../support/process.js'
import {statePaths} from '../support/state-paths.js'

const MODEL = 'acme/killme-segmented'
const MiB = 1024 * 1024
const BIG = 'model.safetensors'
const SIZE = 64 * MiB + 4321

/** Chunks [first, last] touched by the byte range a request asked for. */
function chunksAsked(entry: LogEntry, chunkSizeBytes: number): [number, number] {
  const start = entry.rangeStart ?? 0
  const end = entry.rangeEnd ?? SIZE - 1
  return [Math.floor(start / chunkSizeBytes), Math.floor(end / chunkSizeBytes)]
}

describe('segmented pull (--connections 4) killed with SIGKILL at random moments', function () {
  this.timeout(120_000)
  let emu: HubEmulator
  let home: string

  before(async () => {
    // Per-connection rate: four connections fetch 12 MiB/s; three kills at most 1.3 s into a run
    // leave the file unfinished, and each run reaches a checkpoint (8 MiB or 1 s) before its kill.
    emu = await HubEmulator.start({models: [{id: MODEL, files: [{path: BIG, size: SIZE}]}], rateLimitBytesPerSec: 3 * MiB})
    home = await makeTmpDir()
  })
  after(async () => {
    await emu.stop()
    await fs.rm(home, {recursive: true, force: true})
  })

  it('never asks again for a chunk the journal held as durable before the run; ends byte-exact', async () => {
    const dir = path.join(home, 'out')
    const args = ['pull', MODEL, '--endpoint', emu.url, '--local-dir', dir, '--concurrency', '1', '--connections', '4']
    const random = mulberry32(Number(process.env.MS_RESUME_SOAK_SEED ?? 64064))
    let kills = 0
    let sawHoles = false
    let keptChunks = 0
    const checkRun = (logFrom: number, durable: number[], chunkSizeBytes: number, label: string) => {
      const reqs = emu.contentRequests(MODEL, BIG).filter((e) => emu.log.indexOf(e) >= logFrom)
      for (const e of reqs) {
        const [first, last] = chunksAsked(e, chunkSizeBytes)
        const again = durable.filter((i) => i >= first && i <= last)
        expect(again, `${label}: ${e.range} asks again for durable chunks`).to.deep.equal([])
      }
      return reqs
    }
    for (let run = 0; kills < 3 && run < 6; run++) {
      const before = (await readJournal(dir))?.files[BIG]
      const durable = durableChunkIndices(before)
      if (durable.length > 0 && durable.at(-1)! + 1 !== durable.length) sawHoles = true
      keptChunks += durable.length
      const logFrom = emu.log.length
      const child = startCli(args, {env: testEnv(home)})
      const exited = new Promise<number | null>((resolve) => child.on('exit', (c) => resolve(c)))
      // The clock starts at this run's first content request, so start-up time on a busy machine
      // never decides whether the kill lands mid-file.
      let ended = false
      const firstRequest = waitUntil(async () => ended || emu.log.slice(logFrom).some((e) => e.content), 'a content request', 30_000, 10)
      const delay = 700 + Math.floor(random() * 600)
      const killAt = firstRequest.then(() => new Promise<'kill'>((resolve) => setTimeout(() => resolve('kill'), delay)))
      const first = await Promise.race([exited, killAt])
      ended = true
      if (first === 'kill') child.kill('SIGKILL')
      const code = await exited
      expect(first === 'kill' || code === 0, `run ${run} ended on its own with code ${code}`).to.equal(true)
      checkRun(logFrom, durable, before?.chunkSizeBytes ?? MiB, `run ${run}`)
      if (code === 0) break
      kills++
      if (await exists(path.join(dir, BIG))) expect((await fs.readFile(path.join(dir, BIG))).equals(emu.contentOf(MODEL, BIG))).to.equal(true)
      expect((await journalClaimsProblems(dir)).problems, `journal after kill ${kills}`).to.deep.equal([])
    }
    expect(kills, 'kills that landed mid-file').to.equal(3)
    expect(keptChunks, 'chunks kept across kills').to.be.greaterThan(0)
    expect(sawHoles, 'a kill left durable chunks after a gap (the segmented case)').to.equal(true)

    const before = (await readJournal(dir))!.files[BIG]
    const durable = durableChunkIndices(before)
    const logFrom = emu.log.length
    const final = await runCli(args, {env: testEnv(home)})
    expect(final.code, final.stderr).to.equal(0)
    expect((await fs.readFile(path.join(dir, BIG))).equals(emu.contentOf(MODEL, BIG))).to.equal(true)
    const reqs = checkRun(logFrom, durable, before.chunkSizeBytes, 'final run')
    const sent = reqs.reduce((n, e) => n + e.bytesSent, 0)
    const missing = SIZE - durable.reduce((n, i) => n + Math.min(before.chunkSizeBytes, SIZE - i * before.chunkSizeBytes), 0)
    // Slack: when an idle connection steals the tail of another, bytes already in flight past the
    // split point arrive twice. A restart of the file from 0 would be far above this.
    expect(sent, 'bytes fetched by the final run').to.be.at.most(missing + 4 * 2 * MiB)
    expect(await fs.readdir(statePaths(dir).partials)).to.deep.equal([])
  })
})
