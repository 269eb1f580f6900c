import {randomBytes} from 'node:crypto'
import fs from 'node:fs/promises'
import path from 'node:path'

import {expect} from 'chai'

import {type ExpectedFile, checkFile, localiseDamage} from '../../src/integrity/check.js'
import {loadXxh64} from '../../src/integrity/chunks.js'
import {type Manifest, buildManifest, manifestProblem} from '../../src/integrity/manifest.js'
import {emptyJournal} from '../../src/journal/schema.js'
import {checkFiles} from '../../src/verify/check-pool.js'
import {findExtraFiles} from '../../src/verify/extra-files.js'
import {manifestFromJournal} from '../../src/verify/manifest-source.js'
import {diffRemote} from '../../src/verify/verify.js'
import {makeTmpDir} from '../support/cli.js'

const MiB = 1024 * 1024
const sha = (c: string) => c.repeat(64)

async function expectedOf(name: string, data: Buffer, chunkSizeBytes = MiB): Promise<ExpectedFile> {
  const xxh = await loadXxh64()
  const {createHash} = await import('node:crypto')
  const chunks: string[] = []
  for (let s = 0; s < data.length; s += chunkSizeBytes) chunks.push(xxh(data.subarray(s, s + chunkSizeBytes)))
  return {path: name, size: data.length, sha256: createHash('sha256').update(data).digest('hex'), chunkSizeBytes, chunks}
}

describe('verify: pure parts and local checks', () => {
  let dir: string
  beforeEach(async () => {
    dir = await makeTmpDir('msr-verify-unit-')
  })
  afterEach(async () => {
    await fs.rm(dir, {recursive: true, force: true})
  })

  it('localiseDamage names exactly the damaged chunks across read batches, and the missing tail', async () => {
    // 20 MiB + 5 bytes: three 8 MiB read batches, the last chunk short.
    const data = randomBytes(20 * MiB + 5)
    const expected = await expectedOf('w.bin', data)
    const file = path.join(dir, 'w.bin')
    const flipped = Buffer.from(data)
    for (const at of [0, 9 * MiB + 17, 20 * MiB + 4]) flipped[at] ^= 0x01
    await fs.writeFile(file, flipped)
    expect((await localiseDamage(file, expected))!.map((d) => d.chunk)).to.deep.equal([0, 9, 20])
    expect((await localiseDamage(file, expected))![2]).to.deep.equal({chunk: 20, start: 20 * MiB, end: 20 * MiB + 5})

    await fs.writeFile(file, data.subarray(0, 12.5 * MiB))
    expect((await localiseDamage(file, expected))!.map((d) => d.chunk)).to.deep.equal([12, 13, 14, 15, 16, 17, 18, 19, 20])
    expect(await localiseDamage(file, {...expected, chunks: expected.chunks.slice(1)})).to.equal(undefined)
  })

  it('checkFile: fast names the damaged range; full detects it by SHA-256 and localises it; size does not look', async () => {
    const data = randomBytes(3 * MiB)
    const expected = await expectedOf('m.bin', data)
    const file = path.join(dir, 'm.bin')
    data[MiB + 10] ^= 0xff
    await fs.writeFile(file, data)
    expect((await checkFile(file, expected, 'size')).status).to.equal('ok')
    const fast = await checkFile(file, expected, 'fast')
    expect(fast.status).to.equal('damaged')
    expect(fast.damaged).to.deep.equal([{chunk: 1, start: MiB, end: 2 * MiB}])
    const full = await checkFile(file, expected, 'full')
    expect(full.status).to.equal('sha256-mismatch')
    expect(full.damaged!.map((d) => d.chunk)).to.deep.equal([1])
  })

  it('checkFiles keeps the input order and reports missing files', async () => {
    const a = randomBytes(1000)
    const b = randomBytes(2 * MiB + 1)
    await fs.writeFile(path.join(dir, 'a'), a)
    await fs.writeFile(path.join(dir, 'b'), b)
    const jobs = [
      {filePath: path.join(dir, 'b'), expected: await expectedOf('b', b), level: 'full' as const},
      {filePath: path.join(dir, 'nope'), expected: await expectedOf('nope', a), level: 'full' as const},
      {filePath: path.join(dir, 'a'), expected: await expectedOf('a', a), level: 'fast' as const},
    ]
    const results = await checkFiles(jobs, {threads: 2})
    expect(results.map((r) => [r.path, r.status])).to.deep.equal([['b', 'ok'], ['nope', 'missing'], ['a', 'ok']])
  })

  it('findExtraFiles lists files, links and nested entries not in the manifest, but no tool entries at the top', async () => {
    for (const p of ['keep.bin', 'sub/keep.txt', 'sub/extra.txt', 'deep/er/x', '.msc', '.mv', '.mdl', '.ms-resume/journal-v1.json', '._____temp/part', 'sub/.msc']) {
      await fs.mkdir(path.dirname(path.join(dir, p)), {recursive: true})
      await fs.writeFile(path.join(dir, p), 'x')
    }
    await fs.mkdir(path.join(dir, 'empty-dir'))
    await fs.symlink('keep.bin', path.join(dir, 'link'))
    expect(await findExtraFiles(dir, ['keep.bin', 'sub/keep.txt', 'missing.bin'])).to.deep.equal(['deep/er/x', 'link', 'sub/.msc', 'sub/extra.txt'])
    expect(await findExtraFiles(path.join(dir, 'does-not-exist'), [])).to.deep.equal([])
  })

  it('manifestFromJournal keeps only complete records and makes a valid manifest', () => {
    const doc = emptyJournal({hub: 'modelscope', endpoint: 'http://h', modelId: 'o/m', revision: 'v1'})
    const base = {commit: 'c'.repeat(40), chunkSizeBytes: MiB, integrityFailures: 0}
    doc.files['b.bin'] = {...base, path: 'b.bin', size: 5, sha256: sha('b'), status: 'complete', chunks: ['0123456789abcdef']}
    doc.files['a.txt'] = {...base, path: 'a.txt', size: 0, sha256: sha('a'), status: 'complete', chunks: []}
    doc.files['c.bin'] = {...base, path: 'c.bin', size: 5, sha256: sha('c'), status: 'partial', chunks: [null]}
    const m = manifestFromJournal(doc)
    expect(manifestProblem(m)).to.equal(undefined)
    expect(m.files.map((f) => f.path)).to.deep.equal(['a.txt', 'b.bin'])
    expect(m.files[1].xxh64).to.deep.equal(['0123456789abcdef'])
    expect([m.modelId, m.revision, m.endpoint]).to.deep.equal(['o/m', 'v1', 'http://h'])
  })

  it('diffRemote finds changed, removed and added files', () => {
    const file = (p: string, c: string, size = 1) => ({path: p, size, sha256: sha(c), commit: 'x', chunkSizeBytes: MiB, xxh64: ['0'.repeat(16)]})
    const manifest: Manifest = buildManifest({hub: 'h', endpoint: 'e', modelId: 'o/m', revision: 'master', files: [file('same', 'a'), file('changed', 'b'), file('resized', 'c'), file('gone', 'd')]})
    const listed = [
      {path: 'same', size: 1, sha256: sha('a'), commit: 'x'},
      {path: 'changed', size: 1, sha256: sha('e'), commit: 'y'},
      {path: 'resized', size: 2, sha256: sha('c'), commit: 'y'},
      {path: 'new', size: 1, sha256: sha('f'), commit: 'y'},
    ]
    const diff = diffRemote(manifest, listed, {endpoint: 'e', revision: 'master'})
    expect(diff.changed.map((c) => c.path).sort()).to.deep.equal(['changed', 'resized'])
    expect(diff.changed.find((c) => c.path === 'changed')!.hub.sha256).to.equal(sha('e'))
    expect(diff.removed).to.deep.equal(['gone'])
    expect(diff.added).to.deep.equal(['new'])
  })
})
