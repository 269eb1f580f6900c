/**
 * Parses a JSON document whose bulk is one array (a hub listing: `Data.Files`), one element at a
 * time. A listing of 100,000 files is 35 MB of JSON; parsed whole, its text and its 100,000 full
 * objects (twelve fields each, most of them unused) were 100 MB at once, the peak of a whole pull.
 * Here the array is cut out of the bytes, the rest is parsed as usual, and each element is parsed
 * alone and handed to `each`, which keeps what it needs. Returns the document with that array
 * empty. Malformed JSON throws as JSON.parse does.
 */
export function parseWithItems(bytes: Buffer, arrayPath: string[], each: (item: unknown) => void): unknown {
  const span = findArray(bytes, arrayPath)
  if (!span) {
    // Not found by the scanner (no such array, or JSON it does not follow): parsed whole, with the
    // same result, the elements handed over and the array left empty.
    const doc = JSON.parse(bytes.toString('utf8')) as unknown
    let at = doc as Record<string, unknown> | undefined
    for (const key of arrayPath) at = at && typeof at === 'object' && !Array.isArray(at) && Object.hasOwn(at, key) ? at[key] as Record<string, unknown> : undefined
    if (Array.isArray(at)) {
      for (const item of at) each(item)
      at.length = 0
    }
    return doc
  }
  // The document with the array emptied: `[` and `]` kept, the elements cut out.
  const rest = JSON.parse(bytes.toString('utf8', 0, span.open + 1) + bytes.toString('utf8', span.close)) as unknown
  for (const [start, end] of span.items) each(JSON.parse(bytes.toString('utf8', start, end)))
  return rest
}

const QUOTE = 0x22
const BACKSLASH = 0x5c
const COMMA = 0x2c
const COLON = 0x3a

interface Frame {
  array: boolean
  /** Object members: the last key read, and whether the next string is a key. */
  key?: string
  expectKey: boolean
  /** Where the current element started (arrays being cut). */
  itemStart?: number
}

/**
 * Where the array at `arrayPath` (object keys from the root) opens and closes, and the byte range
 * of each element; undefined when the document has no such array or is not well formed (the caller
 * then parses it whole and reports).
 */
export function findArray(bytes: Buffer, arrayPath: string[]): {open: number; close: number; items: Array<[number, number]>} | undefined {
  const stack: Frame[] = []
  let target: {open: number; depth: number; items: Array<[number, number]>} | undefined
  const atPath = () => stack.length === arrayPath.length && stack.every((f, i) => !f.array && f.key === arrayPath[i])
  for (let i = 0; i < bytes.length; i++) {
    const c = bytes[i]
    if (c === 0x20 || c === 0x0a || c === 0x0d || c === 0x09) continue
    const top = stack[stack.length - 1]
    if (target && stack.length === target.depth && top.itemStart === undefined && c !== 0x5d) top.itemStart = i
    if (c === QUOTE) {
      const end = stringEnd(bytes, i)
      if (end < 0) return undefined
      if (top && !top.array && top.expectKey) {
        top.key = JSON.parse(bytes.toString('utf8', i, end + 1)) as string
        top.expectKey = false
      }
      i = end
      continue
    }
    if (c === 0x7b || c === 0x5b) {
      const array = c === 0x5b
      if (array && !target && atPath()) {
        stack.push({array, expectKey: false})
        target = {open: i, depth: stack.length, items: []}
        continue
      }
      stack.push({array, expectKey: !array})
      continue
    }
    if (c === 0x7d || c === 0x5d) {
      const closed = stack.pop()
      if (!closed || closed.array !== (c === 0x5d)) return undefined
      if (target && stack.length + 1 === target.depth) {
        if (closed.itemStart !== undefined) target.items.push([closed.itemStart, lastNonSpace(bytes, i) + 1])
        return {open: target.open, close: i, items: target.items}
      }
      continue
    }
    if (c === COMMA) {
      if (!top) return undefined
      if (target && stack.length === target.depth) {
        if (top.itemStart === undefined) return undefined
        target.items.push([top.itemStart, lastNonSpace(bytes, i) + 1])
        top.itemStart = undefined
      }
      if (!top.array) top.expectKey = true
      continue
    }
    if (c === COLON && top && !top.array) continue
  }
  return undefined
}

/** Index of the quote that ends the string starting at `start`, or -1. */
function stringEnd(bytes: Buffer, start: number): number {
  for (let i = start + 1; i < bytes.length; i++) {
    const c = bytes[i]
    if (c === BACKSLASH) i++
    else if (c === QUOTE) return i
  }
  return -1
}

function lastNonSpace(bytes: Buffer, before: number): number {
  let i = before - 1
  while (i >= 0 && (bytes[i] === 0x20 || bytes[i] === 0x0a || bytes[i] === 0x0d || bytes[i] === 0x09)) i--
  return i
}
