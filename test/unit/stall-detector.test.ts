import {expect} from 'chai'

import {type Stall, StallDetector} from '../../src/transfer/stall-detector.js'

describe('stall-detector: a dead link, but not our own waits', function () {
  let now = 0
  const clock = () => now
  const wait = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms))

  beforeEach(() => {
    now = 0
  })

  it('no byte for idleMs: idle', async () => {
    const stalls: Stall[] = []
    const d = new StallDetector({idleMs: 40, minBytesPerSec: 0, now: clock}, (s) => stalls.push(s))
    await wait(80)
    expect(stalls).to.deep.equal([{kind: 'idle', idleMs: 40}])
    d.stop()
  })

  it('a hold (rate limit, disk) longer than idleMs is not a stall; the clock restarts on release', async () => {
    const stalls: Stall[] = []
    const d = new StallDetector({idleMs: 40, minBytesPerSec: 0, now: clock}, (s) => stalls.push(s))
    d.hold()
    await wait(100)
    expect(stalls).to.deep.equal([])
    d.release()
    await wait(20)
    d.received(10)
    await wait(20)
    expect(stalls).to.deep.equal([])
    await wait(60)
    expect(stalls.map((s) => s.kind)).to.deep.equal(['idle'])
    d.stop()
  })

  it('slower than minBytesPerSec over an active window: slow; held time does not count in the window', () => {
    const stalls: Stall[] = []
    const d = new StallDetector({idleMs: 1000, minBytesPerSec: 1000, now: clock}, (s) => stalls.push(s))
    // 5 s held: the window is still young, a trickle before it is not judged yet.
    d.received(100)
    now = 500
    d.hold()
    now = 5500
    d.release()
    d.received(100)
    expect(stalls).to.deep.equal([])
    now = 6100
    d.received(100)
    expect(stalls).to.have.length(1)
    expect(stalls[0].kind).to.equal('slow')
    d.stop()
  })

  it('fast enough: the window starts over and nothing fires', () => {
    const stalls: Stall[] = []
    const d = new StallDetector({idleMs: 1000, minBytesPerSec: 1000, now: clock}, (s) => stalls.push(s))
    for (let t = 0; t <= 5000; t += 100) {
      now = t
      d.received(500)
    }
    expect(stalls).to.deep.equal([])
    d.stop()
  })
})
