import {expect} from 'chai'

import {type Segment, addConnection, connectionsToAdd, missingRuns, pieceChunksFor, pieceChunksNow, planSegments, rewardedConnections, splitAt, spreadOver, takeOver} from '../../src/transfer/segment-planner.js'

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

  it('planSegments: one connection fetches the first run whole; the rest stays unassigned', () => {
    expect(planSegments([s(0, 100), s(120, 130)], 1, 16)).to.deep.equal({active: [s(0, 100)], unassigned: [s(120, 130)]})
  })

  it('planSegments: several connections take pieces in file order, half an even share each, at most the piece size', () => {
    const plan = planSegments([s(0, 64)], 2, 16)
    expect(plan.active).to.deep.equal([s(0, 16), s(16, 28)])
    expect(plan.unassigned).to.deep.equal([s(28, 64)])
    // A small file: small pieces (at least two chunks), every connection busy while there is work.
    const small = planSegments([s(0, 5)], 4, 16)
    expect(small.active).to.deep.equal([s(0, 2), s(2, 4), s(4, 5)])
    expect(small.unassigned).to.deep.equal([])
    expect(planSegments([s(7, 8)], 8, 16).active).to.deep.equal([s(7, 8)])
  })

  it('pieceChunksNow: pieces shrink toward the end, never below two chunks or above the piece size', () => {
    const cases: Array<[Segment[], number, number, number]> = [
      [[s(0, 1000)], 8, 16, 16],
      [[s(0, 100)], 8, 16, 7],
      [[s(0, 20)], 8, 16, 2],
      [[s(0, 3)], 8, 16, 2],
      [[s(0, 10), s(20, 30)], 1, 16, 10],
    ]
    for (const [runs, connections, max, want] of cases) expect(pieceChunksNow(runs, connections, max), JSON.stringify(runs)).to.equal(want)
  })

  it('takeOver: the next piece first; a lone connection takes whole runs; else the back half of the largest segment', () => {
    const active = [s(0, 10), s(10, 12)]
    const unassigned = [s(20, 30), s(40, 50)]
    expect(takeOver(active, unassigned, 1, 16)).to.deep.equal(s(20, 30))
    expect(takeOver(active, unassigned, 4, 16)).to.deep.equal(s(40, 42))
    expect(unassigned).to.deep.equal([s(42, 50)])
    unassigned.length = 0
    const stolen = takeOver(active, unassigned, 4, 16)
    expect(stolen).to.deep.equal(s(5, 10))
    expect(active[0], 'the victim is cut short').to.deep.equal({...s(0, 5), cut: true})
    // Nothing worth a new connection: less than six chunks left in any segment.
    expect(takeOver([s(3, 8)], [], 4, 16)).to.equal(undefined)
  })

  it('addConnection: the whole-run segment keeps one piece and gives back the rest, in file order', () => {
    const active = [s(0, 64)]
    const unassigned: Segment[] = []
    const seg = addConnection(active, unassigned, 8, 16)
    expect(active[0]).to.deep.equal({...s(0, 16), cut: true})
    expect(seg).to.deep.equal(s(16, 19))
    expect(unassigned).to.deep.equal([s(19, 64)])
  })
})

describe('segment-planner: long links', () => {
  it('pieceChunksNow: a whole even share per connection, not capped by the piece size', () => {
    const cases: Array<[Segment[], number, number]> = [
      [[s(0, 1000)], 8, 125],
      [[s(0, 100)], 8, 13],
      [[s(0, 10), s(20, 30)], 4, 5],
      [[s(0, 3)], 8, 2],
      [[s(0, 1)], 8, 1],
    ]
    for (const [runs, connections, want] of cases) expect(pieceChunksNow(runs, connections, 16, true), JSON.stringify(runs)).to.equal(want)
  })

  it('takeOver: on a long link the next piece is a whole share', () => {
    const unassigned = [s(0, 80)]
    expect(takeOver([], unassigned, 4, 16, true)).to.deep.equal(s(0, 20))
    expect(unassigned).to.deep.equal([s(20, 80)])
  })

  it('spreadOver: the lone whole-run request keeps its first share, the new connections take the others', () => {
    const active = [s(0, 192)]
    const unassigned: Segment[] = []
    const added = spreadOver(active, unassigned, 7)
    expect(active[0]).to.deep.equal({...s(0, 24), cut: true})
    expect(added).to.deep.equal([s(24, 48), s(48, 72), s(72, 96), s(96, 120), s(120, 144), s(144, 168), s(168, 192)])
    expect(unassigned).to.deep.equal([])
  })

  it('spreadOver: reserved shares stay unassigned, in file order, for connections added later', () => {
    const active = [s(0, 100)]
    const unassigned = [s(120, 140)]
    const added = spreadOver(active, unassigned, 7, 2)
    // 120 chunks left over 1 + 7 + 2 shares of 12.
    expect(active[0]).to.deep.equal({...s(0, 12), cut: true})
    expect(added).to.deep.equal([s(12, 24), s(24, 36), s(36, 48), s(48, 60), s(60, 72), s(72, 84), s(84, 96)])
    expect(unassigned).to.deep.equal([s(96, 100), s(120, 140)])
    // Later: two more connections split what was kept back, cutting no reply short.
    const later = spreadOver(active, unassigned, 2)
    expect(later).to.deep.equal([s(96, 100), s(120, 140)])
    expect(unassigned).to.deep.equal([])
    expect(active.filter((x) => x.cut)).to.have.length(1)
  })

  it('spreadOver: nothing left to share gives nothing', () => {
    expect(spreadOver([s(3, 4)], [], 7)).to.deep.equal([])
    expect(spreadOver([s(0, 10), s(10, 20)], [], 2)).to.deep.equal([])
  })
})

describe('segment-planner: automatic connections', () => {
  it('connectionsToAdd: none on a fast link, straight to the first step (8, or the cap) on a slow one, never past it', () => {
    const cases: Array<[number, number, number, number]> = [
      // active, max, bytes/s per connection, expected
      [1, 8, 200 * MiB, 0],
      [1, 8, 32 * MiB, 0],
      [1, 8, 4 * MiB, 7],
      [3, 8, 4 * MiB, 5],
      [8, 8, 1 * MiB, 0],
      [9, 8, 1 * MiB, 0],
      [1, 1, 1, 0],
      // The first step is 8, whatever the cap above it.
      [1, 10, 4 * MiB, 7],
      [8, 10, 4 * MiB, 0],
      [1, 4, 4 * MiB, 3],
    ]
    for (const [active, max, rate, want] of cases) expect(connectionsToAdd(active, max, rate), `${active}/${max} at ${rate}`).to.equal(want)
  })

  it('rewardedConnections: the rest up to the cap only when each connection kept most of the lone rate', () => {
    const cases: Array<[number, number, number, number, number]> = [
      // running, max, bytes/s per connection now, lone bytes/s, expected
      [8, 10, 4 * MiB, 4 * MiB, 2],
      [8, 10, 2.9 * MiB, 4 * MiB, 2],
      [8, 10, 2.7 * MiB, 4 * MiB, 0],
      [8, 10, 2 * MiB, 16 * MiB, 0],
      [8, 10, 4 * MiB, 0, 0],
      [10, 10, 4 * MiB, 4 * MiB, 0],
      [8, 10, 40 * MiB, 40 * MiB, 0],
    ]
    for (const [running, max, now, lone, want] of cases) expect(rewardedConnections(running, max, now, lone), `${running}/${max} at ${now} (alone ${lone})`).to.equal(want)
  })
})
