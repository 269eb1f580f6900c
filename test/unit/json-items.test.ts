import {expect} from 'chai'

import {JsonItemScanner, type ScanOptions, WHOLE_BELOW_BYTES, parseWithItems} from '../../src/json-items.js'
import {mulberry32} from '../support/process.js'

/** Random JSON values with the characters that trip a scanner: quotes, backslashes, brackets in strings. */
function randomValue(rng: () => number, depth: number): unknown {
  const pick = Math.floor(rng() * (depth > 3 ? 4 : 7))
  const tricky = ['a', '"', '\\', '[', ']', '{', '}', ',', ':', ' ', '\n', 'é', '\u2028', '😀', '\\"']
  const str = () => Array.from({length: Math.floor(rng() * 8)}, () => tricky[Math.floor(rng() * tricky.length)]).join('')
  switch (pick) {
    case 0: return str()
    case 1: return Math.floor(rng() * 1e6) - 5e5
    case 2: return rng() < 0.5
    case 3: return null
    case 4: return Array.from({length: Math.floor(rng() * 4)}, () => randomValue(rng, depth + 1))
    default: return Object.fromEntries(Array.from({length: Math.floor(rng() * 4)}, () => [str(), randomValue(rng, depth + 1)]))
  }
}

/** The bytes of `text` in pieces of random sizes (1 byte included: a piece may end anywhere, even inside a character). */
function pieces(text: string, rng: () => number): Buffer[] {
  const bytes = Buffer.from(text)
  const out: Buffer[] = []
  for (let at = 0; at < bytes.length;) {
    const n = rng() < 0.3 ? 1 : 1 + Math.floor(rng() * 40)
    out.push(bytes.subarray(at, at + n))
    at += n
  }
  return out
}

function scan(parts: Buffer[], path: string[], each: (item: unknown) => void, o: ScanOptions = {}): unknown {
  const scanner = new JsonItemScanner(path, each, o)
  for (const part of parts) scanner.push(Buffer.from(part))
  return scanner.end()
}

/** parseWithItems over the whole text, and the scanner over it in random pieces: both as JSON.parse. */
function check(doc: unknown, text: string, path: string[], rng = mulberry32(text.length)): void {
  const whole = JSON.parse(text) as Record<string, any>
  let at: any = whole
  for (const k of path) at = at?.[k]
  const expected = Array.isArray(at) ? [...at] : []
  if (Array.isArray(at)) at.length = 0
  // Held whole (the default for a small document), scanned from the first byte, and scanned from a
  // byte somewhere inside (where the document outgrew what is held whole).
  const modes: ScanOptions[] = [{}, {wholeBelowBytes: 0}, {wholeBelowBytes: Math.floor(rng() * text.length)}]
  const parsers = modes.flatMap((o) => [
    (each: (i: unknown) => void) => parseWithItems(Buffer.from(text), path, each, o),
    (each: (i: unknown) => void) => scan(pieces(text, rng), path, each, o),
  ])
  for (const parse of parsers) {
    const items: unknown[] = []
    const rest = parse((item) => items.push(item))
    expect(items, text).to.deep.equal(expected)
    expect(rest, text).to.deep.equal(whole)
  }
}

describe('listing JSON parsed an element at a time (json-items)', () => {
  it('gives the elements of the array at the path and the document with it emptied, as JSON.parse would', () => {
    const rng = mulberry32(1515)
    for (let n = 0; n < 400; n++) {
      const files = Array.from({length: Math.floor(rng() * 6)}, () => randomValue(rng, 1))
      const doc = {Code: 200, Data: {[String(randomValue(rng, 5))]: randomValue(rng, 2), Files: files, After: randomValue(rng, 2)}, Message: randomValue(rng, 3)}
      const indent = [undefined, 0, 1, 2, '\t'][n % 5] as number | string | undefined
      check(doc, JSON.stringify(doc, null, indent), ['Data', 'Files'])
    }
  })

  it('the same array name elsewhere is not taken; a missing path, an array at the root, odd spacing', () => {
    check({Files: [1, 2], Data: {Other: {Files: [3]}, Files: [{a: '[]'}, 'x', [], {}]}}, '{"Files":[1,2],"Data":{"Other":{"Files":[3]},"Files":[{"a":"[]"},"x",[],{}]}}', ['Data', 'Files'])
    check({Data: {}}, '{"Data":{}}', ['Data', 'Files'])
    check([1, 2], '[1,2]', ['Data', 'Files'])
    check({Data: {Files: []}}, ' { "Data" :\n{ "Files" : [ ] } } ', ['Data', 'Files'])
    check({Data: {Files: [1, {b: [2, 3]}, 'z']}}, '{"Data":{"Files":[ 1 ,\r\n{"b":[2,3]} , "z" ]}}', ['Data', 'Files'])
    // A key with an escape that decodes to "Files".
    check({Data: {Files: [5]}}, '{"Data":{"Fil\\u0065s":[5]}}', ['Data', 'Files'])
  })

  it('malformed JSON throws, as JSON.parse does, whole or in pieces', () => {
    const rng = mulberry32(7)
    for (const text of ['{"Data":{"Files":[1,2}}', '{"Data":{"Files":[1,,2]}}', '{"Data":{"Files":[,1]}}', '{"Data":{"Files":[1,]}}', '{"Data":{"Files":["a]}}',
      '{"Data":{"Files":[1,2]}', '{"Data":{"Files":[1,2]}}}', '{"Data":{"Files":[{"a":1]}}', '{"Data":', '', '{"Data":{"Files":[1 2]}}']) {
      expect(() => JSON.parse(text), text).to.throw(SyntaxError)
      for (const o of [{}, {wholeBelowBytes: 0}, {wholeBelowBytes: Math.floor(rng() * text.length)}]) {
        expect(() => parseWithItems(Buffer.from(text), ['Data', 'Files'], () => {}, o), text).to.throw(SyntaxError)
        expect(() => scan(pieces(text, rng), ['Data', 'Files'], () => {}, o), text).to.throw(SyntaxError)
      }
    }
  })

  it('keeps no more than the element being read once scanning: each element is handed over as soon as its last byte arrives', () => {
    const text = JSON.stringify({Code: 200, Data: {Files: [{Path: 'a', Size: 1}, {Path: 'b\\"]', Size: 2}, 'c']}, Message: 'ok'})
    const seen: unknown[] = []
    const scanner = new JsonItemScanner(['Data', 'Files'], (item) => seen.push(item), {wholeBelowBytes: 0})
    const bytes = Buffer.from(text)
    const firstEnd = text.indexOf('},') + 1
    scanner.push(bytes.subarray(0, firstEnd))
    expect(seen).to.deep.equal([])
    scanner.push(bytes.subarray(firstEnd, firstEnd + 1))
    expect(seen).to.deep.equal([{Path: 'a', Size: 1}])
    scanner.push(bytes.subarray(firstEnd + 1))
    expect(seen).to.deep.equal([{Path: 'a', Size: 1}, {Path: 'b\\"]', Size: 2}, 'c'])
    expect(scanner.end()).to.deep.equal({Code: 200, Data: {Files: []}, Message: 'ok'})
  })
  it('holds a document up to WHOLE_BELOW_BYTES and parses it at the end; one byte more and it is scanned as it arrives', () => {
    const files = Array.from({length: 3000}, (_, i) => ({Path: `shards/f${i}.bin`, Sha256: 'ab'.repeat(32), Size: 4096}))
    const text = JSON.stringify({Code: 200, Data: {Files: files}})
    const bytes = Buffer.from(text)
    for (const [wholeBelowBytes, scanning] of [[bytes.length, false], [bytes.length - 2, true]] as const) {
      const seen: unknown[] = []
      const scanner = new JsonItemScanner(['Data', 'Files'], (item) => seen.push(item), {wholeBelowBytes})
      scanner.push(bytes.subarray(0, bytes.length - 1))
      // Scanning: every element has been handed over before the document ends.
      expect(seen.length, String(wholeBelowBytes)).to.equal(scanning ? files.length : 0)
      scanner.push(bytes.subarray(bytes.length - 1))
      expect(scanner.end()).to.deep.equal({Code: 200, Data: {Files: []}})
      expect(seen).to.deep.equal(files)
    }
    expect(WHOLE_BELOW_BYTES).to.be.at.least(1024 * 1024).and.at.most(8 * 1024 * 1024)
  })
})
