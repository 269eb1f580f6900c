/**
 * Parses a JSON document whose bulk is one array (a hub listing: `Data.Files`), one element at a
 * time. A listing of 100,000 files is 35 MB of JSON; parsed whole, its text and its 100,000 full
 * objects (twelve fields each, most of them unused) were 100 MB at once, the peak of a whole pull.
 * Each element is parsed alone and handed to `each`, which keeps what it needs; the rest of the
 * document is parsed as usual. Returns the document with that array empty. Malformed JSON throws a
 * SyntaxError, as JSON.parse does.
 */
export function parseWithItems(bytes: Buffer, arrayPath: string[], each: (item: unknown) => void, o: ScanOptions = {}): unknown {
  const scanner = new JsonItemScanner(arrayPath, each, o)
  scanner.push(bytes)
  return scanner.end()
}

const QUOTE = 0x22
const BACKSLASH = 0x5c
const COMMA = 0x2c
const OPEN_ARRAY = 0x5b
const CLOSE_ARRAY = 0x5d
const OPEN_OBJECT = 0x7b
const CLOSE_OBJECT = 0x7d

interface Frame {
  array: boolean
  /** Object members: the last key read, and whether the next string is a key. */
  key: string | undefined
  expectKey: boolean
}

/**
 * Documents up to this size are held and parsed whole by JSON.parse at the end: for a listing of a
 * few thousand files (1 MB) the byte-by-byte scan cost more than the memory it saved (40 ms on the
 * main thread, and ~200 ms of optimising compiles on V8's threads, against 8 ms for JSON.parse).
 * A larger document is scanned from the byte where it passed this size, with what came before.
 */
export const WHOLE_BELOW_BYTES = 4 * 1024 * 1024

export interface ScanOptions {
  /** Hold and parse whole a document of at most this many bytes (default WHOLE_BELOW_BYTES; 0: always scan). */
  wholeBelowBytes?: number
}

const isSpace = (c: number) => c === 0x20 || c === 0x0a || c === 0x0d || c === 0x09
const malformed = (at: number) => new SyntaxError(`Malformed JSON near byte ${at}`)

/**
 * parseWithItems as the bytes arrive: a listing larger than WHOLE_BELOW_BYTES is never held whole
 * (35 MB for 100,000 files), and its elements are parsed while the rest is still on the way. `push` each piece in
 * order, then `end` for the document with the array emptied. Only the element being read and the
 * document around the array are kept. Bytes that cannot be JSON throw a SyntaxError: once the
 * document is being scanned, a broken structure (a stray comma, a bracket that does not match) as
 * soon as it arrives; the rest, and anything in a document held whole, at `end`.
 */
export class JsonItemScanner {
  private readonly stack: Frame[] = []
  /** Stack depth inside the array once it opened; -1 before. */
  private arrayDepth = -1
  private arrayClosed = false
  private inString = false
  private escaped = false
  /** A key being read (only while the array is still to be found), from earlier pieces. */
  private keyParts: Buffer[] | undefined
  /** The element being read: whether one is, and its bytes from earlier pieces. */
  private inItem = false
  /** A comma of the array was the last thing read: an element must follow, not the end. */
  private afterComma = false
  private itemParts: Buffer[] = []
  /** The document but for the array's elements. */
  private readonly rest: Buffer[] = []
  /** Bytes pushed before the current piece (for error messages). */
  private offset = 0
  /** Pieces held while the document may still be small enough to parse whole; undefined once scanning. */
  private held: Buffer[] | undefined = []
  private heldBytes = 0
  private readonly wholeBelowBytes: number

  constructor(private readonly arrayPath: string[], private readonly each: (item: unknown) => void, o: ScanOptions = {}) {
    this.wholeBelowBytes = o.wholeBelowBytes ?? WHOLE_BELOW_BYTES
  }

  push(piece: Buffer): void {
    const {held} = this
    if (held) {
      if (this.heldBytes + piece.length <= this.wholeBelowBytes) {
        held.push(Buffer.from(piece))
        this.heldBytes += piece.length
        return
      }
      this.held = undefined
      for (const part of held) this.scan(part)
    }
    this.scan(piece)
  }

  private scan(piece: Buffer): void {
    if (this.arrayClosed) {
      this.rest.push(Buffer.from(piece))
      this.offset += piece.length
      return
    }
    const {stack} = this
    let restFrom = this.arrayDepth < 0 ? 0 : -1
    let itemFrom = this.inItem ? 0 : -1
    let keyFrom = 0
    for (let i = 0; i < piece.length; i++) {
      const c = piece[i]
      if (this.inString) {
        if (this.escaped) this.escaped = false
        else if (c === BACKSLASH) this.escaped = true
        else if (c === QUOTE) {
          this.inString = false
          if (this.keyParts) {
            this.keyParts.push(piece.subarray(keyFrom, i + 1))
            stack[stack.length - 1].key = JSON.parse(Buffer.concat(this.keyParts).toString('utf8')) as string
            this.keyParts = undefined
          }
        }
        continue
      }
      if (isSpace(c)) continue
      const top = stack[stack.length - 1]
      if (stack.length === this.arrayDepth && !this.inItem) {
        if (c === COMMA || (c === CLOSE_ARRAY && this.afterComma)) throw malformed(this.offset + i)
        if (c !== CLOSE_ARRAY) {
          this.inItem = true
          this.afterComma = false
          itemFrom = i
        }
      }
      if (c === QUOTE) {
        this.inString = true
        if (top && !top.array && top.expectKey) {
          top.expectKey = false
          // Keys matter only on the way to the array: those inside its elements are JSON.parse's.
          if (this.arrayDepth < 0) {
            this.keyParts = []
            keyFrom = i
          }
        }
        continue
      }
      if (c === OPEN_OBJECT || c === OPEN_ARRAY) {
        const array = c === OPEN_ARRAY
        stack.push({array, key: undefined, expectKey: !array})
        if (array && this.arrayDepth < 0 && this.atPath()) {
          this.arrayDepth = stack.length
          this.rest.push(Buffer.from(piece.subarray(restFrom, i + 1)))
          restFrom = -1
        }
        continue
      }
      if (c === CLOSE_OBJECT || c === CLOSE_ARRAY) {
        const closed = stack.pop()
        if (!closed || closed.array !== (c === CLOSE_ARRAY)) throw malformed(this.offset + i)
        if (stack.length + 1 === this.arrayDepth) {
          if (this.inItem) this.endItem(piece, itemFrom, i)
          // The rest is parsed with the document: its bytes are kept as they come.
          this.arrayClosed = true
          this.rest.push(Buffer.from(piece.subarray(i)))
          this.offset += piece.length
          return
        }
        continue
      }
      if (c === COMMA) {
        if (!top) throw malformed(this.offset + i)
        if (stack.length === this.arrayDepth) {
          this.endItem(piece, itemFrom, i)
          this.afterComma = true
          itemFrom = -1
        }
        if (!top.array) top.expectKey = true
      }
    }
    if (this.keyParts) this.keyParts.push(Buffer.from(piece.subarray(keyFrom)))
    if (this.inItem) this.itemParts.push(Buffer.from(piece.subarray(itemFrom)))
    if (restFrom >= 0) this.rest.push(Buffer.from(piece.subarray(restFrom)))
    this.offset += piece.length
  }

  /** The document with the array emptied (the whole document when it has no such array). */
  end(): unknown {
    const {held} = this
    this.held = undefined
    if (held) return this.fromWhole(JSON.parse((held.length === 1 ? held[0] : Buffer.concat(held)).toString('utf8')))
    // After the array the scanner only gathers bytes: JSON.parse judges the rest.
    if (!this.arrayClosed && (this.inString || this.stack.length > 0)) throw new SyntaxError('Unexpected end of JSON input')
    const doc = JSON.parse(Buffer.concat(this.rest).toString('utf8')) as unknown
    if (this.arrayDepth >= 0) return doc
    return this.fromWhole(doc)
  }

  /** The array at the path, from a document parsed whole, handed over and emptied. */
  private fromWhole(doc: unknown): unknown {
    // Held whole, or not met on the way (a document the scanner does not follow to it): the same result.
    let at = doc as Record<string, unknown> | undefined
    for (const key of this.arrayPath) at = at && typeof at === 'object' && !Array.isArray(at) && Object.hasOwn(at, key) ? at[key] as Record<string, unknown> : undefined
    if (Array.isArray(at)) {
      for (const item of at) this.each(item)
      at.length = 0
    }
    return doc
  }

  private atPath(): boolean {
    const {stack, arrayPath} = this
    if (stack.length - 1 !== arrayPath.length) return false
    for (let i = 0; i < arrayPath.length; i++) if (stack[i].array || stack[i].key !== arrayPath[i]) return false
    return true
  }

  /** The element that ends before `end` in `piece`, begun at `from` (0: in an earlier piece, whose bytes are itemParts). */
  private endItem(piece: Buffer, from: number, end: number): void {
    const bytes = this.itemParts.length === 0 ? piece.subarray(from, end) : Buffer.concat([...this.itemParts, piece.subarray(from, end)])
    this.itemParts = []
    this.inItem = false
    this.each(JSON.parse(bytes.toString('utf8')))
  }
}
