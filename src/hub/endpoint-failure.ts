/** Which failures mean "this endpoint is down", and how to say why in a few words. Pure: unit-tested. */
import {type ErrorCode, type MsrError, isMsrError} from '../errors.js'

/**
 * Failures of the endpoint or of the way to it: refused, unreachable, TLS, timeouts, 5xx, replies
 * no download can build on. Not among them: answers about the request (E_AUTH, E_NOT_FOUND: another
 * endpoint would be asked with the same token for the same thing), a changed file, local failures.
 */
const ENDPOINT_CODES = new Set<ErrorCode>(['E_NETWORK', 'E_TIMEOUT', 'E_PROTOCOL', 'E_REMOTE'])

export function isEndpointFailure(error: unknown): error is MsrError {
  return isMsrError(error) && ENDPOINT_CODES.has(error.code)
}

/**
 * No HTTP reply at all: refused, reset, DNS, TLS handshake, nothing within the first-contact
 * timeout. Transport errors carry the socket's error as their cause (transfer/http.ts
 * networkError); an HTTP status becomes an error without one. An endpoint that has not answered yet
 * and fails like this is left at once when another endpoint is named: retrying a refused port five
 * times with backoff only delays the one that works.
 */
export function failedBeforeReply(error: unknown): boolean {
  return isMsrError(error) && error.cause !== undefined && (error.code === 'E_NETWORK' || error.code === 'E_TIMEOUT' || error.code === 'E_PROTOCOL')
}

const SOCKET_REASONS: Record<string, string> = {
  ECONNREFUSED: 'connection refused',
  ECONNRESET: 'connection reset',
  EPIPE: 'connection reset',
  ENOTFOUND: 'host not found',
  EAI_AGAIN: 'host not found',
  EHOSTUNREACH: 'host unreachable',
  ENETUNREACH: 'network unreachable',
  ECONNABORTED: 'no answer in time',
  ETIMEDOUT: 'no answer in time',
  UND_ERR_CONNECT_TIMEOUT: 'no answer in time',
  UND_ERR_HEADERS_TIMEOUT: 'no answer in time',
  UND_ERR_SOCKET: 'connection closed',
}

const TLS_CODE = /^(ERR_TLS_|ERR_SSL_|CERT_|EPROTO$)|SELF_SIGNED|UNABLE_TO_(GET|VERIFY)|_CERT_/

/** The first `code` down the cause chain that is not one of ours (the socket's or TLS's own). */
function socketCode(error: unknown): string | undefined {
  for (let e = error, depth = 0; e && depth < 8; e = (e as {cause?: unknown}).cause, depth++) {
    const code = (e as {code?: unknown}).code
    if (!isMsrError(e) && typeof code === 'string' && code !== '') return code
  }
  return undefined
}

/** "connection refused", "TLS failure (CERT_HAS_EXPIRED)", "HTTP 503", ...: for one-line messages naming several endpoints. */
export function shortReason(error: unknown): string {
  const code = socketCode(error)
  if (code && SOCKET_REASONS[code]) return SOCKET_REASONS[code]
  if (code && TLS_CODE.test(code)) return `TLS failure (${code})`
  const message = String((error as Error)?.message ?? error)
  const status = /\bHTTP (\d{3})\b/.exec(message)
  if (status) return `HTTP ${status[1]}`
  const text = message.replace(/^Gave up on .*? without progress: /, '').replace(/\.$/, '')
  return text.length > 80 ? `${text.slice(0, 79)}…` : text
}
