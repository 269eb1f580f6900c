import {expect} from 'chai'
import stringWidth from 'string-width'

import {liveLines} from '../../src/ui/live-view.js'
import {ProgressState} from '../../src/ui/progress-state.js'
import {RateMeter} from '../../src/ui/rate-meter.js'
import {outputMode} from '../../src/ui/reporter.js'

const MiB = 1024 * 1024

describe('output mode', () => {
  const env = {} as NodeJS.ProcessEnv
  it('live view only on a terminal with columns, outside CI, not dumb', () => {
    expect(outputMode({}, {isTTY: true, columns: 80}, env)).to.equal('tty')
    expect(outputMode({}, {isTTY: true, columns: 0}, env)).to.equal('plain') // ora would loop
    expect(outputMode({}, {isTTY: true}, env)).to.equal('plain')
    expect(outputMode({}, {isTTY: false, columns: 80}, env)).to.equal('plain')
    expect(outputMode({}, {isTTY: true, columns: 80}, {CI: 'true'})).to.equal('plain')
    expect(outputMode({}, {isTTY: true, columns: 80}, {TERM: 'dumb'})).to.equal('plain')
    expect(outputMode({json: true, quiet: true}, {isTTY: true, columns: 80}, env)).to.equal('json')
    expect(outputMode({quiet: true}, {isTTY: true, columns: 80}, env)).to.equal('quiet')
  })
})

describe('progress bookkeeping', () => {
  it('speed over a window, no ETA before a second of data, ETA from what is left', () => {
    const meter = new RateMeter(5000)
    meter.add(MiB, 0)
    expect(meter.warm(500)).to.equal(false)
    for (let t = 100; t <= 2000; t += 100) meter.add(MiB, t)
    expect(meter.warm(2000)).to.equal(true)
    expect(meter.bytesPerSec(2000)).to.be.closeTo(10.5 * MiB, 0.6 * MiB)
    // Nothing for longer than the window: the speed is 0, not the average since the start.
    expect(meter.bytesPerSec(9000)).to.equal(0)
  })

  it('folds events into files done, bytes done (reused included) and network bytes', () => {
    const s = new ProgressState(0)
    s.apply({type: 'start', modelId: 'a/b', revision: 'master', endpoint: 'x', modelDir: '/m', files: 3, totalBytes: 30 * MiB, toDownloadBytes: 20 * MiB}, 0)
    s.apply({type: 'file-done', path: 'reused', size: 10 * MiB, downloadedBytes: 0, reused: true, sha256: ''}, 0)
    s.apply({type: 'file-start', path: 'a', size: 10 * MiB, offsetBytes: 4 * MiB}, 0)
    s.apply({type: 'progress', path: 'a', bytesDone: 6 * MiB, size: 10 * MiB, receivedBytes: 2 * MiB}, 1500)
    // A restarted download counts its bytes again from 0.
    s.apply({type: 'file-start', path: 'a', size: 10 * MiB, offsetBytes: 0}, 1600)
    s.apply({type: 'progress', path: 'a', bytesDone: MiB, size: 10 * MiB, receivedBytes: MiB}, 1700)
    const o = s.overall(2000)
    expect(o).to.include({files: 3, filesDone: 1, totalBytes: 30 * MiB, bytesDone: 11 * MiB})
    expect(s.receivedBytes).to.equal(3 * MiB)
    expect(s.activeFiles(2000).map((f) => f.path)).to.deep.equal(['a'])
  })
})

describe('live view lines', () => {
  const overall = {files: 9, filesDone: 2, filesFailed: 0, totalBytes: 10 * 1024 * MiB, bytesDone: 3 * 1024 * MiB, bytesPerSec: 25 * MiB, etaMs: 280_000, retries: 0, elapsedMs: 1000}
  const files = [
    {path: 'model-00001-of-00004.safetensors', size: 4 * 1024 * MiB, bytesDone: 3.1 * 1024 * MiB, bytesPerSec: 12 * MiB, etaMs: 75_000},
    {path: '深度/模型/权重-第二部分-非常非常长的名字.safetensors', size: 4 * 1024 * MiB, bytesDone: 0, bytesPerSec: 0},
  ]

  for (const columns of [10, 20, 40, 80, 200]) {
    it(`are narrower than ${columns} columns, wide characters counted`, () => {
      const lines = liveLines(files, overall, {columns, maxFileRows: 8, unicode: true})
      expect(lines).to.have.length(3)
      for (const l of lines) expect(stringWidth(l), l).to.be.lessThan(columns)
    })
  }

  it('show name, bytes in binary units, percent, speed and ETA; summarise files beyond the rows', () => {
    const lines = liveLines([...files, {...files[0], path: 'third'}], overall, {columns: 120, maxFileRows: 2, unicode: false})
    expect(lines[0]).to.contain('model-00001-of-00004.safetensors').and.to.contain('3.1 GiB / 4.0 GiB').and.to.contain('77%').and.to.contain('12.0 MiB/s').and.to.match(/ETA 1m/)
    expect(lines[1]).to.contain('ETA --')
    expect(lines[2]).to.match(/1 more/)
    expect(lines[3]).to.contain('2/9 files').and.to.contain('3.0 GiB / 10.0 GiB').and.to.contain('30%')
  })
})
