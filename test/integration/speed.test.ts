import fs from 'node:fs/promises'
import path from 'node:path'

import {expect} from 'chai'

import {HubEmulator, type LogEntry} from '../support/emulator.js'
import {makeTmpDir, runCli, testEnv} from '../support/cli.js'

const MODEL = 'acme/fast'
const MiB = 1024 * 1024

function maxConcurrent(reqs: LogEntry[]): number {
  return Math.max(...reqs.map((r) => reqs.filter((o) => o.t <= r.t && (o.tEnd ?? Number.POSITIVE_INFINITY) > r.t).length))
}

/** Merged [start, end] byte intervals the requests asked for. */
function union(reqs: LogEntry[], size: number): Array<[number, number]> {
  const spans = reqs.map((r) => [r.rangeStart ?? 0, r.rangeEnd ?? size - 1] as [number, number]).sort((a, b) => a[0] - b[0])
  const out: Array<[number, number]> = []
  for (const [a, b] of spans) {
    const last = out.at(-1)
    if (last && a <= last[1] + 1) last[1] = Math.max(last[1], b)
    else out.push([a, b])
  }
  return out
}

describe('segmented downloads and the speed cap', function () {
  this.timeout(120_000)
  let emu: HubEmulator
  let home: string

  afterEach(async () => {
    await emu?.stop()
    await fs.rm(home, {recursive: true, force: true})
  })

  it('--connections 4 against a rate-limited hub: parallel ranges that cover the file once, byte-exact', async () => {
    const size = 40 * MiB + 4321
    emu = await HubEmulator.start({models: [{id: MODEL, files: [{path: 'w.bin', size}]}], rateLimitBytesPerSec: 6 * MiB})
    home = await makeTmpDir()
    const dir = path.join(home, 'out')
    const res = await runCli(['pull', MODEL, '--endpoint', emu.url, '--local-dir', dir, '--connections', '4'], {env: testEnv(home)})
    expect(res.code, res.stderr).to.equal(0)
    expect((await fs.readFile(path.join(dir, 'w.bin'))).equals(emu.contentOf(MODEL, 'w.bin'))).to.equal(true)
    const reqs = emu.contentRequests(MODEL, 'w.bin')
    expect(maxConcurrent(reqs), 'connections at once').to.equal(4)
    expect(union(reqs, size)).to.deep.equal([[0, size - 1]])
    // Once: what was sent adds up to the file, plus at most what a connection had in flight when an
    // idle one took over the rest of its range (a few chunks), never a second copy of a piece.
    const sent = reqs.reduce((n, r) => n + r.bytesSent, 0)
    expect(sent).to.be.at.least(size).and.below(size + 8 * MiB)
    for (const r of reqs) expect(r.range, 'whole-chunk starts').to.match(/^bytes=\d+-\d+$/)
    for (const r of reqs) expect((r.rangeStart ?? 0) % MiB).to.equal(0)
  })

  it('automatic connections: one on a fast link, several on a throttled one', async () => {
    const size = 72 * MiB
    emu = await HubEmulator.start({models: [{id: MODEL, files: [{path: 'a.bin', size}]}]})
    home = await makeTmpDir()
    let res = await runCli(['pull', MODEL, '--endpoint', emu.url, '--local-dir', path.join(home, 'fast')], {env: testEnv(home)})
    expect(res.code, res.stderr).to.equal(0)
    expect(emu.contentRequests(MODEL, 'a.bin')).to.have.length(1)
    await emu.stop()
    emu = await HubEmulator.start({models: [{id: MODEL, files: [{path: 'a.bin', size}]}], rateLimitBytesPerSec: 8 * MiB})
    res = await runCli(['pull', MODEL, '--endpoint', emu.url, '--local-dir', path.join(home, 'slow')], {env: testEnv(home)})
    expect(res.code, res.stderr).to.equal(0)
    expect((await fs.readFile(path.join(home, 'slow', 'a.bin'))).equals(emu.contentOf(MODEL, 'a.bin'))).to.equal(true)
    expect(maxConcurrent(emu.contentRequests(MODEL, 'a.bin')), 'connections added while slow').to.be.at.least(4)
  })

  it('--max-speed keeps the average rate of all connections within 15% of the cap', async () => {
    const size = 15 * MiB
    const cap = 4 * MiB
    emu = await HubEmulator.start({models: [{id: MODEL, files: [{path: 'x.bin', size: 8 * MiB}, {path: 'y.bin', size: 7 * MiB}]}]})
    home = await makeTmpDir()
    const dir = path.join(home, 'out')
    const res = await runCli(['pull', MODEL, '--endpoint', emu.url, '--local-dir', dir, '--connections', '4', '--max-speed', '4M', '--json'], {env: testEnv(home)})
    expect(res.code, res.stderr).to.equal(0)
    // Measured where the cap applies, at the reader: the hub hands bytes to socket buffers faster.
    const events = res.stdout.trim().split('\n').map((l) => JSON.parse(l) as {type: string; time: string})
    const at = (type: string, pick: (xs: number[]) => number) => pick(events.filter((e) => e.type === type).map((e) => Date.parse(e.time)))
    const seconds = (at('file-done', (xs) => Math.max(...xs)) - at('file-start', (xs) => Math.min(...xs))) / 1000
    expect(seconds, 'a few seconds').to.be.above(2)
    const rate = size / seconds
    expect(rate / cap, `measured ${(rate / MiB).toFixed(2)} MiB/s over ${seconds.toFixed(1)} s`).to.be.within(0.85, 1.15)
    for (const p of ['x.bin', 'y.bin']) expect((await fs.readFile(path.join(dir, p))).equals(emu.contentOf(MODEL, p))).to.equal(true)
  })
})
