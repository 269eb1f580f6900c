import {expect} from 'chai'

import {MsrError} from '../../src/errors.js'
import {ModelScopeHub} from '../../src/hub/modelscope/modelscope-hub.js'
import {statusError} from '../../src/transfer/http.js'
import {MAX_REDIRECTS, checkRedirect} from '../../src/transfer/redirect-policy.js'

function refusal(fn: () => unknown): MsrError {
  try {
    fn()
  } catch (error) {
    expect(error).to.be.instanceOf(MsrError)
    return error as MsrError
  }
  throw new Error('expected a refusal')
}

describe('redirect policy', () => {
  const hub = new URL('https://hub.example/api/v1/models/a/b/repo?FilePath=x')

  it('follows http(s) locations, relative ones resolved against the current URL', () => {
    expect(checkRedirect(hub, 'https://cdn.example/blob?sig=1', 0).href).to.equal('https://cdn.example/blob?sig=1')
    expect(checkRedirect(hub, '/blobs/1', 0).href).to.equal('https://hub.example/blobs/1')
    expect(checkRedirect(new URL('http://127.0.0.1:1/x'), 'https://cdn.example/y', 0).protocol).to.equal('https:')
    expect(checkRedirect(new URL('http://127.0.0.1:1/x'), 'http://127.0.0.1:2/y', 0).href).to.equal('http://127.0.0.1:2/y')
  })

  it('never downgrades https to http, on any hop', () => {
    for (const hop of [0, 1, 5]) {
      const e = refusal(() => checkRedirect(hub, 'http://cdn.example/blob', hop))
      expect(e.code).to.equal('E_PROTOCOL')
      expect(e.retryable).to.equal(false)
    }
    // A protocol-relative location keeps the scheme it came from.
    expect(checkRedirect(hub, '//cdn.example/blob', 0).protocol).to.equal('https:')
  })

  it('refuses non-http(s) locations (ftp, file, data, javascript), not retryable', () => {
    for (const location of ['ftp://127.0.0.1/blob', 'file:///etc/passwd', 'data:text/plain,hi', 'javascript:alert(1)', 'gopher://x/']) {
      const e = refusal(() => checkRedirect(hub, location, 0))
      expect(e.code, location).to.equal('E_PROTOCOL')
      expect(e.retryable, location).to.equal(false)
    }
  })

  it('refuses an invalid location; a missing one is a retryable glitch', () => {
    expect(refusal(() => checkRedirect(hub, 'http://[::1', 0))).to.include({code: 'E_PROTOCOL', retryable: false})
    expect(refusal(() => checkRedirect(hub, undefined, 0))).to.include({code: 'E_PROTOCOL', retryable: true})
    expect(refusal(() => checkRedirect(hub, '', 0))).to.include({code: 'E_PROTOCOL', retryable: true})
  })

  it('caps redirects at MAX_REDIRECTS (about 10): the 10th is followed, the 11th refused', () => {
    expect(MAX_REDIRECTS).to.be.within(5, 20)
    expect(checkRedirect(hub, '/loop', MAX_REDIRECTS - 1).pathname).to.equal('/loop')
    expect(refusal(() => checkRedirect(hub, '/loop', MAX_REDIRECTS))).to.include({code: 'E_PROTOCOL', retryable: false})
    expect(refusal(() => checkRedirect(hub, '/loop', 2, 2))).to.include({code: 'E_PROTOCOL'})
  })
})

describe('credentials across origins', () => {
  const hub = new ModelScopeHub({endpoint: 'https://hub.example', token: 'TKN', timeoutMs: 1000, maxRetryAfterMs: 1000})

  it('sends cookie and bearer to the hub origin only', () => {
    const h = hub.headersFor(new URL('https://hub.example/api/v1/models/a/b/repo'))
    expect(h.Cookie).to.equal('m_session_id=TKN')
    expect(h.Authorization).to.equal('Bearer TKN')
  })

  it('strips them for another host, another port, and the same host over plain http', () => {
    for (const other of ['https://cdn.example/blob', 'https://hub.example:8443/blob', 'http://hub.example/blob', 'https://sub.hub.example/blob']) {
      const h = hub.headersFor(new URL(other))
      expect(h.Cookie, other).to.equal(undefined)
      expect(h.Authorization, other).to.equal(undefined)
    }
  })
})

describe('status mapping of a download hop', () => {
  const url = new URL('http://127.0.0.1:1/blobs/x')

  it('401/403 on a URL reached by a redirect: an expired signature, retryable (same origin or not)', () => {
    for (const status of [401, 403]) {
      const e = statusError(status, {}, url, true, 1000)
      expect(e.retryable, String(status)).to.equal(true)
      expect(e.code).to.not.equal('E_AUTH')
    }
  })

  it('401/403 from the hub URL itself: E_AUTH, final', () => {
    for (const status of [401, 403]) expect(statusError(status, {}, url, false, 1000)).to.include({code: 'E_AUTH', retryable: false})
  })

  it('404/410: E_NOT_FOUND, final, wherever it came from', () => {
    for (const redirected of [false, true]) expect(statusError(404, {}, url, redirected, 1000)).to.include({code: 'E_NOT_FOUND', retryable: false})
  })

  it('429/503 carry the Retry-After, capped', () => {
    expect(statusError(429, {'retry-after': '3'}, url, false, 10_000)).to.include({retryable: true, retryAfterMs: 3000})
    expect(statusError(503, {'retry-after': '99999'}, url, true, 10_000)).to.include({retryable: true, retryAfterMs: 10_000})
    expect(statusError(503, {'retry-after': 'later'}, url, true, 10_000).retryAfterMs).to.equal(undefined)
  })
})
