import {expect} from 'chai'

import {type Segment, addConnection, connectionsToAdd, missingRuns, pieceChunksFor, planSegments, splitAt, takeOver} from '../../src/transfer/segment-planner.js'

const MiB = 1024 * 1024
const s = (next: number, end: number): Segment => ({next, end})

describe('segment-planner: which connection fetches which chunks', () => {
  it('missingRuns: runs of missing chunks', () => {
    const cases: Array<[Array<string | null>, Segment[]]> = [
      [[], []],
      [['a', 'b'], []],
      [[null, null, null], [s(0, 3)]],
      [['a', null, null, 'b', null], [s(1, 3), s(4, 5)]],
      [[null, 'a', null], [s(0, 1), s(2, 3)]],
    ]
    for (const [done, runs] of cases) expect(missingRuns(done), JSON.stringify(done)).to.deep.equal(runs)
  })

  it('splitAt: a segment starts at every chunk a checkpoint caught half-way', () => {
    expect(splitAt([s(0, 10)], new Map([[4, 1], [7, 1]]))).to.deep.equal([s(0, 4), s(4, 7), s(7, 10)])
    expect(splitAt([s(0, 10)], new Map([[0, 1]]))).to.deep.equal([s(0, 10)])
    expect(splitAt([s(2, 5), s(8, 9)], new Map([[8, 1], [3, 1]]))).to.deep.equal([s(2, 3), s(3, 5), s(8, 9)])
    expect(splitAt([s(0, 3)], new Map())).to.deep.equal([s(0, 3)])
  })

  it('pieceChunksFor: at least 16 MiB, at most 256 pieces', () => {
    expect(pieceChunksFor(100, MiB)).to.equal(16)
    expect(pieceChunksFor(8192, MiB)).to.equal(32)
    expect(pieceChunksFor(10, 4 * MiB)).to.equal(4)
  })

  it('planSegments: one connection fetches each run whole, in order', () => {
    expect(planSegments([s(0, 100), s(120, 130)], 1, 16)).to.deep.equal({active: [s(0, 100)], queue: [s(120, 130)]})
  })

  it('planSegments: several connections take pieces in file order; small files are split until each has one', () => {
    const plan = planSegments([s(0, 64)], 2, 16)
    expect(plan.active).to.deep.equal([s(0, 16), s(16, 32)])
    expect(plan.queue).to.deep.equal([s(32, 48), s(48, 64)])
    const small = planSegments([s(0, 5)], 4, 16)
    expect(small.active.map((x) => x.end - x.next).reduce((a, b) => a + b)).to.equal(5)
    expect(small.active).to.have.length(4)
    expect(small.queue).to.deep.equal([])
    // A single chunk cannot be split: one connection.
    expect(planSegments([s(7, 8)], 8, 16).active).to.deep.equal([s(7, 8)])
  })

  it('takeOver: a queued piece first, else the back half of the largest segment (its owner keeps two chunks)', () => {
    const active = [s(0, 10), s(10, 12)]
    const queue = [s(20, 30)]
    expect(takeOver(active, queue)).to.deep.equal(s(20, 30))
    expect(queue).to.deep.equal([])
    const stolen = takeOver(active, queue)
    expect(stolen).to.deep.equal(s(5, 10))
    expect(active[0]).to.deep.equal(s(0, 5))
    // Nothing worth taking: 2 chunks left at most.
    expect(takeOver([s(3, 5)], [])).to.equal(undefined)
  })

  it('addConnection: the largest segment keeps one piece, the rest is queued in file order', () => {
    const active = [s(0, 64)]
    const queue: Segment[] = []
    const seg = addConnection(active, queue, 16)
    expect(seg).to.deep.equal(s(16, 32))
    expect(active).to.deep.equal([s(0, 16), s(16, 32)])
    expect(queue).to.deep.equal([s(32, 48), s(48, 64)])
  })
})

describe('segment-planner: automatic connections', () => {
  it('connectionsToAdd: none on a fast link, straight to the cap on a slow one, never past it', () => {
    const cases: Array<[number, number, number, number]> = [
      // active, max, bytes/s per connection, expected
      [1, 8, 200 * MiB, 0],
      [1, 8, 32 * MiB, 0],
      [1, 8, 4 * MiB, 7],
      [3, 8, 4 * MiB, 5],
      [8, 8, 1 * MiB, 0],
      [9, 8, 1 * MiB, 0],
      [1, 1, 1, 0],
    ]
    for (const [active, max, rate, want] of cases) expect(connectionsToAdd(active, max, rate), `${active}/${max} at ${rate}`).to.equal(want)
  })
})
