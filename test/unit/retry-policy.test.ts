import {expect} from 'chai'

import {DEFAULT_RETRY_POLICY, backoffDelayMs, nextDelayMs, parseRetryAfterMs} from '../../src/transfer/retry-policy.js'

const NOW = Date.parse('Wed, 21 Oct 2026 07:28:00 GMT')
const CAP = 120_000

describe('retry policy: Retry-After', () => {
  it('seconds', () => {
    expect(parseRetryAfterMs('1', NOW, CAP)).to.equal(1000)
    expect(parseRetryAfterMs(' 30 ', NOW, CAP)).to.equal(30_000)
    expect(parseRetryAfterMs('0', NOW, CAP)).to.equal(0)
  })

  it('an HTTP date, in each of the three forms HTTP allows', () => {
    expect(parseRetryAfterMs('Wed, 21 Oct 2026 07:28:05 GMT', NOW, CAP)).to.equal(5000)
    expect(parseRetryAfterMs('Wednesday, 21-Oct-26 07:28:07 GMT', NOW, CAP)).to.equal(7000)
    expect(parseRetryAfterMs('Wed Oct 21 07:28:09 2026', NOW, CAP)).to.equal(9000)
    expect(parseRetryAfterMs('Wed Oct  1 07:28:09 2026', Date.parse('Wed Oct  1 07:28:00 2026'), CAP)).to.equal(9000)
  })

  it('a date in the past means now', () => {
    expect(parseRetryAfterMs('Wed, 21 Oct 2015 07:28:00 GMT', NOW, CAP)).to.equal(0)
  })

  it('huge values are capped, not ignored (seconds, beyond a double, or a far date)', () => {
    expect(parseRetryAfterMs('86400', NOW, CAP)).to.equal(CAP)
    expect(parseRetryAfterMs('99999999999999999999999', NOW, CAP)).to.equal(CAP)
    expect(parseRetryAfterMs('9'.repeat(400), NOW, CAP)).to.equal(CAP)
    expect(parseRetryAfterMs('Fri, 31 Dec 9999 23:59:59 GMT', NOW, CAP)).to.equal(CAP)
  })

  it('junk is ignored (undefined: our backoff applies), including what V8 would parse as a date', () => {
    for (const junk of [undefined, '', '  ', 'soon', 'soon 12', 'junk 2020', 'Tomorrow 12', '1.5', '-5', '5s', '1e3', 'Infinity', 'NaN', '0x10',
      '2026-10-21T07:28:05Z', 'May 5', 'a 1', 'Wed, 21 Oct 2026 07:28:05 CET']) {
      expect(parseRetryAfterMs(junk, NOW, CAP), JSON.stringify(junk)).to.equal(undefined)
    }
  })
})

describe('retry policy: backoff', () => {
  const policy = {...DEFAULT_RETRY_POLICY, baseDelayMs: 500, maxDelayMs: 30_000}

  it('doubles per attempt within [ceiling/2, ceiling], full range of the jitter', () => {
    expect(backoffDelayMs(1, policy, () => 0)).to.equal(250)
    expect(backoffDelayMs(1, policy, () => 1)).to.equal(500)
    expect(backoffDelayMs(2, policy, () => 0)).to.equal(500)
    expect(backoffDelayMs(2, policy, () => 1)).to.equal(1000)
    expect(backoffDelayMs(4, policy, () => 1)).to.equal(4000)
  })

  it('is capped at maxDelayMs however many attempts, and never NaN or Infinity', () => {
    for (const attempt of [7, 8, 50, 1100, 10_000]) {
      const d = backoffDelayMs(attempt, policy, () => 1)
      expect(d, `attempt ${attempt}`).to.equal(30_000)
      expect(backoffDelayMs(attempt, policy, () => 0)).to.equal(15_000)
    }
  })

  it('attempt 0 or negative behaves as the first', () => {
    expect(backoffDelayMs(0, policy, () => 1)).to.equal(500)
    expect(backoffDelayMs(-3, policy, () => 1)).to.equal(500)
  })

  it('spreads clients: different random draws give different delays', () => {
    const seen = new Set(Array.from({length: 50}, () => backoffDelayMs(5, policy)))
    expect(seen.size).to.be.greaterThan(10)
    for (const d of seen) expect(d).to.be.within(4000, 8000)
  })

  it('nextDelayMs: the server\'s Retry-After when given (capped by the policy), our backoff otherwise', () => {
    expect(nextDelayMs(3, policy, 1500, () => 0)).to.equal(1500)
    expect(nextDelayMs(3, policy, 0, () => 0)).to.equal(0)
    expect(nextDelayMs(3, policy, 10 * 60_000, () => 0)).to.equal(policy.maxRetryAfterMs)
    expect(nextDelayMs(3, policy, undefined, () => 0)).to.equal(1000)
  })
})
