import fs from 'node:fs/promises'
import os from 'node:os'
import path from 'node:path'

import {expect} from 'chai'

import {nativeWriteFileSynced} from '../../src/integrity/native-addon.js'
import {skipBecause} from '../support/process.js'

/** The addon's one-job write of a small file (native/sha256_ctx.c writeFileSynced). */
describe('native writeFileSynced: create, write, fdatasync, close, rename as one job', () => {
  let dir: string
  beforeEach(async () => {
    dir = await fs.mkdtemp(path.join(os.tmpdir(), 'msr-native-write-'))
  })
  afterEach(async () => {
    await fs.rm(dir, {recursive: true, force: true})
  })
  const write = function (this: Mocha.Context) {
    const fn = nativeWriteFileSynced()
    if (!fn) skipBecause(this, 'the native addon is not built')
    return fn!
  }

  it('writes the bytes with the given mode (minus the umask) and renames them into place', async function () {
    const data = Buffer.from(Array.from({length: 70_000}, (_, i) => i % 251))
    await write.call(this)(path.join(dir, 'p'), data, 0o666, path.join(dir, 'final'))
    expect((await fs.readFile(path.join(dir, 'final'))).equals(data)).to.equal(true)
    expect(await fs.readdir(dir)).to.deep.equal(['final'])
    expect((await fs.stat(path.join(dir, 'final'))).mode & 0o777).to.equal(0o666 & ~process.umask())
    await write.call(this)(path.join(dir, 'empty'), Buffer.alloc(0), 0o644)
    expect((await fs.stat(path.join(dir, 'empty'))).size).to.equal(0)
  })

  it('never writes over or through what is there: EEXIST for a file or a symlink at the temp name, both untouched', async function () {
    await fs.writeFile(path.join(dir, 'p'), 'theirs')
    await fs.writeFile(path.join(dir, 'victim'), 'victim')
    await fs.symlink(path.join(dir, 'victim'), path.join(dir, 'link'))
    for (const name of ['p', 'link']) {
      const error = await write.call(this)(path.join(dir, name), Buffer.from('ours'), 0o666, path.join(dir, 'final')).then(() => undefined, (e: NodeJS.ErrnoException) => e)
      expect([error?.code, error?.syscall], name).to.deep.equal(['EEXIST', 'open'])
    }
    expect(await fs.readFile(path.join(dir, 'p'), 'utf8')).to.equal('theirs')
    expect(await fs.readFile(path.join(dir, 'victim'), 'utf8')).to.equal('victim')
    expect(await fs.readdir(dir)).not.to.include('final')
  })

  it('a rename that fails (a directory in the way, no directory at all) leaves the durable partial for the caller', async function () {
    await fs.mkdir(path.join(dir, 'taken', 'inside'), {recursive: true})
    const intoDir = await write.call(this)(path.join(dir, 'p1'), Buffer.from('x'), 0o666, path.join(dir, 'taken')).then(() => undefined, (e: NodeJS.ErrnoException) => e)
    expect(intoDir?.syscall).to.equal('rename')
    expect(['EISDIR', 'ENOTEMPTY', 'EEXIST']).to.include(intoDir?.code)
    const nowhere = await write.call(this)(path.join(dir, 'p2'), Buffer.from('x'), 0o666, path.join(dir, 'no', 'such', 'f')).then(() => undefined, (e: NodeJS.ErrnoException) => e)
    expect([nowhere?.code, nowhere?.syscall]).to.deep.equal(['ENOENT', 'rename'])
    expect((await fs.readdir(dir)).sort()).to.deep.equal(['p1', 'p2', 'taken'])
    expect(await fs.readFile(path.join(dir, 'p1'), 'utf8')).to.equal('x')
    expect(await fs.readdir(path.join(dir, 'taken'))).to.deep.equal(['inside'])
  })

  it('a failure before the bytes are durable leaves nothing', async function () {
    const error = await write.call(this)(path.join(dir, 'no', 'p'), Buffer.from('x'), 0o666, path.join(dir, 'final')).then(() => undefined, (e: NodeJS.ErrnoException) => e)
    expect([error?.code, error?.syscall]).to.deep.equal(['ENOENT', 'open'])
    expect(await fs.readdir(dir)).to.deep.equal([])
  })

  it('refuses arguments that are not a path, bytes and a mode', function () {
    const fn = write.call(this)
    expect(() => fn('', Buffer.alloc(1), 0o666)).to.throw(TypeError)
    expect(() => fn('a\u0000b', Buffer.alloc(1), 0o666)).to.throw(TypeError)
    expect(() => fn(path.join(dir, 'x'), 'text' as unknown as Buffer, 0o666)).to.throw(TypeError)
    expect(() => fn(path.join(dir, 'x'), Buffer.alloc(1), -1)).to.throw(TypeError)
  })
})
