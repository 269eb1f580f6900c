import {MsrError} from '../errors.js'
import type {EndpointFailover, EventSink} from '../events.js'
import type {RetryPolicy} from '../transfer/retry-policy.js'
import {withRetries} from '../transfer/with-retries.js'
import {failedBeforeReply, isEndpointFailure, shortReason} from './endpoint-failure.js'
import type {Hub, HubListing} from './types.js'

/** One endpoint the user named, as two hubs that differ only in their timeouts. */
export interface EndpointLane {
  /** The endpoint with the usual timeouts (`--timeout`). */
  hub: Hub
  /**
   * The same endpoint with the time to the first byte of a reply capped at the connect timeout:
   * used while it has not answered yet and another endpoint could, so that a blackholed endpoint
   * costs one connect timeout, not `--timeout` times the retries.
   */
  firstContact: Hub
}

interface Lane extends EndpointLane {
  origin: string
  /** It answered a listing in this run. */
  answered: boolean
  /** Why the pull left it, for the message when every endpoint failed. */
  failure?: string
  /** This endpoint alone, for one file's download (see pin). */
  view: Hub
}

/**
 * Several endpoints, in the order the user named them (`--endpoint` repeated). Everything goes to
 * the current one; when it is dead (failOver), the pull moves to the next for good: later files
 * start there, and a file whose download gave up moves there with its partial if that endpoint
 * lists the same sha256 and size (pull/endpoint-failover.ts). Listings fail over by themselves.
 *
 * Credentials: each endpoint's hub gives the token to its own origin only, so a request gets it
 * when its URL is on the origin of an endpoint the user named, never on a CDN one redirects to.
 */
export class FailoverHub implements Hub {
  readonly name: string
  private readonly lanes: Lane[]
  private index = 0
  /** The listing each endpoint gave once a file moved to it: files moving together share one. */
  private readonly afterMove = new Map<number, Promise<HubListing>>()

  constructor(lanes: EndpointLane[], private readonly policy: RetryPolicy) {
    if (lanes.length === 0) throw new Error('internal: FailoverHub without endpoints')
    this.name = lanes[0].hub.name
    this.lanes = lanes.map((l) => {
      const lane: Lane = {...l, origin: new URL(l.hub.endpoint).origin, answered: false, view: l.hub}
      lane.view = this.viewOf(lane)
      return lane
    })
  }

  /** The endpoint in use now. */
  get endpoint(): string {
    return this.current.hub.endpoint
  }

  get endpoints(): string[] {
    return this.lanes.map((l) => l.hub.endpoint)
  }

  fileUrl(modelId: string, revision: string, filePath: string): string {
    return this.current.hub.fileUrl(modelId, revision, filePath)
  }

  headersFor(url: URL): Record<string, string> {
    return this.credentialsFor(url, this.current)
  }

  async afterComplete(ctx: Parameters<NonNullable<Hub['afterComplete']>>[0]): Promise<void> {
    await this.current.hub.afterComplete?.(ctx)
  }

  /** The listing from the first endpoint that gives one, from the current one on, each with its retries. */
  async listFiles(modelId: string, revision: string, signal?: AbortSignal, emit?: EventSink): Promise<HubListing> {
    return (await this.listSomewhere(modelId, revision, signal, emit, false)).listing
  }

  /**
   * The current endpoint alone, for one file's download: a failover caused by another file does
   * not move this one's requests mid-download to an endpoint whose listing it has not checked.
   */
  pin(): Hub {
    return this.current.view
  }

  /** Whether an endpoint follows `endpoint` that the pull has not given up on. */
  hasAfter(endpoint: string): boolean {
    const i = this.lanes.findIndex((l) => l.hub.endpoint === endpoint)
    return i >= this.index && i < this.lanes.length - 1
  }

  /**
   * `from` failed (`error`, after its retries) while serving `path` ('' for a listing): the pull
   * moves to the next endpoint, once, however many files saw it fail. Throws E_ENDPOINTS when
   * `from` was the last one.
   */
  failOver(from: string, error: MsrError, path: string, emit?: EventSink): void {
    const i = this.lanes.findIndex((l) => l.hub.endpoint === from)
    if (i < 0) throw new Error(`internal: ${from} is not one of the endpoints`)
    this.lanes[i].failure ??= shortReason(error)
    if (i < this.index) return
    if (i === this.lanes.length - 1) {
      const tried = this.lanes.map((l) => `${l.hub.endpoint} (${l.failure ?? 'not tried'})`).join('; ')
      throw new MsrError('E_ENDPOINTS', `${path ? `${path}: every endpoint failed` : 'The file listing failed on every endpoint'}: ${tried}.`, {
        path: path || undefined, cause: error,
        hint: 'Check the network and the --endpoint URLs, then run the same command again: it resumes where it stopped.',
      })
    }
    this.index = i + 1
    const event: EndpointFailover = {from, to: this.endpoint, code: error.code, reason: shortReason(error), path}
    emit?.({type: 'failover', ...event})
  }

  /**
   * After a file's download moved (failOver): the listing of the endpoint it goes on with, and that
   * endpoint alone. Shared by the files that move together; a failure is not kept.
   */
  async listingAfterFailover(modelId: string, revision: string, signal?: AbortSignal, emit?: EventSink): Promise<{listing: HubListing; lane: Hub}> {
    return this.listSomewhere(modelId, revision, signal, emit, true)
  }

  private get current(): Lane {
    return this.lanes[this.index]
  }

  private async listSomewhere(modelId: string, revision: string, signal: AbortSignal | undefined, emit: EventSink | undefined, shared: boolean): Promise<{listing: HubListing; lane: Hub}> {
    for (;;) {
      const i = this.index
      const lane = this.lanes[i]
      try {
        let listing = shared ? this.afterMove.get(i) : undefined
        if (!listing) {
          listing = this.listWithRetries(lane, i < this.lanes.length - 1, modelId, revision, signal, emit)
          if (shared) {
            this.afterMove.set(i, listing)
            listing.catch(() => this.afterMove.delete(i))
          }
        }
        const result = await listing
        lane.answered = true
        return {listing: result, lane: lane.view}
      } catch (error) {
        if (signal?.aborted || !isEndpointFailure(error)) throw error
        this.failOver(lane.hub.endpoint, error, '', emit)
      }
    }
  }

  private async listWithRetries(lane: Lane, another: boolean, modelId: string, revision: string, signal: AbortSignal | undefined, emit: EventSink | undefined): Promise<HubListing> {
    const firstContact = another && !lane.answered
    const hub = firstContact ? lane.firstContact : lane.hub
    return withRetries(() => hub.listFiles(modelId, revision, signal), this.policy, signal, emit, (error) => firstContact && failedBeforeReply(error))
  }

  private credentialsFor(url: URL, fallback: Lane): Record<string, string> {
    const named = this.lanes.find((l) => l.origin === url.origin)
    return (named ?? fallback).hub.headersFor(url)
  }

  private viewOf(lane: Lane): Hub {
    return {
      name: this.name,
      endpoint: lane.hub.endpoint,
      listFiles: (modelId, revision, signal) => lane.hub.listFiles(modelId, revision, signal),
      fileUrl: (modelId, revision, filePath) => lane.hub.fileUrl(modelId, revision, filePath),
      headersFor: (url) => this.credentialsFor(url, lane),
      afterComplete: async (ctx) => lane.hub.afterComplete?.(ctx),
    }
  }
}
