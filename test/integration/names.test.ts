import fs from 'node:fs/promises'
import path from 'node:path'

import {expect} from 'chai'

import {type EmulatorFileSpec, HubEmulator, type HubEmulatorOptions} from '../support/emulator.js'
import {exists, listFiles, makeTmpDir, runCli, startCli, testEnv} from '../support/cli.js'
import {statePaths} from '../support/state-paths.js'

const MODEL = 'acme/names'
const MiB = 1024 * 1024

/**
 * The "untrusted names" rows of fault-matrix.md beyond the traversal forms (faults.test.ts): links
 * planted in the target, names that collide on a case-insensitive filesystem, and file modes.
 */
describe('untrusted names from the hub (fault-matrix.md: Untrusted names)', function () {
  this.timeout(60_000)
  let emu: HubEmulator | undefined
  let home: string
  let dir: string
  let outside: string

  beforeEach(async () => {
    home = await makeTmpDir()
    dir = path.join(home, 'out')
    outside = path.join(home, 'outside')
    await fs.mkdir(outside)
  })
  afterEach(async () => {
    await emu?.stop()
    emu = undefined
    await fs.rm(home, {recursive: true, force: true})
  })

  async function pull(files: EmulatorFileSpec[], opts: HubEmulatorOptions = {}) {
    emu ??= await HubEmulator.start({models: [{id: MODEL, files}], ...opts})
    return runCli(['pull', MODEL, '--endpoint', emu.url, '--local-dir', dir], {env: testEnv(home)})
  }

  async function expectExact(p: string): Promise<void> {
    const st = await fs.lstat(path.join(dir, p))
    expect(st.isFile(), `${p} is a regular file`).to.equal(true)
    expect((await fs.readFile(path.join(dir, p))).equals(emu!.contentOf(MODEL, p)), `${p} byte-exact`).to.equal(true)
  }

  it('a symlink planted where a file will go is replaced, never followed (the link target is untouched)', async () => {
    const files = [{path: 'model.bin', size: 300_000}, {path: 'dangling.bin', size: 1000}, {path: 'right-bytes.bin', size: 2000}]
    emu = await HubEmulator.start({models: [{id: MODEL, files}]})
    await fs.mkdir(dir)
    await fs.writeFile(path.join(outside, 'target.bin'), 'outside, keep me')
    await fs.symlink(path.join(outside, 'target.bin'), path.join(dir, 'model.bin'))
    await fs.symlink(path.join(outside, 'missing.bin'), path.join(dir, 'dangling.bin'))
    // A link to a file with exactly the right bytes is not adopted either: it is not our file.
    await fs.writeFile(path.join(outside, 'right.bin'), emu.contentOf(MODEL, 'right-bytes.bin'))
    await fs.symlink(path.join(outside, 'right.bin'), path.join(dir, 'right-bytes.bin'))

    const res = await pull(files)
    expect(res.code, res.stderr).to.equal(0)
    for (const f of files) await expectExact(f.path)
    expect(await fs.readFile(path.join(outside, 'target.bin'), 'utf8')).to.equal('outside, keep me')
    expect(await fs.readdir(outside)).to.have.members(['target.bin', 'right.bin'])
    expect(emu.contentRequests(MODEL, 'right-bytes.bin')).to.have.length(1)
  })

  it('a symlink planted where a directory will go is refused (exit 5 [E_UNSAFE_PATH]), nothing written through it; resumable once removed', async () => {
    const files = [{path: 'sub/inner/x.bin', size: 200_000}, {path: 'ok.json', content: '{}'}]
    await fs.mkdir(dir)
    await fs.symlink(outside, path.join(dir, 'sub'))
    const res = await pull(files)
    expect(res.code).to.equal(5)
    expect(res.stderr).to.contain('[E_UNSAFE_PATH]').and.to.contain('sub/inner/x.bin')
    expect(await listFiles(outside), 'nothing written outside').to.deep.equal([])
    expect((await fs.lstat(path.join(dir, 'sub'))).isSymbolicLink(), 'the link is left alone').to.equal(true)
    // The other file is unaffected.
    await expectExact('ok.json')

    // Once the user removes the link, the verified partial is moved into place without a new download.
    await fs.rm(path.join(dir, 'sub'))
    emu!.clearLog()
    const again = await pull(files)
    expect(again.code, again.stderr).to.equal(0)
    await expectExact('sub/inner/x.bin')
    expect(emu!.contentRequests(MODEL)).to.have.length(0)
    expect(await listFiles(outside)).to.deep.equal([])
  })

  const COLLISIONS: Array<[string, string, string]> = [
    ['case only', 'A.bin', 'a.bin'],
    // (Dir/x.bin and dir/y.bin do not collide: on such a filesystem they share one directory.)
    ['case in the directory and the name', 'Dir/x.bin', 'dir/X.bin'],
    ['Unicode normalisation (NFC vs NFD)', 'caf\u00e9.bin', 'cafe\u0301.bin'],
    ['a file that is also a directory', 'x', 'X/y.bin'],
  ]
  for (const [name, a, b] of COLLISIONS) {
    it(`two names that collide on a case-insensitive filesystem (${name}): refused before any write, exit 5 [E_UNSAFE_PATH]`, async () => {
      const res = await pull([{path: a, size: 100}, {path: b, size: 200}, {path: 'fine.bin', size: 300}])
      expect(res.code, res.stderr).to.equal(5)
      expect(res.stderr).to.contain('[E_UNSAFE_PATH]')
      expect(await exists(dir), 'the target directory was not even created').to.equal(false)
      expect(emu!.contentRequests(MODEL)).to.have.length(0)
    })
  }

  // ms-resume's own state and the official client's index: a hub file there would overwrite them.
  const RESERVED = [
    '.msc', '.mdl', '.mv', '.lock', '.lock/acme___m', '._____temp/x.bin',
    '.ms-resume/journal-v1.json', '.ms-resume/partial-v1/0000000000000000000000000000000000000000.part',
    // The same files on a case-insensitive filesystem, or on Windows (trailing dots and spaces dropped).
    '.MSC', '.Ms-Resume/manifest-v1.json', '.mv.', '.mdl ',
  ]
  for (const name of RESERVED) {
    it(`a hub file named ${JSON.stringify(name)} is refused before any write, exit 5 [E_UNSAFE_PATH]`, async () => {
      const res = await pull([{path: name, size: 100}, {path: 'fine.bin', size: 300}])
      expect(res.code, res.stderr).to.equal(5)
      expect(res.stderr).to.contain('[E_UNSAFE_PATH]').and.to.contain(JSON.stringify(name))
      expect(await exists(dir), 'the target directory was not even created').to.equal(false)
      expect(emu!.contentRequests(MODEL)).to.have.length(0)
    })
  }

  it('journal, partial, lock and every other state file follow the umask (027: files 0640, directories 0750), while a pull is mid-way', async () => {
    const files = [{path: 'slow.safetensors', size: 8 * MiB}]
    emu = await HubEmulator.start({models: [{id: MODEL, files}], rateLimitBytesPerSec: 1 * MiB})
    const state = statePaths(dir).dir
    // The umask decides (a team cache runs at 002, a private one at 077): no fixed mode anywhere.
    const oldUmask = process.umask(0o027)
    let child
    try {
      child = startCli(['pull', MODEL, '--endpoint', emu.url, '--local-dir', dir], {env: testEnv(home)})
    } finally {
      process.umask(oldUmask)
    }
    const exited = new Promise((resolve) => child.once('exit', resolve))
    try {
      // Wait for the first checkpoint: the journal and a partial with bytes in it.
      const deadline = Date.now() + 20_000
      let partials: string[] = []
      for (;;) {
        partials = await fs.readdir(path.join(state, 'partial-v1')).catch(() => [])
        const journal = await exists(path.join(state, 'journal-v1.json'))
        const partialBytes = partials.length > 0 ? (await fs.stat(path.join(state, 'partial-v1', partials[0]))).size : 0
        if (journal && partialBytes > 0) break
        if (Date.now() > deadline) throw new Error('no checkpoint within 20 s')
        await new Promise((r) => setTimeout(r, 100))
      }
      expect(partials).to.have.length(1)
      const seen: string[] = []
      const walk = async (rel: string): Promise<void> => {
        for (const entry of await fs.readdir(path.join(state, rel), {withFileTypes: true})) {
          const p = path.join(rel, entry.name)
          const mode = (await fs.lstat(path.join(state, p))).mode & 0o777
          if (entry.isDirectory()) {
            expect(mode, `${p}/`).to.equal(0o750)
            await walk(p)
          } else {
            seen.push(p)
            expect(mode, p).to.equal(0o640)
          }
        }
      }
      expect((await fs.stat(state)).mode & 0o777, '.ms-resume/').to.equal(0o750)
      await walk('')
      expect(seen).to.include.members(['journal-v1.json', path.join('partial-v1', partials[0]), path.join('lock', 'owner.json'), path.join('lock', 'heartbeat')])
    } finally {
      child.kill('SIGKILL')
      await exited
    }
  })
})
