/** Which redirects a download may follow. Pure: no I/O, so every rule has a unit test. */
import {MsrError} from '../errors.js'

/** A hub needs one or two hops (API → CDN); more than this is a loop. */
export const MAX_REDIRECTS = 10

const MISCONFIGURED = 'The hub or its CDN is misconfigured; try again later or report it.'

/**
 * The URL a redirect from `from` leads to, or an MsrError when it must not be followed:
 * - no Location: retryable (a glitch of one reply);
 * - an unparsable Location, or one that is not http(s) (`ftp:`, `file:`, `data:`: we would read
 *   something other than the hub's bytes, possibly a local file);
 * - https → http: a downgrade hands the signed URL and the bytes to anyone on the path;
 * - the redirect number `redirectsSoFar + 1` above `maxRedirects`: a loop would otherwise never end.
 */
export function checkRedirect(from: URL, location: string | undefined, redirectsSoFar: number, maxRedirects = MAX_REDIRECTS): URL {
  if (!location) throw new MsrError('E_PROTOCOL', `A redirect without a Location from ${from.origin}.`, {retryable: true})
  let next: URL
  try {
    next = new URL(location, from)
  } catch {
    throw new MsrError('E_PROTOCOL', `Redirect to an invalid location: ${location.slice(0, 200)}.`, {hint: MISCONFIGURED})
  }
  if (next.protocol !== 'http:' && next.protocol !== 'https:') {
    throw new MsrError('E_PROTOCOL', `Refusing a redirect to a non-HTTP location (${next.protocol}).`, {hint: MISCONFIGURED})
  }
  if (from.protocol === 'https:' && next.protocol === 'http:') {
    throw new MsrError('E_PROTOCOL', `Refusing a redirect from https to plain http (${next.origin}).`, {hint: MISCONFIGURED})
  }
  if (redirectsSoFar + 1 > maxRedirects) {
    throw new MsrError('E_PROTOCOL', `Too many redirects (more than ${maxRedirects}) from ${from.origin}.`, {hint: 'The hub is in a redirect loop; try again later or report it.'})
  }
  return next
}
