import {expect} from 'chai'

import {DeadlineWatch} from '../../src/transfer/deadline-watch.js'

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms))

describe('deadline-watch: one interval for many deadlines', () => {
  it('expires each item once, never before its deadline; a moved deadline or a deleted item does not expire', async () => {
    const watch = new DeadlineWatch()
    const expired: Array<{name: string; late: number}> = []
    const item = (name: string, inMs: number) => {
      const it = {deadline: performance.now() + inMs, expire: () => expired.push({name, late: performance.now() - it.deadline})}
      watch.add(it, inMs)
      return it
    }
    const a = item('a', 60)
    item('b', 120)
    const moved = item('moved', 60)
    const deleted = item('deleted', 60)
    watch.delete(deleted)
    await sleep(40)
    moved.deadline = performance.now() + 200
    await sleep(200)
    expect(expired.map((e) => e.name)).to.deep.equal(['a', 'b'])
    for (const e of expired) expect(e.late, e.name).to.be.at.least(0)
    await sleep(150)
    expect(expired.map((e) => e.name)).to.deep.equal(['a', 'b', 'moved'])
    // Expired items are out of the watch: deleting them again is harmless.
    watch.delete(a)
  })
})
