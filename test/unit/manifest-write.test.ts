import fs from 'node:fs/promises'
import os from 'node:os'
import path from 'node:path'

import {expect} from 'chai'

import {buildManifest, manifestPieces, manifestToJson, readManifest, writeManifest} from '../../src/integrity/manifest.js'
import {mulberry32} from '../support/process.js'

function manifest(n: number, seed: number) {
  const rng = mulberry32(seed)
  const hex = (len: number) => Array.from({length: len}, () => Math.floor(rng() * 16).toString(16)).join('')
  return buildManifest({
    hub: 'modelscope', endpoint: 'http://127.0.0.1:1', modelId: 'acme/m', revision: 'master',
    files: Array.from({length: n}, (_, i) => {
      const size = Math.floor(rng() * 5 * 1024 * 1024)
      return {path: `d${i % 7}/f "${i}" é.bin`, size, sha256: hex(64), commit: hex(40), chunkSizeBytes: 1024 * 1024, xxh64: Array.from({length: Math.ceil(size / (1024 * 1024))}, () => hex(16))}
    }),
  })
}

describe('manifest writing (pieces, and nothing written when nothing changed)', () => {
  let dir: string
  beforeEach(async () => {
    dir = await fs.mkdtemp(path.join(os.tmpdir(), 'msr-manifest-'))
  })
  afterEach(async () => {
    await fs.rm(dir, {recursive: true, force: true})
  })

  it('its pieces are exactly the JSON text, for any number of files', () => {
    for (const n of [0, 1, 2, 199, 200, 201, 1003]) {
      const m = manifest(n, n)
      expect([...manifestPieces(m)].join(''), String(n)).to.equal(manifestToJson(m))
    }
  })

  it('a manifest that says the same but for createdAt leaves the file as it is; any other difference rewrites it', async () => {
    const file = path.join(dir, 'manifest-v1.json')
    const m = manifest(450, 7)
    await writeManifest(file, m)
    expect(await readManifest(file)).to.deep.equal(m)
    const before = await fs.stat(file)
    await writeManifest(file, {...m, createdAt: '2099-01-01T00:00:00.000Z'})
    const after = await fs.stat(file)
    expect([after.ino, after.mtimeMs]).to.deep.equal([before.ino, before.mtimeMs])
    expect((await readManifest(file)).createdAt).to.equal(m.createdAt)
    const changed = {...m, files: m.files.map((f, i) => (i === 300 ? {...f, commit: 'c'.repeat(40)} : f))}
    await writeManifest(file, changed)
    expect(await readManifest(file)).to.deep.equal(changed)
    // A file cut short, or longer, is not "the same".
    await fs.truncate(file, (await fs.stat(file)).size - 2)
    await writeManifest(file, changed)
    expect(await readManifest(file)).to.deep.equal(changed)
    await fs.appendFile(file, ' ')
    await writeManifest(file, changed)
    expect(await fs.readFile(file, 'utf8')).to.equal(manifestToJson(changed))
  })
})
