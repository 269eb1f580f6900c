/** Pure checks of a ranged reply. A resumed response must prove itself before one byte is written. */

export interface ContentRange {
  start: number
  /** Inclusive, as on the wire. */
  end: number
  total: number | undefined
}

const RANGE = /^bytes (\d+)-(\d+)\/(\d+|\*)$/
const UNSATISFIED = /^bytes \*\/(\d+)$/

export function parseContentRange(value: string | undefined): ContentRange | undefined {
  if (typeof value !== 'string') return undefined
  const m = RANGE.exec(value.trim())
  if (!m) return undefined
  const start = Number(m[1])
  const end = Number(m[2])
  const total = m[3] === '*' ? undefined : Number(m[3])
  if (!Number.isSafeInteger(start) || !Number.isSafeInteger(end) || end < start) return undefined
  if (total !== undefined && (!Number.isSafeInteger(total) || end >= total)) return undefined
  return {start, end, total}
}

/** The total from a 416's `Content-Range: bytes *\/N`. */
export function parseUnsatisfiedRange(value: string | undefined): number | undefined {
  if (typeof value !== 'string') return undefined
  const m = UNSATISFIED.exec(value.trim())
  return m ? Number(m[1]) : undefined
}

/** `Range` header for [startBytes, endBytes) — exact for offsets past 2^32 (safe integers). */
export function rangeHeader(startBytes: number, endBytesExclusive: number): string {
  return `bytes=${startBytes}-${endBytesExclusive - 1}`
}

/** A strong ETag, or undefined for weak or missing ones (weak ETags cannot guard a byte range). */
export function strongEtag(value: string | undefined): string | undefined {
  if (typeof value !== 'string' || value.length === 0 || value.startsWith('W/')) return undefined
  return value
}

export type RangeVerdict =
  | {ok: true; skipBytes: number}
  | {ok: false; reason: 'changed' | 'protocol'; message: string}

/**
 * Decides whether a reply to `Range: bytes=start-…` may be used, and how many leading body bytes to
 * discard. A 200 carries the whole file: we never append it at the offset (that corrupts the file);
 * we skip to the offset instead, hashing stays positional. A 206 must start exactly where we asked
 * and agree on the total size; otherwise the bytes would land at the wrong offset.
 */
export function judgeRangeReply(opts: {
  status: number
  requestedStart: number
  expectedTotal: number
  contentRange: string | undefined
  contentLength: string | undefined
  contentEncoding: string | undefined
  contentType: string | undefined
}): RangeVerdict {
  if (opts.status === 416) {
    // We only ask for ranges inside the listed size. A server that says `*/N` with another N has
    // another file than the listing (start over); with the listed N it answered a valid range
    // wrongly: retry. Treating every 416 alike either loops on a changed file or drops good bytes.
    const total = parseUnsatisfiedRange(opts.contentRange)
    if (total !== undefined && total !== opts.expectedTotal) {
      return {ok: false, reason: 'changed', message: `server says the file is ${total} bytes (416), listed size is ${opts.expectedTotal}`}
    }
    return {ok: false, reason: 'protocol', message: `HTTP 416 for a range inside the file (Content-Range: ${opts.contentRange ?? '(none)'})`}
  }
  const encoding = (opts.contentEncoding ?? 'identity').trim().toLowerCase()
  if (encoding !== 'identity' && encoding !== '') {
    return {ok: false, reason: 'protocol', message: `server compressed a byte range (Content-Encoding: ${encoding})`}
  }
  if ((opts.contentType ?? '').toLowerCase().startsWith('multipart/')) {
    return {ok: false, reason: 'protocol', message: 'server sent a multipart reply to a single range'}
  }
  // No verdict on the ETag: mirrors and CDNs serve one file under different ETags. The listing's
  // sha256 and size name the file; the final SHA-256 decides (a partial is never thrown away for it).
  if (opts.contentLength !== undefined && !/^\d+$/.test(opts.contentLength.trim())) {
    return {ok: false, reason: 'protocol', message: `malformed Content-Length: ${opts.contentLength}`}
  }
  if (opts.status === 200) {
    // Longer than listed: read up to the listed size and let the SHA-256 decide (a trailing
    // newline or a proxy's padding is no reason to give up). Shorter: not the listed file.
    if (opts.contentLength !== undefined && Number(opts.contentLength) < opts.expectedTotal) {
      return {ok: false, reason: 'changed', message: `full reply of ${opts.contentLength} bytes, listed size is ${opts.expectedTotal}`}
    }
    return {ok: true, skipBytes: opts.requestedStart}
  }
  if (opts.status !== 206) {
    return {ok: false, reason: 'protocol', message: `unexpected HTTP ${opts.status} to a range request`}
  }
  const range = parseContentRange(opts.contentRange)
  if (!range) {
    return {ok: false, reason: 'protocol', message: `missing or malformed Content-Range: ${opts.contentRange ?? '(none)'}`}
  }
  if (range.total !== undefined && range.total !== opts.expectedTotal) {
    return {ok: false, reason: 'changed', message: `remote size is ${range.total} bytes, listed size is ${opts.expectedTotal}`}
  }
  if (range.start !== opts.requestedStart) {
    return {ok: false, reason: 'protocol', message: `reply starts at byte ${range.start}, asked for ${opts.requestedStart}`}
  }
  if (opts.contentLength !== undefined && Number(opts.contentLength) !== range.end - range.start + 1) {
    return {ok: false, reason: 'protocol', message: `Content-Length ${opts.contentLength} disagrees with Content-Range ${opts.contentRange}`}
  }
  return {ok: true, skipBytes: 0}
}

/** judgeRangeReply on a reply's status and (lower-cased) headers. */
export function judgeReply(reply: {status: number; headers: Record<string, string | undefined>}, requestedStart: number, expectedTotal: number): RangeVerdict {
  const h = reply.headers
  return judgeRangeReply({
    status: reply.status, requestedStart, expectedTotal,
    contentRange: h['content-range'], contentLength: h['content-length'], contentEncoding: h['content-encoding'], contentType: h['content-type'],
  })
}
