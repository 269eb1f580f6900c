/**
 * getJson in a process of its own, for replies over TLS: the module's keep-alive https agent trusts
 * what Node trusts, and a test certificate only through NODE_EXTRA_CA_CERTS, read at process start.
 * Argument: JSON {url, timeoutMs, items?: string[]}. Prints JSON {status, body, items} or {error}.
 */
import {MsrError} from '../../src/errors.js'
import {getJson} from '../../src/transfer/http.js'

const {url, timeoutMs, items: itemsPath} = JSON.parse(process.argv[2]) as {url: string; timeoutMs: number; items?: string[]}
const items: unknown[] = []
try {
  const res = await getJson(url, {}, {timeoutMs, maxRetryAfterMs: 60_000, items: itemsPath ? {path: itemsPath, each: (i) => items.push(i)} : undefined})
  process.stdout.write(JSON.stringify({...res, items}))
} catch (error) {
  const e = error as MsrError
  process.stdout.write(JSON.stringify({error: {name: e.name, code: e.code, message: e.message, retryable: e instanceof MsrError ? e.retryable : undefined, retryAfterMs: e instanceof MsrError ? e.retryAfterMs : undefined}}))
}
