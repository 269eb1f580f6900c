import {expect} from 'chai'

import {parseWithItems} from '../../src/json-items.js'
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

function check(doc: unknown, text: string, path: string[]): void {
  const items: unknown[] = []
  const rest = parseWithItems(Buffer.from(text), path, (item) => items.push(item))
  const whole = JSON.parse(text) as Record<string, any>
  let at: any = whole
  for (const k of path) at = at?.[k]
  expect(items, text).to.deep.equal(Array.isArray(at) ? at : [])
  if (Array.isArray(at)) at.length = 0
  expect(rest, text).to.deep.equal(whole)
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

  it('malformed JSON throws, as JSON.parse does', () => {
    for (const text of ['{"Data":{"Files":[1,2}}', '{"Data":{"Files":[1,,2]}}', '{"Data":{"Files":["a]}}', '{"Data":', '']) {
      expect(() => parseWithItems(Buffer.from(text), ['Data', 'Files'], () => {}), text).to.throw(SyntaxError)
    }
  })
})
