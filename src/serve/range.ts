/**
 * Which bytes of a file a GET answers with, from its Range and If-Range headers (RFC 9110 §14).
 * Pure. Only single ranges are served: a multi-range request gets the whole file (200), which the
 * RFC allows and which no ModelScope client sends. A Range header we cannot parse is ignored in the
 * same way, so a malformed header never turns into a wrong 206.
 */
export type RangeDecision =
  | {kind: 'full'}
  | {kind: 'partial'; start: number; endInclusive: number}
  | {kind: 'unsatisfiable'}

const SINGLE_RANGE = /^\s*bytes\s*=\s*(\d*)\s*-\s*(\d*)\s*$/i

export function decideRange(opts: {range?: string; ifRange?: string; size: number; etag: string; lastModified?: string}): RangeDecision {
  const {range, size} = opts
  // An empty file has no byte to range over: answering its Range with 416 would make a caching
  // proxy that always asks for ranges (nginx's slice module) pass an error on for an empty file.
  // The RFC lets a server ignore Range; an empty 200 is what the client wanted.
  if (range === undefined || size === 0) return {kind: 'full'}
  // A client resuming with If-Range whose validator no longer matches gets the whole new file, not
  // a slice of it appended to the old bytes.
  if (opts.ifRange !== undefined && !ifRangeMatches(opts.ifRange, opts.etag, opts.lastModified)) return {kind: 'full'}
  const m = SINGLE_RANGE.exec(range)
  if (!m) return {kind: 'full'}
  const [, first, last] = m
  if (first === '' && last === '') return {kind: 'full'}
  if (first === '') {
    const suffix = toInt(last)
    if (suffix === undefined) return {kind: 'full'}
    if (suffix === 0) return {kind: 'unsatisfiable'}
    return {kind: 'partial', start: Math.max(0, size - suffix), endInclusive: size - 1}
  }
  const start = toInt(first)
  if (start === undefined) return {kind: 'full'}
  let end = size - 1
  if (last !== '') {
    const e = toInt(last)
    if (e === undefined || e < start) return {kind: 'full'}
    end = Math.min(e, size - 1)
  }
  if (start >= size) return {kind: 'unsatisfiable'}
  return {kind: 'partial', start, endInclusive: end}
}

/** Strong comparison for an entity tag; a date matches only the exact Last-Modified second. */
export function ifRangeMatches(value: string, etag: string, lastModified: string | undefined): boolean {
  const v = value.trim()
  if (v.startsWith('W/')) return false
  if (v.startsWith('"')) return v === etag
  if (lastModified === undefined) return false
  const d = Date.parse(v)
  return !Number.isNaN(d) && d === Date.parse(lastModified)
}

/** If-None-Match (for 304): weak comparison, as RFC 9110 §13.1.2 asks. */
export function noneMatch(value: string, etag: string): boolean {
  if (value.trim() === '*') return true
  const strip = (t: string) => (t.startsWith('W/') ? t.slice(2) : t)
  return value.split(',').some((t) => strip(t.trim()) === strip(etag))
}

function toInt(digits: string): number | undefined {
  // 20 digits already exceed 2^53: refuse rather than round to a different offset.
  if (digits.length > 16) return undefined
  const n = Number(digits)
  return Number.isSafeInteger(n) ? n : undefined
}
