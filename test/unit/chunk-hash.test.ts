import {expect} from 'chai'
import {createHash, randomBytes} from 'node:crypto'
import {existsSync} from 'node:fs'
import fs from 'node:fs/promises'
import os from 'node:os'
import path from 'node:path'

import {chunkSumsOfOpenFile, chunkSumsOnDisk, chunkSumsThroughNode} from '../../src/integrity/check.js'
import {loadWasmXxh64, loadXxh64, xxh64Pieces, xxh64PiecesAsync} from '../../src/integrity/chunks.js'
import {createResumableSha256, restoreSha256} from '../../src/integrity/sha256.js'
import {nativeAddonCandidates, nativeChunkHashing} from '../../src/integrity/native-addon.js'
import {skipBecause} from '../support/process.js'

const MIB = 1024 * 1024
const data = randomBytes(3 * MIB + 12_345)
const sha = (d: Uint8Array) => createHash('sha256').update(d).digest('hex')

describe('chunk hashing (xxh64 per chunk, SHA-256 off the main thread)', function () {
  let tmp: string
  before(async function () {
    tmp = await fs.mkdtemp(path.join(os.tmpdir(), 'ms-resume-chunk-hash-'))
  })
  after(async function () {
    await fs.rm(tmp, {recursive: true, force: true})
  })

  it('uses the native addon whenever it has been built', function () {
    if (!nativeAddonCandidates().some((file) => existsSync(file))) skipBecause(this, 'the native addon was not built')
    expect(nativeChunkHashing()).to.not.equal(null)
  })

  it('gives the same xxh64 as xxhash-wasm for every length 0..300 at odd offsets, and for 1 MiB', async function () {
    const native = nativeChunkHashing()
    if (!native) skipBecause(this, 'the native addon was not built')
    const wasm = await loadWasmXxh64()
    for (let len = 0; len <= 300; len++) {
      for (const off of [0, 1, 3, 7]) {
        const piece = data.subarray(off, off + len)
        expect(native.xxh64(piece), `length ${len} at ${off}`).to.equal(wasm(piece))
      }
    }
    expect(native.xxh64(data.subarray(5, 5 + MIB))).to.equal(wasm(data.subarray(5, 5 + MIB)))
    expect(native.xxh64(Buffer.from('abc'))).to.equal('44bc2cf5ad770999')
  })

  it('hashes pieces on the thread pool exactly as in place', async function () {
    const xxh = await loadXxh64()
    const expected = xxh64Pieces(xxh, data, MIB)
    expect(expected).to.have.length(4)
    expect(await xxh64PiecesAsync(data, MIB)).to.deep.equal(expected)
    expect(await xxh64PiecesAsync(data.subarray(0, 10))).to.deep.equal([xxh(data.subarray(0, 10))])
  })

  for (const engine of ['native', 'wasm'] as const) {
    it(`${engine}: updateChunk advances the SHA-256 and returns each chunk's xxh64 and a state that restores`, async function () {
      if (engine === 'native' && !nativeChunkHashing()) skipBecause(this, 'the native addon was not built')
      const xxh = await loadXxh64()
      const hasher = await createResumableSha256({engine})
      const first = await hasher.updateChunk(data.subarray(0, 2 * MIB), MIB)
      expect(first.sums).to.deep.equal(xxh64Pieces(xxh, data.subarray(0, 2 * MIB), MIB))
      expect(first.state.offsetBytes).to.equal(2 * MIB)
      const second = await hasher.updateChunk(data.subarray(2 * MIB), MIB)
      expect(second.sums).to.have.length(2)
      expect(hasher.digestHex()).to.equal(sha(data))
      // The state after the first call continues elsewhere to the same digest.
      const restored = await restoreSha256(JSON.parse(JSON.stringify(first.state)))
      expect(restored).to.not.equal(null)
      restored!.update(data.subarray(2 * MIB))
      expect(restored!.digestHex()).to.equal(sha(data))
    })
  }

  it('refuses overlapping native updates rather than corrupting the state', async function () {
    if (!nativeChunkHashing()) skipBecause(this, 'the native addon was not built')
    const hasher = await createResumableSha256({engine: 'native'})
    const running = hasher.updateChunk(data)
    expect(() => hasher.update(data)).to.throw(/while another update/)
    expect(() => hasher.save()).to.throw(/while an update/)
    await running
    expect(hasher.digestHex()).to.equal(sha(data))
  })

  it('sums the chunks of a file from disk, null for chunks the file is too short to hold', async function () {
    const file = path.join(tmp, 'f.bin')
    await fs.writeFile(file, data.subarray(0, 2 * MIB + 100))
    const xxh = await loadXxh64()
    const sums = await chunkSumsOnDisk(file, data.length, MIB)
    expect(sums).to.deep.equal([xxh(data.subarray(0, MIB)), xxh(data.subarray(MIB, 2 * MIB)), null, null])
    const fh = await fs.open(file, 'r')
    try {
      expect(await chunkSumsOfOpenFile(fh, data.length, MIB, 2)).to.deep.equal(sums.slice(0, 2))
    } finally {
      await fh.close()
    }
  })

  it('the fallback reader (no addon) gives the same sums, nulls and counts', async () => {
    const file = path.join(tmp, 'fallback.bin')
    await fs.writeFile(file, data.subarray(0, 2 * MIB + 100))
    const fh = await fs.open(file, 'r')
    try {
      const expected = await chunkSumsOfOpenFile(fh, data.length, MIB)
      expect(expected.slice(2)).to.deep.equal([null, null])
      expect(await chunkSumsThroughNode(fh, data.length, MIB, 4)).to.deep.equal(expected)
      expect(await chunkSumsThroughNode(fh, data.length, MIB, 1)).to.deep.equal(expected.slice(0, 1))
      // Several chunks per read (8 MiB reads of 256 KiB chunks), the last one short.
      const small = await chunkSumsOfOpenFile(fh, 2 * MIB + 100, 256 * 1024)
      expect(await chunkSumsThroughNode(fh, 2 * MIB + 100, 256 * 1024, small.length)).to.deep.equal(small)
      expect(small.at(-1)).to.be.a('string')
    } finally {
      await fh.close()
    }
  })

  it('reads many parts of a large file in parallel, in order', async function () {
    const file = path.join(tmp, 'big.bin')
    const big = Buffer.concat(Array.from({length: 40}, (_, i) => Buffer.alloc(4 * MIB, i)))
    await fs.writeFile(file, big)
    const xxh = await loadXxh64()
    const sums = await chunkSumsOnDisk(file, big.length, MIB)
    expect(sums).to.deep.equal(xxh64Pieces(xxh, big, MIB))
  })

  it('names the errno of a failed native read like an fs error', async function () {
    if (!nativeChunkHashing()) skipBecause(this, 'the native addon was not built')
    const fh = await fs.open(path.join(tmp, 'dir-as-file'), 'w')
    await fh.close()
    const dir = await fs.open(tmp, 'r')
    try {
      const error = await chunkSumsOfOpenFile(dir, 10, MIB).then(() => null, (e: NodeJS.ErrnoException) => e)
      expect(error?.code).to.equal('EISDIR')
    } finally {
      await dir.close()
    }
  })
})
