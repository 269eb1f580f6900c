import {expect} from 'chai'

import {MsrError} from '../../src/errors.js'
import type {FileOutcome} from '../../src/pull/file-job.js'
import {type PullSummary, SummaryTally, emptySummary} from '../../src/pull/summary.js'

/** The outcomes folded in the files' order, as a pull's pool hands them over. */
function summarize(start: PullSummary, outcomes: Array<FileOutcome | MsrError>, retries: number, elapsedMs: number): PullSummary {
  const tally = new SummaryTally(start)
  outcomes.forEach((o, at) => tally.add(o, at))
  return tally.result(retries, elapsedMs)
}

const outcome = (o: Partial<FileOutcome> & {path: string; size: number}): FileOutcome => ({downloadedBytes: 0, reused: false, repaired: false, ...o})

describe('pull summary: a pure fold of the files\' outcomes', () => {
  const start = emptySummary({modelId: 'o/m', revision: 'master', modelDir: '/m', files: 5, totalBytes: 1000, dryRun: false, endpoint: 'http://hub', failovers: []})

  it('counts downloaded, reused (whole and resumed bytes), repaired and failed files', () => {
    const s = summarize(start, [
      outcome({path: 'a', size: 100, downloadedBytes: 100}),
      outcome({path: 'b', size: 300, downloadedBytes: 120}),
      outcome({path: 'c', size: 200, reused: true}),
      outcome({path: 'd', size: 50, downloadedBytes: 10, repaired: true}),
      new MsrError('E_NETWORK', 'lost', {path: 'e'}),
    ], 7, 1234.4)
    expect(s).to.include({downloadedFiles: 3, reusedFiles: 1, repairedFiles: 1, failedFiles: 1, downloadedBytes: 230, retries: 7, elapsedMs: 1234})
    // b resumed 180 bytes, c was complete, d kept 40 of its bytes.
    expect(s.reusedBytes).to.equal(180 + 200 + 40)
    expect(s.errors).to.deep.equal([{path: 'e', code: 'E_NETWORK', message: 'lost'}])
  })

  it('does not touch the summary it starts from', () => {
    const before = JSON.stringify(start)
    summarize(start, [new MsrError('E_AUTH', 'no', {path: 'x'}), outcome({path: 'y', size: 1, downloadedBytes: 1})], 1, 1)
    expect(JSON.stringify(start)).to.equal(before)
  })

  it('folds outcomes as they arrive, and lists failures in the files\' order, not the order they ended in', () => {
    const tally = new SummaryTally(start)
    expect(tally.firstError()).to.equal(undefined)
    tally.add(new MsrError('E_NETWORK', 'late file', {path: 'f3'}), 3)
    tally.add(outcome({path: 'f2', size: 10, downloadedBytes: 10}), 2)
    tally.add(new MsrError('E_REMOTE', 'early file', {path: 'f0'}), 0)
    tally.add(outcome({path: 'f1', size: 5, reused: true}), 1)
    expect(tally.firstError()?.message).to.equal('early file')
    const s = tally.result(2, 99.6)
    expect(s).to.include({downloadedFiles: 1, reusedFiles: 1, failedFiles: 2, downloadedBytes: 10, reusedBytes: 5, retries: 2, elapsedMs: 100})
    expect(s.errors.map((e) => e.path)).to.deep.equal(['f0', 'f3'])
  })
})
