import {createHash} from 'node:crypto'
import fs from 'node:fs/promises'
import os from 'node:os'
import path from 'node:path'

import {expect} from 'chai'

import {probeName, probeWritable, prepareStateDir} from '../../src/store/state-dir.js'
import {journalClaimsProblems} from '../support/journal-check.js'
import {statePaths} from '../support/state-paths.js'

describe('state directory: probes and folders never through a symlink', () => {
  let home: string
  let state: string
  beforeEach(async () => {
    home = await fs.mkdtemp(path.join(os.tmpdir(), 'msr-state-dir-'))
    state = statePaths(path.join(home, 'model')).dir
    await fs.mkdir(state, {recursive: true})
  })
  afterEach(async () => {
    await fs.rm(home, {recursive: true, force: true})
  })

  it('a symlink planted at this process\'s write-probe name is removed, its target neither created nor truncated', async () => {
    const victim = path.join(home, 'victim.txt')
    await fs.writeFile(victim, 'keep me')
    await fs.symlink(victim, path.join(state, probeName()))
    const missing = path.join(home, 'not-created.txt')
    await probeWritable(state)
    expect(await fs.readFile(victim, 'utf8')).to.equal('keep me')
    expect(await fs.readdir(state), 'no probe left behind').to.deep.equal([])

    await fs.symlink(missing, path.join(state, probeName()))
    await prepareStateDir(state)
    await fs.access(missing).then(() => expect.fail('created through a dangling symlink'), () => {})
  })

  it('prepareStateDir refuses a partial-v1 that is a symlink, and creates nothing through it', async () => {
    const elsewhere = path.join(home, 'elsewhere')
    await fs.mkdir(elsewhere)
    await fs.symlink(elsewhere, path.join(state, 'partial-v1'))
    let caught: unknown
    await prepareStateDir(state).catch((error: unknown) => (caught = error))
    expect(caught).to.have.property('code', 'E_UNSAFE_PATH')
    expect(await fs.readdir(elsewhere)).to.deep.equal([])
  })
})

describe('support/journal-check: complete records are checked too (it can fail)', () => {
  it('flags a complete record whose final file is missing, short or altered', async () => {
    const dir = await fs.mkdtemp(path.join(os.tmpdir(), 'msr-journal-check-'))
    try {
      const data = Buffer.from('the real bytes')
      const record = {path: 'a/b.bin', size: data.length, sha256: createHash('sha256').update(data).digest('hex'), status: 'complete', chunkSizeBytes: 1 << 20, chunks: ['0'.repeat(16)]}
      await fs.mkdir(statePaths(dir).dir, {recursive: true})
      await fs.writeFile(statePaths(dir).journal, JSON.stringify({files: {[record.path]: record}}))
      expect((await journalClaimsProblems(dir)).problems).to.have.length(1)
      await fs.mkdir(path.join(dir, 'a'))
      await fs.writeFile(path.join(dir, 'a', 'b.bin'), 'short')
      expect((await journalClaimsProblems(dir)).problems).to.have.length(1)
      await fs.writeFile(path.join(dir, 'a', 'b.bin'), Buffer.from('the REAL bytes'))
      expect((await journalClaimsProblems(dir)).problems).to.have.length(1)
      await fs.writeFile(path.join(dir, 'a', 'b.bin'), data)
      expect((await journalClaimsProblems(dir)).problems).to.deep.equal([])
    } finally {
      await fs.rm(dir, {recursive: true, force: true})
    }
  })
})
