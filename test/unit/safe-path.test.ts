import path from 'node:path'

import {expect} from 'chai'

import {RESERVED_TOP_LEVEL} from '../../src/store/layout.js'
import {reservedReason, resolveInside, unsafeReason} from '../../src/store/safe-path.js'

describe('safe-path: names from the hub', () => {
  it('a segment is measured in UTF-8 bytes: 255 pass, 256 do not, whatever the characters', () => {
    for (const [ch, bytes] of [['a', 1], ['\u00e9', 2], ['\u4e2d', 3], ['\u{1f600}', 4]] as const) {
      const fits = 'x'.repeat(255 % bytes) + ch.repeat(Math.floor(255 / bytes))
      expect(Buffer.byteLength(fits)).to.equal(255)
      expect(unsafeReason(`dir/${fits}`), `${bytes}-byte characters`).to.equal(undefined)
      expect(unsafeReason(`dir/${fits}x`), `${bytes}-byte characters`).to.equal('path segment longer than 255 bytes')
    }
  })

  it('reserved top-level names are refused in any case and with trailing dots or spaces; lookalikes are not', () => {
    // reservedReason skips every name that does not start with a dot: each reserved name must.
    for (const name of RESERVED_TOP_LEVEL) expect(name.startsWith('.'), name).to.equal(true)
    for (const p of ['.msc', '.MSC', '.msc/x', '.Ms-Resume/journal-v1.json', '.mdl. ', '.mv..', '.lock', '.\u006d\u0073\u0063']) {
      expect(reservedReason(p), p).to.be.a('string')
    }
    for (const p of ['msc', 'x/.msc', '\u0307.msc', ' .msc', 'a.msc', '.msc2', '.mscx/y']) expect(reservedReason(p), p).to.equal(undefined)
  })

  it('resolveInside gives the path under the root, for each root asked in turn (relative ones from the working directory)', () => {
    for (const root of ['/tmp/a', '/tmp/b/', 'rel/dir', '/tmp/a']) {
      expect(resolveInside(root, 'x/y.bin')).to.equal(path.join(path.resolve(root), 'x', 'y.bin'))
    }
    expect(() => resolveInside('/tmp/a', '../y')).to.throw(/unsafe file name/)
    expect(() => resolveInside('/tmp/a', '.msc/y')).to.throw(/overwrite/)
  })
})
