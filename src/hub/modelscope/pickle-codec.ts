/**
 * Python pickles of the official client's index files, both ways. Written as CPython's C pickler
 * writes them with `pickle.dump` (protocol 4, the default since Python 3.8): PROTO 4, 64 KiB
 * FRAMEs, MEMOIZE after every str/list/dict, the two key strings shared through BINGET, batches of
 * 1000 under MARK…APPENDS / MARK…SETITEMS. For the shapes we write, the bytes equal
 * `pickle.dumps(obj, protocol=4)` of the same object (the tests hold us to that).
 *
 * The reader is a small, non-executing stack machine for the opcodes such files use (protocols 1
 * to 5; not 0, which is text); anything else, or any other shape, gives null. It never throws and
 * never runs code. Pure: no file system here (python-index.ts reads and writes the files).
 */
/** One `.msc` entry, keys spelled and ordered exactly as the official client writes them. */
export interface PythonIndexEntry {
  Path: string
  Revision: string
}

export type PickleDict = Record<string, string>
/** The only shapes decodePickle accepts: a dict of str → str, or a list of such dicts. */
export type DecodedPickle = PickleDict | PickleDict[]

// ---------------------------------------------------------------------------------------------
// Pickle opcodes (Lib/pickletools.py)
// ---------------------------------------------------------------------------------------------
const OP = {
  MARK: 0x28, // (
  STOP: 0x2e, // .
  BINUNICODE: 0x58, // X  + u32 len + utf8
  APPEND: 0x61, // a
  APPENDS: 0x65, // e
  BINGET: 0x68, // h  + u8
  LONG_BINGET: 0x6a, // j  + u32
  BINPUT: 0x71, // q  + u8
  LONG_BINPUT: 0x72, // r  + u32
  SETITEM: 0x73, // s
  SETITEMS: 0x75, // u
  EMPTY_DICT: 0x7d, // }
  EMPTY_LIST: 0x5d, // ]
  DICT: 0x64, // d  (protocol 0/1: MARK k v ... DICT)
  LIST: 0x6c, // l  (protocol 0/1: MARK x ... LIST)
  PROTO: 0x80, //    + u8
  SHORT_BINUNICODE: 0x8c, // + u8 len + utf8
  BINUNICODE8: 0x8d, // + u64 len + utf8
  MEMOIZE: 0x94,
  FRAME: 0x95, //    + u64 len
} as const

const PROTOCOL = 4
const FRAME_HEADER_SIZE = 9
/** CPython's _FRAME_SIZE_TARGET / _FRAME_SIZE_MIN. */
const FRAME_SIZE_TARGET = 64 * 1024
const FRAME_SIZE_MIN = 4
/** CPython's _BATCHSIZE for APPENDS / SETITEMS. */
const BATCH_SIZE = 1000

// ---------------------------------------------------------------------------------------------
// UTF-8 as Python's pickle does it: `encode('utf-8', 'surrogatepass')`, so a lone surrogate is
// written as its 3-byte form instead of being replaced (Buffer.from would write U+FFFD).
// ---------------------------------------------------------------------------------------------
function encodeUtf8SurrogatePass(s: string): Buffer {
  if (!/[\uD800-\uDFFF]/.test(s)) return Buffer.from(s, 'utf8')
  const out: number[] = []
  for (let i = 0; i < s.length; i++) {
    let c = s.charCodeAt(i)
    if (c >= 0xd800 && c <= 0xdbff && i + 1 < s.length) {
      const d = s.charCodeAt(i + 1)
      if (d >= 0xdc00 && d <= 0xdfff) {
        c = 0x10000 + ((c - 0xd800) << 10) + (d - 0xdc00)
        i++
        out.push(0xf0 | (c >> 18), 0x80 | ((c >> 12) & 0x3f), 0x80 | ((c >> 6) & 0x3f), 0x80 | (c & 0x3f))
        continue
      }
    }
    if (c < 0x80) out.push(c)
    else if (c < 0x800) out.push(0xc0 | (c >> 6), 0x80 | (c & 0x3f))
    else out.push(0xe0 | (c >> 12), 0x80 | ((c >> 6) & 0x3f), 0x80 | (c & 0x3f))
  }
  return Buffer.from(out)
}

const strictUtf8 = new TextDecoder('utf-8', {fatal: true, ignoreBOM: true})

/** `bytes.decode('utf-8', 'surrogatepass')`; null where Python would raise. */
function decodeUtf8SurrogatePass(bytes: Uint8Array): string | null {
  try {
    return strictUtf8.decode(bytes)
  } catch {
    // Fall through: maybe encoded surrogates (ED A0..BF xx), which only surrogatepass accepts.
  }
  let out = ''
  let i = 0
  const n = bytes.length
  const cont = (k: number): number => (k < n && (bytes[k] & 0xc0) === 0x80 ? bytes[k] & 0x3f : -1)
  while (i < n) {
    const b = bytes[i]
    if (b < 0x80) {
      out += String.fromCharCode(b)
      i += 1
    } else if (b >= 0xc2 && b <= 0xdf) {
      const c1 = cont(i + 1)
      if (c1 < 0) return null
      out += String.fromCharCode(((b & 0x1f) << 6) | c1)
      i += 2
    } else if (b >= 0xe0 && b <= 0xef) {
      const c1 = cont(i + 1)
      const c2 = cont(i + 2)
      if (c1 < 0 || c2 < 0) return null
      const cp = ((b & 0x0f) << 12) | (c1 << 6) | c2
      if (cp < 0x800) return null // overlong
      out += String.fromCharCode(cp)
      i += 3
    } else if (b >= 0xf0 && b <= 0xf4) {
      const c1 = cont(i + 1)
      const c2 = cont(i + 2)
      const c3 = cont(i + 3)
      if (c1 < 0 || c2 < 0 || c3 < 0) return null
      const cp = ((b & 0x07) << 18) | (c1 << 12) | (c2 << 6) | c3
      if (cp < 0x10000 || cp > 0x10ffff) return null
      out += String.fromCodePoint(cp)
      i += 4
    } else {
      return null
    }
  }
  return out
}

// ---------------------------------------------------------------------------------------------
// Writer
// ---------------------------------------------------------------------------------------------

/** An output buffer with CPython's protocol-4 framing (Modules/_pickle.c, _Pickler_Write & co). */
class PickleSink {
  private buf: Buffer
  private len = 0
  private frameStart = -1
  framing = false

  /** `room`: bytes to start with, unfilled (pages never written are never resident). */
  constructor(room = 1024) {
    this.buf = Buffer.allocUnsafe(room)
  }

  private reserve(n: number): void {
    if (this.len + n <= this.buf.length) return
    let size = this.buf.length * 2
    while (size < this.len + n) size *= 2
    // Unfilled: only what is written is ever touched (a 100,000-file .msc grows to 16 MB of room).
    const next = Buffer.allocUnsafe(size)
    this.buf.copy(next, 0, 0, this.len)
    this.buf = next
  }

  write(bytes: Uint8Array | number[]): void {
    const n = bytes.length
    if (this.framing && this.frameStart === -1) {
      this.reserve(FRAME_HEADER_SIZE)
      this.frameStart = this.len
      this.len += FRAME_HEADER_SIZE
    }
    this.reserve(n)
    if (Array.isArray(bytes)) for (let i = 0; i < n; i++) this.buf[this.len + i] = bytes[i]
    else this.buf.set(bytes, this.len)
    this.len += n
  }

  commitFrame(): void {
    if (!this.framing || this.frameStart === -1) return
    const frameLen = this.len - this.frameStart - FRAME_HEADER_SIZE
    if (frameLen >= FRAME_SIZE_MIN) {
      this.buf[this.frameStart] = OP.FRAME
      this.buf.writeBigUInt64LE(BigInt(frameLen), this.frameStart + 1)
    } else {
      this.buf.copyWithin(this.frameStart, this.frameStart + FRAME_HEADER_SIZE, this.len)
      this.len -= FRAME_HEADER_SIZE
    }
    this.frameStart = -1
  }

  /** Called before each object is saved: closes the frame once it reached the target size. */
  opcodeBoundary(): void {
    if (!this.framing || this.frameStart === -1) return
    if (this.len - this.frameStart - FRAME_HEADER_SIZE >= FRAME_SIZE_TARGET) this.commitFrame()
  }

  /** A header plus a payload; payloads of 64 KiB or more go outside any frame, as CPython does. */
  writeBytes(header: number[], data: Uint8Array): void {
    if (data.length < FRAME_SIZE_TARGET) {
      this.write(header)
      this.write(data)
      return
    }
    this.commitFrame()
    const framing = this.framing
    this.framing = false
    this.write(header)
    this.write(data)
    this.framing = framing
  }

  /** The bytes written, without a copy (the pickle is written out and let go). */
  result(): Buffer {
    return this.buf.subarray(0, this.len)
  }
}

/**
 * A protocol-4 pickler for str, list of (str | dict) and dict of str → str. CPython memoizes by
 * object identity, so to produce its bytes we share a memo slot (re-emitted with BINGET) exactly
 * where CPython has one object: dict keys listed in `sharedKeys` (the client's literal `'Path'` /
 * `'Revision'` constants, used as keys only), and the empty string and 1-character Latin-1 strings
 * (interpreter-wide singletons, whether key or value). Other equal strings are separate objects.
 */
class Pickler {
  private readonly sink: PickleSink
  private memoSize = 0
  private readonly keyMemo = new Map<string, number>()
  private readonly singletonMemo = new Map<string, number>()

  constructor(private readonly sharedKeys: ReadonlySet<string>, room?: number) {
    this.sink = new PickleSink(room)
  }

  dump(value: string | PickleDict | Array<string | PickleDict>): Buffer {
    return this.framed(() => this.save(value))
  }

  /** A list of `items`, each pickled as `as` makes it when its turn comes (no copy of the whole list). */
  dumpList<T>(items: ReadonlyArray<T>, as: (item: T) => string | PickleDict): Buffer {
    return this.framed(() => {
      this.sink.opcodeBoundary()
      this.saveList(items, as)
    })
  }

  private framed(body: () => void): Buffer {
    this.sink.write([OP.PROTO, PROTOCOL])
    this.sink.framing = true
    body()
    this.sink.write([OP.STOP])
    this.sink.commitFrame()
    return this.sink.result()
  }

  private memoize(): number {
    this.sink.write([OP.MEMOIZE])
    return this.memoSize++
  }

  private memoFor(s: string, isKey: boolean): Map<string, number> | null {
    if (s.length === 0 || (s.length === 1 && s.charCodeAt(0) < 256)) return this.singletonMemo
    return isKey && this.sharedKeys.has(s) ? this.keyMemo : null
  }

  private save(value: string | PickleDict | Array<string | PickleDict>, isKey = false): void {
    this.sink.opcodeBoundary()
    if (typeof value === 'string') this.saveStr(value, isKey)
    else if (Array.isArray(value)) this.saveList(value)
    else this.saveDict(value)
  }

  private saveStr(s: string, isKey: boolean): void {
    const shared = this.memoFor(s, isKey)
    if (shared) {
      const idx = shared.get(s)
      if (idx !== undefined) {
        if (idx < 256) this.sink.write([OP.BINGET, idx])
        else this.sink.write([OP.LONG_BINGET, idx & 0xff, (idx >>> 8) & 0xff, (idx >>> 16) & 0xff, idx >>> 24])
        return
      }
    }
    const data = encodeUtf8SurrogatePass(s)
    const n = data.length
    let header: number[]
    if (n <= 0xff) {
      header = [OP.SHORT_BINUNICODE, n]
    } else if (n <= 0xffffffff) {
      header = [OP.BINUNICODE, n & 0xff, (n >>> 8) & 0xff, (n >>> 16) & 0xff, n >>> 24]
    } else {
      const h = Buffer.alloc(9)
      h[0] = OP.BINUNICODE8
      h.writeBigUInt64LE(BigInt(n), 1)
      header = [...h]
    }
    this.sink.writeBytes(header, data)
    const idx = this.memoize()
    if (shared) shared.set(s, idx)
  }

  private saveList<T>(list: ReadonlyArray<T>, as: (item: T) => string | PickleDict | Array<string | PickleDict> = (item) => item as string): void {
    this.sink.write([OP.EMPTY_LIST])
    this.memoize()
    if (list.length === 0) return
    if (list.length === 1) {
      this.save(as(list[0]))
      this.sink.write([OP.APPEND])
      return
    }
    for (let start = 0; start < list.length; start += BATCH_SIZE) {
      this.sink.write([OP.MARK])
      const end = Math.min(start + BATCH_SIZE, list.length)
      for (let i = start; i < end; i++) this.save(as(list[i]))
      this.sink.write([OP.APPENDS])
    }
  }

  private saveDict(dict: PickleDict): void {
    this.sink.write([OP.EMPTY_DICT])
    this.memoize()
    const items = Object.entries(dict)
    if (items.length === 0) return
    if (items.length === 1) {
      this.save(items[0][0], true)
      this.save(items[0][1])
      this.sink.write([OP.SETITEM])
      return
    }
    for (let start = 0; start < items.length; start += BATCH_SIZE) {
      this.sink.write([OP.MARK])
      const end = Math.min(start + BATCH_SIZE, items.length)
      for (let i = start; i < end; i++) {
        this.save(items[i][0], true)
        this.save(items[i][1])
      }
      this.sink.write([OP.SETITEMS])
    }
  }
}

export function assertStr(value: unknown, what: string): asserts value is string {
  if (typeof value !== 'string') throw new TypeError(`${what} must be a string, got ${typeof value}`)
}

/**
 * The `.msc` bytes for `files`: a protocol-4 pickle of `[{'Path': p, 'Revision': r}, ...]`, equal
 * to what `pickle.dump` writes for the list the official client builds. Extra properties on the
 * entries are ignored: the client compares whole dicts, so each entry must hold exactly two keys.
 */
export function encodePickleIndex(files: ReadonlyArray<PythonIndexEntry>): Buffer {
  files.forEach((f, i) => {
    assertStr(f?.Path, `files[${i}].Path`)
    assertStr(f?.Revision, `files[${i}].Revision`)
  })
  // Room for the worst case at once (3 UTF-8 bytes a UTF-16 unit, 48 bytes of opcodes an entry,
  // frames): grown by doubling, a 100,000-file index left 12 MB of outgrown buffers behind.
  let room = 4096
  for (const f of files) room += 3 * (f.Path.length + f.Revision.length) + 48
  room += 9 * Math.ceil(room / FRAME_SIZE_TARGET)
  return new Pickler(new Set(['Path', 'Revision']), room).dumpList(files, (f) => ({Path: f.Path, Revision: f.Revision}))
}

/** A protocol-4 pickle of a dict of str → str, in insertion order (`.mdl`: `{'id': ...}`). */
export function encodePickleDict(obj: Readonly<Record<string, string>>): Buffer {
  const dict: PickleDict = {}
  for (const [k, v] of Object.entries(obj)) {
    assertStr(v, `value of ${JSON.stringify(k)}`)
    Object.defineProperty(dict, k, {value: v, enumerable: true, writable: true, configurable: true})
  }
  return new Pickler(new Set(Object.keys(dict))).dump(dict)
}

// ---------------------------------------------------------------------------------------------
// Reader
// ---------------------------------------------------------------------------------------------

type Value = string | Value[] | {[key: string]: Value}
const MARK_LIMIT = 1 << 16 // nesting of MARKs; our shapes need 2
/**
 * List items and dict values in one pickle. BINGET repeats a memoized object for 2 bytes, so a
 * 64 MiB pickle could otherwise decode to 32 million references (and be re-encoded in full).
 */
const ITEM_LIMIT = 1 << 21

class Bad extends Error {}

function isDict(v: Value | undefined): v is {[key: string]: Value} {
  return typeof v === 'object' && v !== null && !Array.isArray(v)
}

function isStrDict(v: Value | undefined): v is PickleDict {
  return isDict(v) && Object.values(v).every((x) => typeof x === 'string')
}

function setItem(dict: {[key: string]: Value}, key: Value, value: Value): void {
  if (typeof key !== 'string') throw new Bad('unhashable or non-str key')
  // defineProperty, not assignment: a key named "__proto__" must stay a plain key.
  Object.defineProperty(dict, key, {value, enumerable: true, writable: true, configurable: true})
}

/**
 * Decodes a pickle holding a dict of str → str or a list of such dicts (`.msc` / `.mdl` as any
 * Python writes them with protocol 2 to 5). Anything else, or malformed input: null. Never throws,
 * never executes anything (no GLOBAL/REDUCE support by design).
 */
export function decodePickle(buf: Uint8Array): DecodedPickle | null {
  try {
    const result = run(buf)
    if (Array.isArray(result)) return result.every(isStrDict) ? (result as PickleDict[]) : null
    return isStrDict(result) ? result : null
  } catch {
    return null
  }
}

function run(input: Uint8Array): Value {
  const buf = Buffer.from(input.buffer, input.byteOffset, input.byteLength)
  const n = buf.length
  let pos = 0
  let stack: Value[] = []
  const metastack: Value[][] = []
  const memo = new Map<number, Value>()
  let items = 0
  const count = (k: number): void => {
    items += k
    if (items > ITEM_LIMIT) throw new Bad('too many items')
  }

  const need = (k: number): void => {
    if (k < 0 || pos + k > n) throw new Bad('truncated')
  }
  const u8 = (): number => {
    need(1)
    return buf[pos++]
  }
  const u32 = (): number => {
    need(4)
    const v = buf.readUInt32LE(pos)
    pos += 4
    return v
  }
  const u64 = (): number => {
    need(8)
    const v = buf.readBigUInt64LE(pos)
    pos += 8
    if (v > BigInt(n)) throw new Bad('length beyond input')
    return Number(v)
  }
  const str = (len: number): string => {
    need(len)
    const s = decodeUtf8SurrogatePass(buf.subarray(pos, pos + len))
    pos += len
    if (s === null) throw new Bad('invalid utf-8')
    return s
  }
  const top = (): Value => {
    if (stack.length === 0) throw new Bad('empty stack')
    return stack[stack.length - 1]
  }
  const popMark = (): Value[] => {
    const items = stack
    const prev = metastack.pop()
    if (prev === undefined) throw new Bad('no MARK')
    stack = prev
    return items
  }
  const get = (idx: number): void => {
    const v = memo.get(idx)
    if (v === undefined) throw new Bad('memo miss')
    stack.push(v)
  }

  if (n === 0) throw new Bad('empty')
  for (;;) {
    const op = u8()
    switch (op) {
      case OP.PROTO: {
        const proto = u8()
        if (proto < 2 || proto > 5) throw new Bad('protocol')
        break
      }
      case OP.FRAME: {
        const len = u64()
        need(len)
        break
      }
      case OP.STOP: {
        if (metastack.length !== 0 || stack.length !== 1) throw new Bad('unbalanced at STOP')
        return stack[0]
      }
      case OP.MARK:
        if (metastack.length >= MARK_LIMIT) throw new Bad('too deep')
        metastack.push(stack)
        stack = []
        break
      case OP.EMPTY_LIST:
        stack.push([])
        break
      case OP.EMPTY_DICT:
        stack.push({})
        break
      case OP.LIST: {
        const list = popMark()
        count(list.length)
        stack.push(list)
        break
      }
      case OP.DICT: {
        const items = popMark()
        if (items.length % 2 !== 0) throw new Bad('odd DICT')
        count(items.length / 2)
        const d: {[key: string]: Value} = {}
        for (let i = 0; i < items.length; i += 2) setItem(d, items[i], items[i + 1])
        stack.push(d)
        break
      }
      case OP.SHORT_BINUNICODE:
        stack.push(str(u8()))
        break
      case OP.BINUNICODE:
        stack.push(str(u32()))
        break
      case OP.BINUNICODE8:
        stack.push(str(u64()))
        break
      case OP.MEMOIZE:
        memo.set(memo.size, top())
        break
      case OP.BINPUT:
        memo.set(u8(), top())
        break
      case OP.LONG_BINPUT:
        memo.set(u32(), top())
        break
      case OP.BINGET:
        get(u8())
        break
      case OP.LONG_BINGET:
        get(u32())
        break
      case OP.APPEND: {
        if (stack.length < 2) throw new Bad('APPEND underflow')
        const item = stack.pop() as Value
        const list = top()
        if (!Array.isArray(list)) throw new Bad('APPEND to non-list')
        count(1)
        list.push(item)
        break
      }
      case OP.APPENDS: {
        const items = popMark()
        const list = top()
        if (!Array.isArray(list)) throw new Bad('APPENDS to non-list')
        count(items.length)
        for (const item of items) list.push(item)
        break
      }
      case OP.SETITEM: {
        if (stack.length < 3) throw new Bad('SETITEM underflow')
        const value = stack.pop() as Value
        const key = stack.pop() as Value
        const dict = top()
        if (!isDict(dict)) throw new Bad('SETITEM on non-dict')
        count(1)
        setItem(dict, key, value)
        break
      }
      case OP.SETITEMS: {
        const items = popMark()
        const dict = top()
        if (!isDict(dict) || items.length % 2 !== 0) throw new Bad('bad SETITEMS')
        count(items.length / 2)
        for (let i = 0; i < items.length; i += 2) setItem(dict, items[i], items[i + 1])
        break
      }
      default:
        throw new Bad(`unsupported opcode 0x${op.toString(16)}`)
    }
  }
}
