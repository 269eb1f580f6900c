import http from 'node:http'
import https from 'node:https'
import axios, {type AxiosResponse} from 'axios'

import {MsrError} from '../errors.js'
import {parseRetryAfterMs} from './retry-policy.js'

const httpAgent = new http.Agent({keepAlive: true, maxSockets: 64})
const httpsAgent = new https.Agent({keepAlive: true, maxSockets: 64})

/** JSON GET against the hub API, with the same error mapping. */
export async function getJson<T>(url: string, headers: Record<string, string>, opts: {signal?: AbortSignal; timeoutMs: number; maxRetryAfterMs: number}): Promise<{status: number; body: T}> {
  const target = new URL(url)
  let res: AxiosResponse<T>
  try {
    res = await axios.request<T>({
      method: 'GET',
      url,
      headers: {Accept: 'application/json', ...headers},
      responseType: 'json',
      maxRedirects: 0,
      validateStatus: () => true,
      signal: opts.signal,
      timeout: opts.timeoutMs,
      httpAgent,
      httpsAgent,
      proxy: proxyFor(target),
    })
  } catch (error) {
    throw networkError(error, target, opts.signal)
  }
  if (res.status >= 400 && res.status !== 404 && res.status !== 401 && res.status !== 403) {
    throw statusError(res.status, normaliseHeaders(res.headers as Record<string, unknown>), target, false, opts.maxRetryAfterMs)
  }
  return {status: res.status, body: res.data}
}

function normaliseHeaders(raw: Record<string, unknown>): Record<string, string | undefined> {
  const out: Record<string, string | undefined> = {}
  for (const [k, v] of Object.entries(raw ?? {})) {
    out[k.toLowerCase()] = Array.isArray(v) ? v.join(', ') : v === undefined || v === null ? undefined : String(v)
  }
  return out
}

// Loopback never goes through a proxy; everything else follows axios' HTTP(S)_PROXY handling.
function proxyFor(url: URL): false | undefined {
  return ['127.0.0.1', 'localhost', '[::1]', '::1'].includes(url.hostname) ? false : undefined
}

/** `redirected`: the URL was reached through a redirect (a signed CDN/blob URL), not the hub API URL itself. */
export function statusError(status: number, headers: Record<string, string | undefined>, url: URL, redirected: boolean, maxRetryAfterMs: number): MsrError {
  const retryAfterMs = parseRetryAfterMs(headers['retry-after'], Date.now(), maxRetryAfterMs)
  if (status === 429 || status === 503 || status === 502 || status === 504 || status === 500 || status === 408) {
    return new MsrError('E_NETWORK', `HTTP ${status} from ${url.origin}.`, {retryable: true, retryAfterMs, hint: 'The server is busy; run again later.'})
  }
  if ((status === 403 || status === 401) && redirected) {
    // A signed CDN URL expired (about an hour on some mirrors): resolve again through the hub. The
    // blob host may share the hub's origin, so "reached by a redirect" decides, not the origin:
    // keying on cross-origin made an expired same-origin signature a fatal E_AUTH mid-file.
    return new MsrError('E_NETWORK', `HTTP ${status} from the download host ${url.origin} (signed URL expired?).`, {retryable: true})
  }
  if (status === 401 || status === 403) {
    return new MsrError('E_AUTH', `HTTP ${status}: the hub refused access.`, {
      hint: 'Pass a valid token with --token or MODELSCOPE_API_TOKEN, and check that it may read this model.',
    })
  }
  if (status === 404 || status === 410) {
    return new MsrError('E_NOT_FOUND', `HTTP ${status}: not found at ${url.origin}${url.pathname}.`, {hint: 'Check the model id, --revision and the file name.'})
  }
  if (status === 416) {
    return new MsrError('E_PROTOCOL', `HTTP 416 from ${url.origin}.`, {retryable: true, found: headers['content-range']})
  }
  return new MsrError('E_REMOTE', `Unexpected HTTP ${status} from ${url.origin}.`, {retryable: status >= 500})
}

export function networkError(error: unknown, url: URL, signal?: AbortSignal): unknown {
  if (signal?.aborted) return signal.reason instanceof Error ? signal.reason : error
  const e = error as {code?: string; message?: string}
  const code = e?.code ?? ''
  if (['ECONNABORTED', 'ETIMEDOUT', 'UND_ERR_CONNECT_TIMEOUT', 'UND_ERR_HEADERS_TIMEOUT', 'UND_ERR_BODY_TIMEOUT'].includes(code)) {
    return new MsrError('E_TIMEOUT', `Timed out waiting for ${url.origin}.`, {retryable: true, cause: error})
  }
  if (code.startsWith('HPE_') || code === 'UND_ERR_RES_CONTENT_LENGTH_MISMATCH' || (error as Error)?.name === 'HTTPParserError' || /parse error|does not match the HTTP\/1\.1 protocol/i.test(e?.message ?? '')) {
    return new MsrError('E_PROTOCOL', `Malformed HTTP reply from ${url.origin}: ${e.message}.`, {retryable: true, cause: error})
  }
  if (code === 'ENOTFOUND' || code === 'EAI_AGAIN') {
    return new MsrError('E_NETWORK', `Cannot resolve ${url.hostname}.`, {retryable: true, cause: error, hint: 'Check the network and --endpoint.'})
  }
  return new MsrError('E_NETWORK', `Network error talking to ${url.origin}: ${e?.message ?? String(error)}.`, {retryable: true, cause: error, hint: 'Check the network; run again to resume.'})
}
