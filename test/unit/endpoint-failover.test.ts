import {expect} from 'chai'

import {MsrError} from '../../src/errors.js'
import type {PullEvent} from '../../src/events.js'
import {failedBeforeReply, isEndpointFailure, shortReason} from '../../src/hub/endpoint-failure.js'
import {FailoverHub} from '../../src/hub/failover-hub.js'
import {createHub} from '../../src/hub/index.js'
import {ModelScopeHub} from '../../src/hub/modelscope/modelscope-hub.js'
import {resolveEndpoints} from '../../src/hub/modelscope/endpoint.js'
import {networkError, statusError} from '../../src/transfer/http.js'

const A = 'https://a.example'
const B = 'http://127.0.0.1:8090'
const C = 'https://c.example/mirror'
const TOKEN = 'secret'

function socketError(code: string): MsrError {
  return networkError(Object.assign(new Error(`connect ${code} 127.0.0.1:1`), {code}), new URL(A)) as MsrError
}

const gaveUp = (cause: MsrError) => new MsrError(cause.code, `Gave up on model.bin after 5 retries without progress: ${cause.message}`, {cause, path: 'model.bin'})

function hubOf(...endpoints: string[]): FailoverHub {
  const hub = createHub({endpoint: endpoints, token: TOKEN, timeoutMs: 30_000, maxRetryAfterMs: 1000, connectTimeoutMs: 1000})
  expect(hub).to.be.instanceOf(FailoverHub)
  return hub as FailoverHub
}

function thrown(fn: () => unknown): MsrError {
  try {
    fn()
  } catch (error) {
    expect(error).to.be.instanceOf(MsrError)
    return error as MsrError
  }
  throw new Error('expected an error')
}

describe('endpoint failover: which failures, in what words', () => {
  it('an endpoint is dead when refused, unreachable, TLS, timed out, 5xx or broken; not when it answers about the request', () => {
    for (const e of [socketError('ECONNREFUSED'), socketError('ETIMEDOUT'), statusError(503, {}, new URL(A), false, 0), statusError(502, {}, new URL(A), true, 0),
      new MsrError('E_PROTOCOL', 'bad Content-Range'), new MsrError('E_REMOTE', 'no JSON envelope'), gaveUp(socketError('ECONNRESET'))]) {
      expect(isEndpointFailure(e), e.message).to.equal(true)
    }
    for (const e of [statusError(401, {}, new URL(A), false, 0), statusError(404, {}, new URL(A), false, 0), new MsrError('E_REMOTE_CHANGED', 'x'),
      new MsrError('E_INTEGRITY', 'x'), new MsrError('E_DISK_FULL', 'x'), new MsrError('E_INTERRUPTED', 'x'), new Error('plain')]) {
      expect(isEndpointFailure(e), String((e as Error).message)).to.equal(false)
    }
  })

  it('no reply at all (socket, TLS, timeout) is told apart from an HTTP status', () => {
    expect(failedBeforeReply(socketError('ECONNREFUSED'))).to.equal(true)
    expect(failedBeforeReply(socketError('DEPTH_ZERO_SELF_SIGNED_CERT'))).to.equal(true)
    expect(failedBeforeReply(statusError(503, {}, new URL(A), false, 0))).to.equal(false)
    expect(failedBeforeReply(new MsrError('E_REMOTE', 'no JSON envelope'))).to.equal(false)
  })

  it('short reasons name the failure, through the cause chain of a download that gave up', () => {
    const table: Array<[unknown, string]> = [
      [socketError('ECONNREFUSED'), 'connection refused'],
      [gaveUp(socketError('ECONNREFUSED')), 'connection refused'],
      [socketError('ECONNABORTED'), 'no answer in time'],
      [socketError('UND_ERR_CONNECT_TIMEOUT'), 'no answer in time'],
      [socketError('ENOTFOUND'), 'host not found'],
      [socketError('DEPTH_ZERO_SELF_SIGNED_CERT'), 'TLS failure (DEPTH_ZERO_SELF_SIGNED_CERT)'],
      [socketError('ERR_TLS_CERT_ALTNAME_INVALID'), 'TLS failure (ERR_TLS_CERT_ALTNAME_INVALID)'],
      [socketError('EPROTO'), 'TLS failure (EPROTO)'],
      [statusError(503, {}, new URL(A), false, 0), 'HTTP 503'],
      [gaveUp(statusError(500, {}, new URL(A), false, 0)), 'HTTP 500'],
      [gaveUp(new MsrError('E_TIMEOUT', 'No data for 30 s on model.bin.', {retryable: true})), 'No data for 30 s on model.bin'],
      [new MsrError('E_PROTOCOL', 'Bad reply for x: Content-Range starts at 5, asked 0.'), 'Bad reply for x: Content-Range starts at 5, asked 0'],
    ]
    for (const [error, reason] of table) expect(shortReason(error), (error as Error).message).to.equal(reason)
    expect(shortReason(new MsrError('E_REMOTE', 'x'.repeat(300))).length).to.be.at.most(80)
  })
})

describe('endpoint failover: --endpoint repeated', () => {
  it('every --endpoint in order, once each, replacing MODELSCOPE_ENDPOINT; none: the environment\'s single endpoint', () => {
    const env = {MODELSCOPE_ENDPOINT: 'https://env.example'}
    expect(resolveEndpoints([A, `${B}/`, A, C], env)).to.deep.equal([A, B, C])
    expect(resolveEndpoints(undefined, env)).to.deep.equal(['https://env.example'])
    expect(resolveEndpoints([], {})).to.deep.equal(['https://www.modelscope.cn'])
    expect(thrown(() => resolveEndpoints([A, 'ftp://x'], env)).code).to.equal('E_USAGE')
  })

  it('one endpoint is a plain hub; several are a FailoverHub', () => {
    expect(createHub({endpoint: [A], timeoutMs: 1000, maxRetryAfterMs: 0})).to.be.instanceOf(ModelScopeHub)
    expect(createHub({endpoint: [A, `${A}/`], timeoutMs: 1000, maxRetryAfterMs: 0})).to.be.instanceOf(ModelScopeHub)
    expect(hubOf(A, B).endpoints).to.deep.equal([A, B])
  })

  it('the token goes to the origin of every endpoint named, never to another origin', () => {
    const hub = hubOf(A, B)
    for (const url of [`${A}/api/v1/models/o/n`, `${B}/api/v1/models/o/n/repo?FilePath=x`]) {
      expect(hub.headersFor(new URL(url)).Authorization, url).to.equal(`Bearer ${TOKEN}`)
      expect(hub.pin().headersFor(new URL(url)).Authorization, url).to.equal(`Bearer ${TOKEN}`)
    }
    for (const url of ['https://cdn.example/blob?sig=1', 'http://a.example/api', 'https://a.example:444/x', 'http://127.0.0.1:8091/blobs/1']) {
      const headers = hub.headersFor(new URL(url))
      expect(headers.Authorization, url).to.equal(undefined)
      expect(headers.Cookie, url).to.equal(undefined)
      expect(hub.pin().headersFor(new URL(url)).Authorization, url).to.equal(undefined)
    }
  })

  it('fails over once however many files report the same endpoint; a file pinned before stays where it was', () => {
    const hub = hubOf(A, B, C)
    const events: PullEvent[] = []
    const pinnedOnA = hub.pin()
    hub.failOver(A, gaveUp(socketError('ECONNREFUSED')), 'model.bin', (e) => events.push(e))
    hub.failOver(A, gaveUp(socketError('ECONNRESET')), 'other.bin', (e) => events.push(e))
    expect(hub.endpoint).to.equal(B)
    expect(events).to.deep.equal([{type: 'failover', from: A, to: B, code: 'E_NETWORK', reason: 'connection refused', path: 'model.bin'}])
    expect(pinnedOnA.fileUrl('o/n', 'master', 'x')).to.match(/^https:\/\/a\.example\//)
    expect(hub.pin().fileUrl('o/n', 'master', 'x')).to.match(/^http:\/\/127\.0\.0\.1:8090\//)
    expect(hub.fileUrl('o/n', 'master', 'x')).to.match(/^http:\/\/127\.0\.0\.1:8090\//)
  })

  it('the last endpoint failing ends with E_ENDPOINTS (exit 3), naming every endpoint and its failure', () => {
    const hub = hubOf(A, B)
    hub.failOver(A, socketError('ECONNREFUSED'), '', undefined)
    const e = thrown(() => hub.failOver(B, gaveUp(statusError(503, {}, new URL(B), false, 0)), 'model.bin', undefined))
    expect(e.code).to.equal('E_ENDPOINTS')
    expect(e.exitCode).to.equal(3)
    expect(e.retryable).to.equal(false)
    expect(e.path).to.equal('model.bin')
    expect(e.message).to.equal(`model.bin: every endpoint failed: ${A} (connection refused); ${B} (HTTP 503).`)
    expect(e.message).not.to.contain('\n')
  })
})
