import {MsrError, isMsrError} from '../errors.js'
import type {Hub, HubListing} from '../hub/types.js'

/** How long an upstream listing is reused: the 2.x client lists twice, then every file asks. */
const LISTING_TTL_MS = 30_000

/**
 * The hub behind `serve --upstream`: listings through the same Hub adapter `pull` uses (validated:
 * sizes, SHA-256, paths), the probe and revisions answers passed through as data. Our clients'
 * credentials never travel upstream; the upstream token is the one `pull` would use.
 */
export class Upstream {
  private readonly listings = new Map<string, {at: number; value: Promise<HubListing>}>()
  private unreachableUntil = 0

  constructor(readonly hub: Hub, private readonly timeoutMs: number) {}

  get endpoint(): string {
    return this.hub.endpoint
  }

  /** One listing per model and revision at a time, reused for a short while. */
  listing(modelId: string, revision: string, signal: AbortSignal): Promise<HubListing> {
    const key = `${modelId}\u0000${revision}`
    const hit = this.listings.get(key)
    if (hit && Date.now() - hit.at < LISTING_TTL_MS) return hit.value
    const value = this.hub.listFiles(modelId, revision, AbortSignal.any([signal, AbortSignal.timeout(this.timeoutMs)]))
    // Expired entries go as new ones come: ids made up by clients must not grow the map for good.
    for (const [k, v] of this.listings) if (Date.now() - v.at >= LISTING_TTL_MS) this.listings.delete(k)
    this.listings.set(key, {at: Date.now(), value})
    // A failure is not cached: the next request asks again.
    value.catch((error) => {
      this.listings.delete(key)
      const down = isMsrError(error) ? error.code === 'E_NETWORK' || error.code === 'E_TIMEOUT' : (error as Error)?.name === 'TimeoutError'
      if (down) this.unreachableUntil = Date.now() + LISTING_TTL_MS
    })
    return value
  }

  /**
   * True for a while after upstream could not be reached: listings of cached models then skip it,
   * so a mirror whose WAN is down answers at once instead of after a timeout per request.
   */
  get unreachable(): boolean {
    return Date.now() < this.unreachableUntil
  }

  /** `Data` of an upstream API route (probe, revisions), or the status it failed with. */
  async data(route: string, signal: AbortSignal): Promise<{status: number; data?: unknown; message?: string}> {
    const url = new URL(`${this.hub.endpoint}${route}`)
    let res: Response
    try {
      res = await fetch(url, {headers: this.hub.headersFor(url), redirect: 'error', signal: AbortSignal.any([signal, AbortSignal.timeout(this.timeoutMs)])})
    } catch (error) {
      throw new MsrError('E_NETWORK', `The upstream ${this.hub.endpoint} did not answer: ${(error as Error).message}.`, {cause: error})
    }
    let body: {Code?: unknown; Data?: unknown; Message?: unknown} | undefined
    try {
      body = (await res.json()) as typeof body
    } catch {
      body = undefined
    }
    if (res.status === 200 && body?.Code === 200) return {status: 200, data: body.Data}
    return {status: res.status === 200 ? 502 : res.status, message: typeof body?.Message === 'string' ? body.Message : undefined}
  }
}

/** HTTP status a waiting client gets for an upstream failure. Upstream auth trouble is not the client's. */
export function statusForUpstreamError(error: unknown): {status: number; message: string} {
  if (!isMsrError(error)) return {status: 502, message: `upstream failure: ${(error as Error)?.message ?? String(error)}`}
  if (error.code === 'E_NOT_FOUND') return {status: 404, message: error.message}
  if (error.code === 'E_INTERRUPTED') return {status: 503, message: 'the mirror is shutting down; try again'}
  if (error.code === 'E_LOCKED') return {status: 503, message: error.message}
  return {status: 502, message: `upstream failure (${error.code}): ${error.message}`}
}
