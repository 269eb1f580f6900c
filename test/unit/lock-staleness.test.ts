import {expect} from 'chai'

import {samePidSpace} from '../../src/journal/host-identity.js'
import {HEARTBEAT_BYTES, heartbeatRecord, parseHeartbeat, parseOwner} from '../../src/journal/lock-files.js'
import {StalenessJudge, lockTiming, staleMsFromEnv} from '../../src/journal/lock-staleness.js'

const T = lockTiming(10_000) // beat 2 s, confirm 3.5 s
const NONCE = 'a'.repeat(32)

describe('lock staleness: judged by the filesystem clock, confirmed by an unchanged heartbeat', () => {
  it('timing: a beat is a fifth of the staleness (0.2 to 2 s); confirmation is a beat plus the attribute cache', () => {
    expect(lockTiming(10_000)).to.deep.equal({staleMs: 10_000, beatMs: 2000, confirmMs: 3500})
    expect(lockTiming(3000)).to.deep.equal({staleMs: 3000, beatMs: 600, confirmMs: 2100})
    expect(lockTiming(60_000).beatMs).to.equal(2000)
    expect(lockTiming(500).beatMs).to.equal(200)
  })

  it('a heartbeat older than the staleness by the filesystem clock: suspect at first sight, stale once unchanged for the confirmation time', () => {
    const judge = new StalenessJudge(T)
    expect(judge.observe('hb:x:7', 60_000, 1000)).to.equal('suspect')
    expect(judge.observe('hb:x:7', 60_500, 1000 + T.confirmMs - 1)).to.equal('suspect')
    expect(judge.observe('hb:x:7', 61_000, 1000 + T.confirmMs)).to.equal('stale')
  })

  it('a live holder whose mtime reads old (attribute cache, an mtime set back by hand) is never stale: its counter keeps changing', () => {
    const judge = new StalenessJudge(T)
    let now = 0
    for (let counter = 0; counter < 100; counter++, now += T.beatMs) {
      expect(judge.observe(`hb:x:${counter}`, 1e9, now), `beat ${counter}`).to.equal('suspect')
    }
  })

  it('a fresh heartbeat by the filesystem clock is fresh, however long this process has watched it, until staleness + confirmation', () => {
    const judge = new StalenessJudge(T)
    expect(judge.observe('hb:x:1', 0, 0)).to.equal('fresh')
    expect(judge.observe('hb:x:1', 0, T.staleMs)).to.equal('fresh')
    expect(judge.observe('hb:x:1', 0, T.staleMs + T.confirmMs - 1)).to.equal('fresh')
  })

  it('a heartbeat stamped in the future (a lying server, a hand-set mtime) never means waiting forever: unchanged for staleness + confirmation of local time is stale', () => {
    const judge = new StalenessJudge(T)
    expect(judge.observe('hb:x:1', -3_600_000, 0)).to.equal('fresh')
    expect(judge.observe('hb:x:1', -3_600_000, T.staleMs + T.confirmMs)).to.equal('stale')
  })

  it('no filesystem clock (cannot write a probe): only an unchanged heartbeat for staleness + confirmation counts', () => {
    const judge = new StalenessJudge(T)
    expect(judge.observe('dir:1:5', undefined, 0)).to.equal('fresh')
    expect(judge.observe('dir:1:5', undefined, T.staleMs)).to.equal('fresh')
    expect(judge.observe('dir:1:5', undefined, T.staleMs + T.confirmMs)).to.equal('stale')
  })

  it('another lock (another fingerprint) restarts the confirmation', () => {
    const judge = new StalenessJudge(T)
    judge.observe('hb:x:1', 60_000, 0)
    expect(judge.observe('hb:y:0', 60_000, T.confirmMs + 1)).to.equal('suspect')
    expect(judge.observe('hb:y:0', 60_000, 2 * T.confirmMs + 1)).to.equal('stale')
  })

  it('MS_RESUME_LOCK_STALE_MS: whole milliseconds from 1 s to 1 h; anything else is the 10 s default', () => {
    expect(staleMsFromEnv({MS_RESUME_LOCK_STALE_MS: '3000'})).to.equal(3000)
    for (const junk of ['', '999', '1e9', 'abc', '2.5', '-3000', '3600001']) expect(staleMsFromEnv({MS_RESUME_LOCK_STALE_MS: junk}), junk).to.equal(10_000)
    expect(staleMsFromEnv({})).to.equal(10_000)
  })
})

describe('lock files are input: every field checked before use', () => {
  it('heartbeat: fixed size, round-trips; anything else is no heartbeat', () => {
    const rec = heartbeatRecord(NONCE, 42)
    expect(rec.length).to.equal(HEARTBEAT_BYTES)
    expect(parseHeartbeat(rec)).to.deep.equal({nonce: NONCE, counter: 42})
    expect(parseHeartbeat(rec.subarray(0, 40))).to.equal(undefined)
    expect(parseHeartbeat(Buffer.from(`v1 ${'g'.repeat(32)} 000000000001\n`))).to.equal(undefined)
    expect(parseHeartbeat(Buffer.alloc(HEARTBEAT_BYTES))).to.equal(undefined)
  })

  it('owner: pid, host and nonce required and sane; namespace fields kept only in their own shape', () => {
    const good = {nonce: NONCE, pid: 12, host: 'h1', pidNs: 'pid:[4026531836]', bootId: 'fc5af211-35db-425d-85be-f0ae7e66cb88', user: 'alice', startedAt: '2026-12-06T01:00:00.000Z'}
    expect(parseOwner(JSON.stringify(good))).to.deep.equal(good)
    expect(parseOwner(JSON.stringify({...good, pidNs: '../../etc', bootId: 7}))).to.deep.equal({...good, pidNs: undefined, bootId: undefined})
    for (const bad of [{...good, pid: 0}, {...good, pid: 1.5}, {...good, pid: '12'}, {...good, pid: 2 ** 40}, {...good, host: ''}, {...good, host: 'a\u001b[2Jb'}, {...good, host: 'x'.repeat(256)}, {...good, nonce: 'short'}]) {
      expect(parseOwner(JSON.stringify(bad)), JSON.stringify(bad)).to.equal(undefined)
    }
    for (const text of ['', 'null', '[]', '{"__proto__": {"pid": 1}}', '{']) expect(parseOwner(text), text).to.equal(undefined)
  })

  it('the dead-pid shortcut needs the same host name, pid namespace and boot', () => {
    const me = {host: 'h', pidNs: 'pid:[1]', bootId: 'b'}
    expect(samePidSpace({host: 'h', pidNs: 'pid:[1]', bootId: 'b'}, me)).to.equal(true)
    expect(samePidSpace({host: 'h', pidNs: 'pid:[2]', bootId: 'b'}, me), 'another container with the same host name').to.equal(false)
    expect(samePidSpace({host: 'h', pidNs: 'pid:[1]', bootId: 'c'}, me), 'an earlier boot').to.equal(false)
    expect(samePidSpace({host: 'h'}, me), 'a holder that did not say').to.equal(false)
    expect(samePidSpace({host: 'other', pidNs: 'pid:[1]', bootId: 'b'}, me)).to.equal(false)
  })
})
