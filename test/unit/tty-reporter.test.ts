import {setTimeout as sleep} from 'node:timers/promises'

import {expect} from 'chai'
import stringWidth from 'string-width'

import type {PullEvent} from '../../src/events.js'
import type {PullSummary} from '../../src/pull/pull.js'
import {TtyReporter} from '../../src/ui/tty-reporter.js'
import {FakeTty, playTerminal} from '../support/fake-tty.js'

const MiB = 1024 * 1024
const FILES = [
  {path: 'model-00001-of-00002.safetensors', size: 64 * MiB},
  {path: 'model-00002-of-00002.safetensors', size: 48 * MiB},
  {path: '分词器/词表-非常长的文件名-tokenizer.json', size: 3 * MiB},
]
const TOTAL = FILES.reduce((n, f) => n + f.size, 0)

function summary(): PullSummary {
  return {
    modelId: 'acme/m', revision: 'master', modelDir: '/tmp/models/acme/m', files: FILES.length,
    downloadedFiles: FILES.length, reusedFiles: 0, repairedFiles: 0, failedFiles: 0, totalBytes: TOTAL,
    downloadedBytes: TOTAL, reusedBytes: 0, retries: 1, elapsedMs: 1200, dryRun: false, errors: [],
    endpoint: 'http://127.0.0.1:1', failovers: [],
  }
}

/** A whole pull's events over about `durationMs`, progress every 2 ms (far faster than any redraw). */
async function drive(reporter: TtyReporter, durationMs: number): Promise<{startAt: number}> {
  reporter.event({type: 'listing', modelId: 'acme/m', revision: 'master', endpoint: 'http://127.0.0.1:1'})
  await sleep(250)
  reporter.event({type: 'start', modelId: 'acme/m', revision: 'master', endpoint: 'http://127.0.0.1:1', modelDir: '/tmp/models/acme/m', files: FILES.length, totalBytes: TOTAL, toDownloadBytes: TOTAL})
  const startAt = performance.now()
  for (const f of FILES) reporter.event({type: 'file-start', path: f.path, size: f.size, offsetBytes: 0})
  reporter.event({type: 'resume', path: FILES[0].path, offsetBytes: 3 * MiB, size: FILES[0].size})
  const steps = Math.floor(durationMs / 2)
  for (let i = 1; i <= steps; i++) {
    for (const f of FILES) {
      const done = Math.floor((f.size * i) / steps)
      reporter.event({type: 'progress', path: f.path, bytesDone: done, size: f.size, receivedBytes: done})
    }
    if (i === Math.floor(steps / 2)) {
      // A burst of lines must not mean a burst of redraws.
      for (let r = 1; r <= 50; r++) reporter.event({type: 'retry', path: FILES[1].path, attempt: 1, maxRetries: 5, delayMs: 4000, reason: 'connection reset', code: 'E_NETWORK'})
    }
    await sleep(2)
  }
  for (const f of FILES) reporter.event({type: 'file-done', path: f.path, size: f.size, downloadedBytes: f.size, reused: false, sha256: '0'.repeat(64)})
  return {startAt}
}

describe('TtyReporter on a fake terminal', function () {
  this.timeout(20_000)

  for (const columns of [80, 40]) {
    it(`redraws at a bounded rate, keeps the live block narrower than the terminal, ends cleanly (${columns} columns)`, async () => {
      const tty = new FakeTty(columns, 24)
      const frameMs = 100
      const reporter = new TtyReporter(tty, {frameMs})
      const {startAt} = await drive(reporter, 1000)
      const endAt = performance.now()
      reporter.summary(summary())
      reporter.close()

      // Bounded: between start and summary every write is a frame of the timer.
      const live = tty.writes.filter((w) => w.atMs >= startAt && w.atMs < endAt)
      expect(live.length).to.be.at.most(Math.ceil((endAt - startAt) / frameMs) + 2)
      const perWindow = live.map((w) => live.filter((x) => x.atMs >= w.atMs && x.atMs < w.atMs + frameMs / 2).length)
      expect(Math.max(...perWindow)).to.be.at.most(2)
      // ...while thousands of events came in.
      expect(live.length).to.be.lessThan(30)
      // No line of the live block is as wide as the terminal (a wrapped one would throw the erase off).
      for (const w of live) {
        for (const line of w.text.replace(/\u001B\[[\d;?]*[A-Za-z]/g, '').split('\n')) {
          if (/ETA/.test(line)) expect(stringWidth(line), line).to.be.lessThan(columns)
        }
      }

      const out = tty.output
      expect(out.endsWith('\n'), 'ends with a complete line').to.equal(true)
      const screen = playTerminal(out, columns)
      expect(screen.cursorCol).to.equal(0)
      expect(screen.cursorVisible, 'cursor shown again').to.equal(true)
      const text = screen.lines.join('\n')
      // The live block is gone; the lines meant to stay are there.
      expect(text).not.to.match(/[█░]|ETA/)
      expect(screen.lines.filter((l) => /retry 1\/5/.test(l))).to.have.length(50)
      // Rows joined: on 40 columns the lines that stay wrap (they are printed once, never redrawn).
      const joined = screen.lines.join('')
      expect(joined).to.match(/resumed.*3\.0 MiB/)
      expect(joined).to.contain('/tmp/models/acme/m')
      for (const f of FILES) expect(joined, f.path).to.contain(f.path)
      expect(screen.lines[screen.lines.length - 1]).to.equal('')
    })
  }

  it('shows the live block while it runs: every active file and the overall line, sizes in binary units', async () => {
    const tty = new FakeTty(120, 30)
    const reporter = new TtyReporter(tty, {frameMs: 50})
    reporter.event({type: 'start', modelId: 'acme/m', revision: 'master', endpoint: 'x', modelDir: '/m', files: 3, totalBytes: TOTAL, toDownloadBytes: TOTAL})
    for (const f of FILES) reporter.event({type: 'file-start', path: f.path, size: f.size, offsetBytes: 0})
    reporter.event({type: 'progress', path: FILES[0].path, bytesDone: 32 * MiB, size: FILES[0].size, receivedBytes: 32 * MiB})
    await sleep(120)
    const screen = playTerminal(tty.output, 120)
    reporter.close()
    const block = screen.lines.filter((l) => /ETA/.test(l))
    expect(block).to.have.length(FILES.length + 1)
    expect(block[0]).to.contain(FILES[0].path).and.to.contain('32.0 MiB / 64.0 MiB').and.to.contain('50%')
    expect(block[block.length - 1]).to.match(/0\/3 files/)
    expect(screen.cursorVisible).to.equal(false)
    expect(playTerminal(tty.output, 120).cursorVisible).to.equal(true)
  })

  it('a failure without a summary still leaves a clean screen', async () => {
    const tty = new FakeTty(80, 24)
    const reporter = new TtyReporter(tty, {frameMs: 50})
    reporter.event({type: 'listing', modelId: 'acme/m', revision: 'master', endpoint: 'x'})
    await sleep(120)
    reporter.close()
    const screen = playTerminal(tty.output, 80)
    expect(screen.lines.join('')).to.equal('')
    expect(screen.cursorVisible).to.equal(true)
    expect(screen.cursorCol).to.equal(0)
  })
})
