import {execFileSync, spawnSync} from 'node:child_process'
import {createHash} from 'node:crypto'
import fs from 'node:fs/promises'
import path from 'node:path'

import {expect} from 'chai'

import {type EmulatorFileSpec, HubEmulator} from '../support/emulator.js'
import {exists, listFiles, makeTmpDir, runCli, testEnv} from '../support/cli.js'
import {readJournal} from '../support/process.js'
import {statePaths} from '../support/state-paths.js'

const MiB = 1024 * 1024
const partialNameOf = (repoPath: string): string => `${createHash('sha256').update(repoPath).digest('hex').slice(0, 40)}.part`

/** Every regular file below dir with its content hash (state included): "nothing changed" is equality. */
async function snapshot(dir: string): Promise<Record<string, string>> {
  const out: Record<string, string> = {}
  for (const f of await listFiles(dir, new Set())) {
    const st = await fs.lstat(path.join(dir, f))
    out[f] = st.isFile() ? createHash('sha256').update(await fs.readFile(path.join(dir, f))).digest('hex') : 'not a file'
  }
  return out
}

/** A pid no process has now: one that just exited. */
function deadPid(): number {
  return Number(spawnSync(process.execPath, ['-e', 'process.stdout.write(String(process.pid))'], {encoding: 'utf8'}).stdout)
}

/**
 * State files are input, not truth (issue 10): the state directory of a model may have been copied,
 * restored, shared or tampered with. Nothing in it may redirect a write, a delete or a lookup.
 */
describe('state files are input: symlinks in the state directory, prototype names, two models, stray probes', function () {
  this.timeout(60_000)
  let emu: HubEmulator
  let home: string
  let dir: string
  let outside: string

  const ONE = 'acme/one'
  const ONE_FILES: EmulatorFileSpec[] = [{path: 'config.json', content: '{"one": 1}\n'}, {path: 'weights.bin', size: 3 * MiB + 5}]
  const PROTO = 'acme/proto-names'
  const PROTO_NAMES = ['constructor', 'toString', '__proto__', 'hasOwnProperty', 'valueOf', 'sub/__proto__']

  before(async () => {
    emu = await HubEmulator.start({
      models: [
        {id: ONE, files: ONE_FILES},
        {id: 'acme/two', files: [{path: 'config.json', content: '{"two": 2}\n'}, {path: 'other.bin', size: 1000}]},
        {id: PROTO, files: [...PROTO_NAMES.map((p, i) => ({path: p, size: 1000 + i})), {path: 'plain.bin', size: 2000}]},
        {id: 'acme/a.b', files: [{path: 'x.bin', size: 100}]},
        {id: 'acme/a___b', files: [{path: 'x.bin', size: 200}]},
      ],
    })
  })
  after(async () => {
    await emu.stop()
  })
  beforeEach(async () => {
    home = await makeTmpDir()
    dir = path.join(home, 'out')
    outside = path.join(home, 'outside')
    await fs.mkdir(outside)
    emu.clearLog()
  })
  afterEach(async () => {
    await fs.rm(home, {recursive: true, force: true})
  })

  const pull = (model: string, ...extra: string[]) => runCli(['pull', model, '--endpoint', emu.url, '--local-dir', dir, ...extra], {env: testEnv(home)})
  const stateDir = () => statePaths(dir).dir

  async function expectExact(model: string, p: string): Promise<void> {
    const st = await fs.lstat(path.join(dir, ...p.split('/')))
    expect(st.isFile(), `${p} is a regular file`).to.equal(true)
    expect((await fs.readFile(path.join(dir, ...p.split('/')))).equals(emu.contentOf(model, p)), `${p} byte-exact`).to.equal(true)
  }

  it('hub paths named constructor, toString, __proto__, hasOwnProperty, valueOf are pulled, journaled and found again', async () => {
    const res = await pull(PROTO)
    expect(res.code, res.stderr).to.equal(0)
    for (const p of [...PROTO_NAMES, 'plain.bin']) await expectExact(PROTO, p)
    // Read as text: JSON.parse would hide a `__proto__` key behind the prototype.
    const text = await fs.readFile(path.join(stateDir(), 'journal-v1.json'), 'utf8')
    for (const p of PROTO_NAMES) expect(text, `a record for ${p}`).to.contain(`${JSON.stringify(p)}:{"path":${JSON.stringify(p)}`)
    const journal = await readJournal(dir)
    for (const p of PROTO_NAMES.filter((n) => n !== '__proto__')) expect(Object.hasOwn(journal!.files, p) && journal!.files[p].status, p).to.equal('complete')

    emu.clearLog()
    const again = await pull(PROTO, '--json')
    expect(again.code, again.stderr).to.equal(0)
    expect(emu.contentRequests(PROTO), 'nothing fetched again').to.have.length(0)
    const done = again.stdout.trim().split('\n').map((l) => JSON.parse(l) as {type: string; path?: string; reused?: boolean}).filter((e) => e.type === 'file-done')
    expect(done.map((e) => e.path).sort()).to.deep.equal([...PROTO_NAMES, 'plain.bin'].sort())
    expect(done.every((e) => e.reused), 'every file reused from the journal').to.equal(true)
  })

  it("a symlink planted at a file's partial is never written through: exit 5 [E_UNSAFE_PATH], the target keeps its bytes; fine once removed", async () => {
    const victim = path.join(outside, 'victim.bin')
    await fs.writeFile(victim, 'outside, keep me')
    const link = path.join(stateDir(), 'partial-v1', partialNameOf('weights.bin'))
    await fs.mkdir(path.dirname(link), {recursive: true})
    await fs.symlink(victim, link)

    const res = await pull(ONE)
    expect(res.code, res.stderr).to.equal(5)
    expect(res.stderr).to.contain('[E_UNSAFE_PATH]').and.to.contain(link)
    expect(await fs.readFile(victim, 'utf8')).to.equal('outside, keep me')
    expect(await fs.readdir(outside)).to.deep.equal(['victim.bin'])
    expect((await fs.lstat(link)).isSymbolicLink(), 'the link is left for the user').to.equal(true)
    await expectExact(ONE, 'config.json')

    await fs.rm(link)
    const again = await pull(ONE)
    expect(again.code, again.stderr).to.equal(0)
    await expectExact(ONE, 'weights.bin')
    expect(await fs.readFile(victim, 'utf8')).to.equal('outside, keep me')
  })

  for (const which of ['.ms-resume', '.ms-resume/partial-v1', '.ms-resume/quarantine']) {
    it(`${which} as a symlink to a directory elsewhere: refused before any download (exit 5 [E_UNSAFE_PATH]), nothing written there`, async () => {
      const link = path.join(dir, ...which.split('/'))
      await fs.mkdir(path.dirname(link), {recursive: true})
      await fs.symlink(outside, link)
      const res = await pull(ONE)
      expect(res.code, res.stderr).to.equal(5)
      expect(res.stderr).to.contain('[E_UNSAFE_PATH]').and.to.contain(link)
      expect(await fs.readdir(outside), 'nothing written outside').to.deep.equal([])
      expect(emu.contentRequests(ONE), 'nothing fetched').to.have.length(0)
      expect((await fs.lstat(link)).isSymbolicLink(), 'the link is left alone').to.equal(true)
    })
  }

  it('a journal that is a FIFO, or a symlink to a journal elsewhere, is not read through: set aside, the pull completes', async () => {
    expect((await pull(ONE)).code).to.equal(0)
    const journal = path.join(stateDir(), 'journal-v1.json')
    const elsewhere = path.join(outside, 'journal.json')
    await fs.rename(journal, elsewhere)
    const original = await fs.readFile(elsewhere)
    await fs.symlink(elsewhere, journal)
    emu.clearLog()
    const viaLink = await runCli(['pull', ONE, '--endpoint', emu.url, '--local-dir', dir, '--json'], {env: testEnv(home), timeoutMs: 20_000})
    expect(viaLink.code, viaLink.stderr).to.equal(0)
    expect(viaLink.stdout).to.contain('"type":"recovered-journal"').and.to.contain('a symlink')
    expect((await fs.readFile(elsewhere)).equals(original), 'the link target is untouched').to.equal(true)
    expect((await fs.lstat(journal)).isFile(), 'a journal of our own again').to.equal(true)
    expect(emu.contentRequests(ONE).length, 'nothing fetched: the files on disk are adopted').to.equal(0)

    await fs.rm(journal)
    execFileSync('mkfifo', [journal])
    // A plain read of a FIFO blocks until a writer appears: the pull would hang here for ever.
    const viaFifo = await runCli(['pull', ONE, '--endpoint', emu.url, '--local-dir', dir, '--json'], {env: testEnv(home), timeoutMs: 20_000})
    expect(viaFifo.signal, 'not killed by the timeout').to.equal(null)
    expect(viaFifo.code, viaFifo.stderr).to.equal(0)
    expect(viaFifo.stdout).to.contain('"type":"recovered-journal"').and.to.contain('not a regular file')
    expect(emu.contentRequests(ONE).length, 'nothing fetched: the files on disk are adopted').to.equal(0)
  })

  it('a state manifest that is a symlink (or a FIFO) is not ours: verify goes by the journal, neither follows nor hangs', async () => {
    expect((await pull(ONE)).code).to.equal(0)
    const manifest = path.join(stateDir(), 'manifest-v1.json')
    // A manifest elsewhere that calls config.json damaged: followed, verify would exit 4.
    const other = JSON.parse(await fs.readFile(manifest, 'utf8')) as {files: Array<{path: string; sha256: string}>}
    other.files.find((f) => f.path === 'config.json')!.sha256 = 'f'.repeat(64)
    await fs.writeFile(path.join(outside, 'manifest.json'), JSON.stringify(other))
    await fs.rm(manifest)
    await fs.symlink(path.join(outside, 'manifest.json'), manifest)
    const viaLink = await runCli(['verify', ONE, '--local-dir', dir], {env: testEnv(home), timeoutMs: 20_000})
    expect(viaLink.code, viaLink.stderr).to.equal(0)

    await fs.rm(manifest)
    execFileSync('mkfifo', [manifest])
    const viaFifo = await runCli(['verify', ONE, '--local-dir', dir], {env: testEnv(home), timeoutMs: 20_000})
    expect(viaFifo.signal, 'not killed by the timeout').to.equal(null)
    expect(viaFifo.code, viaFifo.stderr).to.equal(0)
  })

  it('clean removes symlinked partial-v1 and quarantine folders as links, never their targets, and never a verified file', async () => {
    expect((await pull(ONE)).code).to.equal(0)
    await fs.writeFile(path.join(outside, 'keep.bin'), 'not ms-resume\'s')
    const state = stateDir()
    await fs.rm(path.join(state, 'partial-v1'), {recursive: true, force: true})
    await fs.rm(path.join(state, 'quarantine'), {recursive: true, force: true})
    await fs.symlink(outside, path.join(state, 'partial-v1'))
    // Pointing back at the model: its verified files are what a followed link would delete.
    await fs.symlink(dir, path.join(state, 'quarantine'))
    const modelBefore = await snapshot(dir)

    const res = await runCli(['clean', '--local-dir', dir, '--json'], {env: testEnv(home)})
    expect(res.code, res.stderr).to.equal(0)
    expect(await fs.readFile(path.join(outside, 'keep.bin'), 'utf8')).to.equal('not ms-resume\'s')
    for (const f of ONE_FILES) await expectExact(ONE, f.path)
    expect(await exists(path.join(state, 'partial-v1')), 'the partial-v1 link is removed').to.equal(false)
    expect(await exists(path.join(state, 'quarantine')), 'the quarantine link is removed').to.equal(false)
    const after = await snapshot(dir)
    for (const [f, hash] of Object.entries(modelBefore)) {
      if (!f.startsWith('.ms-resume/partial-v1') && !f.startsWith('.ms-resume/quarantine')) expect(after[f], f).to.equal(hash)
    }
  })

  it('a second model into the same --local-dir: exit 2 [E_USAGE] naming both, nothing fetched, the first model untouched', async () => {
    expect((await pull(ONE)).code).to.equal(0)
    const before = await snapshot(dir)
    emu.clearLog()
    for (const extra of [[], ['--dry-run']]) {
      const res = await pull('acme/two', ...extra)
      expect(res.code, `${extra.join(' ')} ${res.stderr}`).to.equal(2)
      expect(res.stderr).to.contain('[E_USAGE]').and.to.contain(ONE).and.to.contain('acme/two').and.to.contain('--local-dir')
      const line = res.stderr.split('\n').find((l) => l.includes('[E_USAGE]'))
      expect(line, 'one line names both').to.match(/acme\/one.*acme\/two/)
    }
    expect(emu.contentRequests('acme/two'), 'nothing of the second model fetched').to.have.length(0)
    expect(await snapshot(dir), 'the first model and its state unchanged').to.deep.equal(before)
  })

  it('two model ids that share one cache directory (acme/a.b and acme/a___b): the second is refused, not mixed in', async () => {
    const env = testEnv(home)
    const first = await runCli(['pull', 'acme/a.b', '--endpoint', emu.url], {env})
    expect(first.code, first.stderr).to.equal(0)
    const second = await runCli(['pull', 'acme/a___b', '--endpoint', emu.url], {env})
    expect(second.code, second.stderr).to.equal(2)
    expect(second.stderr).to.contain('acme/a.b').and.to.contain('acme/a___b')
    const file = path.join(home, 'cache', 'models', 'acme', 'a___b', 'x.bin')
    expect((await fs.readFile(file)).equals(emu.contentOf('acme/a.b', 'x.bin')), 'the first model\'s file is kept').to.equal(true)
  })

  it('stray write probes (dead pid, or old) and old journal temp files are swept by the next pull; a fresh probe of a live process is left', async () => {
    const state = stateDir()
    await fs.mkdir(state, {recursive: true})
    const dead = path.join(state, `.write-probe-${deadPid()}`)
    const oldLive = path.join(state, `.write-probe-${process.ppid}`)
    const freshLive = path.join(state, `.write-probe-${process.pid}`)
    const oldTemp = path.join(state, `.journal-v1.json.${process.ppid}.0a1b2c3d.tmp`)
    for (const f of [dead, oldLive, freshLive, oldTemp]) await fs.writeFile(f, '')
    const longAgo = new Date(Date.now() - 3 * 3600 * 1000)
    for (const f of [oldLive, oldTemp]) await fs.utimes(f, longAgo, longAgo)

    const res = await pull(ONE)
    expect(res.code, res.stderr).to.equal(0)
    expect(await exists(dead), 'probe of a dead pid').to.equal(false)
    expect(await exists(oldLive), 'probe 3 h old').to.equal(false)
    expect(await exists(oldTemp), 'journal temp 3 h old').to.equal(false)
    expect(await exists(freshLive), 'a live process\'s fresh probe is not ours to remove').to.equal(true)
  })
})
