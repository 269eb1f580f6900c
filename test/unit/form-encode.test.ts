import {expect} from 'chai'

import {formEncode} from '../../src/hub/form-encode.js'
import {ModelScopeHub} from '../../src/hub/modelscope/modelscope-hub.js'
import {mulberry32} from '../support/process.js'

const asForms = (value: string) => new URLSearchParams({v: value}).toString().slice(2)

describe('form-encode: a query value as URLSearchParams writes it', () => {
  it('every ASCII character, and random strings of the characters that differ (unicode, surrogates, lone halves)', () => {
    for (let c = 0; c < 128; c++) expect(formEncode(String.fromCharCode(c)), `char ${c}`).to.equal(asForms(String.fromCharCode(c)))
    const alphabet = ['a', 'Z', '0', ' ', '!', "'", '(', ')', '~', '*', '-', '.', '_', '/', '%', '+', '&', '=', '?', '#', '\u00e9', '\u4e2d', '\u{1f600}', '\ud800', '\udfff', '\u2028']
    const rng = mulberry32(2027)
    for (let n = 0; n < 2000; n++) {
      const s = Array.from({length: Math.floor(rng() * 12)}, () => alphabet[Math.floor(rng() * alphabet.length)]).join('')
      expect(formEncode(s), JSON.stringify(s)).to.equal(asForms(s))
    }
  })

  it("the hub's file URLs are the ones URLSearchParams made, for models and datasets, across models and revisions", () => {
    for (const repoKind of ['model', 'dataset'] as const) {
      const hub = new ModelScopeHub({endpoint: 'https://hub.example', timeoutMs: 1000, maxRetryAfterMs: 1000, repoKind})
      for (const [modelId, revision, filePath] of [['o/n', 'master', 'a b/c+d.bin'], ['o/n', 'v1.0 (x)', "it's~here!"], ['o/m', 'master', '\u4e2d/\u{1f600}.json'], ['o/n', 'master', 'x']]) {
        const query = new URLSearchParams(repoKind === 'dataset' ? {Source: 'SDK', Revision: revision, FilePath: filePath} : {Revision: revision, FilePath: filePath})
        expect(hub.fileUrl(modelId, revision, filePath)).to.equal(`https://hub.example/api/v1/${repoKind}s/${modelId}/repo?${query.toString()}`)
      }
    }
  })
})
