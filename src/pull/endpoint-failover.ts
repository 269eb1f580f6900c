import {MsrError} from '../errors.js'
import {failedBeforeReply, isEndpointFailure} from '../hub/endpoint-failure.js'
import {FailoverHub} from '../hub/failover-hub.js'
import type {Hub, HubFile} from '../hub/types.js'
import type {JobContext} from './file-job.js'

/**
 * The hub one file's download talks to: with several endpoints, the current one alone, so that
 * another file's failover never sends this file's next request to an endpoint whose listing of it
 * was not checked (its bytes would be appended to a partial of another version).
 */
export function endpointForFile(hub: Hub): Hub {
  return hub instanceof FailoverHub ? hub.pin() : hub
}

/**
 * Mid-file, a request to `lane` that got no reply at all (refused, TLS, no answer in time) twice in
 * a row gives up on it at once when another endpoint is named: the file's whole retry budget with
 * backoff (minutes) bought nothing from a dead mirror. Once more than once: a server restarting, or a
 * stale connection, gets a second chance. A body cut off mid-way never counts (a lossy link).
 */
export function giveUpNowOn(hub: Hub, lane: Hub): ((error: MsrError, failures: number) => boolean) | undefined {
  if (!(hub instanceof FailoverHub)) return undefined
  return (error, failures) => failures >= 2 && failedBeforeReply(error) && hub.hasAfter(lane.endpoint)
}

/**
 * A file's download gave up on `lane` with `error`: when that is an endpoint's failure and another
 * endpoint is named, the pull moves on (FailoverHub.failOver) and this returns the endpoint the file
 * goes on with and what it lists for the file. The caller keeps the partial only when that entry
 * has the sha256 and size the partial was started with; the final SHA-256 decides either way.
 * Undefined when there is nothing to fail over to; E_ENDPOINTS when `lane` was the last endpoint.
 */
export async function nextEndpointFor(ctx: JobContext, lane: Hub, error: unknown, path: string): Promise<{lane: Hub; listed: HubFile} | undefined> {
  const hub = ctx.hub
  if (!(hub instanceof FailoverHub) || ctx.signal.aborted || !isEndpointFailure(error)) return undefined
  hub.failOver(lane.endpoint, error, path, ctx.emit)
  const next = await hub.listingAfterFailover(ctx.modelId, ctx.revision, ctx.signal, ctx.emit)
  const listed = next.listing.files.find((f) => f.path === path)
  if (!listed) {
    throw new MsrError('E_NOT_FOUND', `${path} is not listed by ${next.lane.endpoint}, where the pull went on after ${lane.endpoint} failed.`, {
      path, hint: 'Run again when the first endpoint is back, or name an endpoint that has this model.',
    })
  }
  return {lane: next.lane, listed}
}
