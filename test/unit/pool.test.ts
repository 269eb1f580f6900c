import {expect} from 'chai'

import {runPool} from '../../src/pool.js'

const tick = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms))

describe('runPool: one bounded pool for files (pull) and worker threads (verify)', () => {
  it('keeps at most `limit` in flight, results in input order, lanes 0..limit-1', async () => {
    let inFlight = 0
    let most = 0
    const lanes = new Set<number>()
    const items = [30, 5, 20, 1, 10, 2, 8]
    const out = await runPool(items, 3, new AbortController().signal, async (ms, lane) => {
      lanes.add(lane.index)
      most = Math.max(most, ++inFlight)
      await tick(ms)
      inFlight--
      return ms * 2
    })
    expect(out).to.deep.equal(items.map((ms) => ms * 2))
    expect(most).to.equal(3)
    expect([...lanes].sort()).to.deep.equal([0, 1, 2])
  })

  it('a lane never runs two items at once (a worker thread per lane stays busy with one job)', async () => {
    const busy = new Set<number>()
    await runPool(Array.from({length: 20}, (_, i) => i), 4, new AbortController().signal, async (i, lane) => {
      expect(busy.has(lane.index), `lane ${lane.index} reused while busy`).to.equal(false)
      busy.add(lane.index)
      await tick(i % 3)
      busy.delete(lane.index)
    })
  })

  it('the first failure stops handing out items, aborts the other lanes, and is what it rejects with', async () => {
    const started: number[] = []
    let sawAbort = false
    const failure = new Error('boom')
    const run = runPool([0, 1, 2, 3, 4, 5], 2, new AbortController().signal, async (i, lane) => {
      started.push(i)
      if (i === 1) {
        await tick(5)
        throw failure
      }
      await new Promise<void>((resolve) => {
        const t = setTimeout(resolve, 2000)
        lane.signal.addEventListener('abort', () => {
          sawAbort = true
          clearTimeout(t)
          resolve()
        }, {once: true})
      })
    })
    const error = await run.then(() => undefined, (e: unknown) => e)
    expect(error).to.equal(failure)
    expect(sawAbort).to.equal(true)
    expect(started).to.deep.equal([0, 1])
  })

  it('the caller\'s abort stops handing out items without a rejection of its own', async () => {
    const ac = new AbortController()
    const started: number[] = []
    const out = await runPool([0, 1, 2, 3], 1, ac.signal, async (i) => {
      started.push(i)
      if (i === 1) ac.abort(new Error('ctrl-c'))
      return i
    })
    expect(started).to.deep.equal([0, 1])
    expect(out.length).to.equal(4)
    expect(out[2]).to.equal(undefined)
  })
})
