import {spawnSync} from 'node:child_process'
import {existsSync} from 'node:fs'

import {expect} from 'chai'

import {loadNativeAddon, nativeAddonCandidates, trimMalloc} from '../../src/integrity/native-addon.js'
import {skipBecause} from '../support/process.js'

/**
 * A child that fills malloc's heap with 64 KiB buffers (as a listing's socket reads do), keeps a
 * small allocation above each, frees the buffers, then calls trimMalloc: the resident memory must
 * come back. Without the trim glibc keeps it (the kept allocations pin the heap's top).
 */
const CHILD = `
const addon = require(process.argv[1])
const rssAnonKb = () => Number(/RssAnon:\\s+(\\d+)/.exec(require('node:fs').readFileSync('/proc/self/status', 'utf8'))[1])
let big = []
const pins = []
for (let i = 0; i < 600; i++) {
  const b = Buffer.allocUnsafeSlow(64 * 1024)
  b.fill(i)
  big.push(b)
  pins.push(Buffer.allocUnsafeSlow(200).fill(1))
}
big = null
globalThis.gc()
globalThis.gc()
const before = rssAnonKb()
const released = addon.trimMalloc()
const after = rssAnonKb()
process.stdout.write(JSON.stringify({before, after, released, pins: pins.length}))
`

describe('native trimMalloc: malloc\'s free memory back to the system', () => {
  it('returns the pages of freed buffers that smaller live allocations kept in the heap', function () {
    if (process.platform !== 'linux') skipBecause(this, 'malloc_trim is glibc\'s')
    const loaded = loadNativeAddon()
    if (!loaded) skipBecause(this, 'the native addon is not built')
    if (typeof loaded!.addon.trimMalloc !== 'function') expect.fail('the addon has no trimMalloc: rebuild it (npm ci)')
    const file = nativeAddonCandidates().find((candidate) => existsSync(candidate))!
    const child = spawnSync(process.execPath, ['--expose-gc', '-e', CHILD, file], {encoding: 'utf8'})
    expect(child.status, child.stderr).to.equal(0)
    const out = JSON.parse(child.stdout) as {before: number; after: number; released: boolean}
    expect(out.released).to.equal(true)
    // 600 x 64 KiB = 37.5 MiB freed; most of it must leave the process.
    expect(out.before - out.after, JSON.stringify(out)).to.be.greaterThan(20 * 1024)
    // In this process too: callable, and a boolean.
    expect(trimMalloc()).to.be.a('boolean')
  })
})
