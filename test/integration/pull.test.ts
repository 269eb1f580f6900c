import fs from 'node:fs/promises'
import path from 'node:path'

import {expect} from 'chai'

import {HubEmulator} from '../support/emulator.js'
import {exists, listFiles, makeTmpDir, runCli, testEnv} from '../support/cli.js'
import {statePaths} from '../support/state-paths.js'

const MODEL = 'acme/tiny.model-v1.5'
const FILES = [
  {path: 'config.json', content: '{"hidden_size": 8}\n'},
  {path: 'empty.txt', content: ''},
  {path: 'weights/model-00001.safetensors', size: 5 * 1024 * 1024 + 123},
  {path: 'sub dir/with space/näme ünïcode.bin', size: 70_000},
  {path: 'tokenizer/vocab.v2.txt', size: 3000},
]

describe('pull', function () {
  this.timeout(120_000)
  let emu: HubEmulator
  let home: string

  beforeEach(async () => {
    emu = await HubEmulator.start({models: [{id: MODEL, files: FILES}]})
    home = await makeTmpDir()
  })
  afterEach(async () => {
    await emu.stop()
    await fs.rm(home, {recursive: true, force: true})
  })

  const pull = (args: string[], extra: Record<string, string | undefined> = {}) =>
    runCli(['pull', MODEL, '--endpoint', emu.url, ...args], {env: testEnv(home, extra)})

  async function expectByteExact(dir: string, paths: string[]): Promise<void> {
    for (const p of paths) {
      const onDisk = await fs.readFile(path.join(dir, ...p.split('/')))
      expect(onDisk.equals(emu.contentOf(MODEL, p)), `${p} byte-exact`).to.equal(true)
    }
  }

  it('downloads nested, spaced, non-ASCII, dotted, empty and multi-MiB files byte-exact', async () => {
    const dir = path.join(home, 'out')
    const res = await pull(['--local-dir', dir])
    expect(res.code, res.stderr).to.equal(0)
    expect(await listFiles(dir)).to.deep.equal(FILES.map((f) => f.path).sort())
    await expectByteExact(dir, FILES.map((f) => f.path))
    // The empty file needs no request; .gitattributes is listed by the hub but dropped.
    expect(emu.contentRequests(MODEL, 'empty.txt')).to.have.length(0)
    expect(emu.contentRequests(MODEL, '.gitattributes')).to.have.length(0)
    expect(await exists(path.join(dir, '.gitattributes'))).to.equal(false)
    // Every content request asked for a range, and identity encoding.
    for (const entry of emu.contentRequests(MODEL)) {
      expect(entry.range, entry.path).to.match(/^bytes=\d+-\d+$/)
      expect(entry.headers['accept-encoding']).to.equal('identity')
    }
  })

  it('a second pull of a complete model transfers no file bytes', async () => {
    const dir = path.join(home, 'out')
    expect((await pull(['--local-dir', dir])).code).to.equal(0)
    emu.clearLog()
    const res = await pull(['--local-dir', dir])
    expect(res.code, res.stderr).to.equal(0)
    expect(emu.contentRequests(MODEL)).to.have.length(0)
    expect(emu.totalBytesSent()).to.be.lessThan(20_000) // listing JSON only
  })

  it('--include and --exclude filter like the official client (fnmatch on the whole path)', async () => {
    const dir = path.join(home, 'out')
    const res = await pull(['--local-dir', dir, '--include', '*.bin', '--include', 'tokenizer/', '--exclude', 'sub dir/*'])
    expect(res.code, res.stderr).to.equal(0)
    expect(await listFiles(dir)).to.deep.equal(['tokenizer/vocab.v2.txt'])
    expect(emu.contentRequests(MODEL).map((e) => e.path)).to.deep.equal(['tokenizer/vocab.v2.txt'])
  })

  it('a filtered pull keeps in the manifest what earlier pulls completed, so verify still covers the whole copy', async () => {
    const dir = path.join(home, 'out')
    expect((await pull(['--local-dir', dir, '--include', 'config.json'])).code).to.equal(0)
    const second = await pull(['--local-dir', dir, '--include', 'tokenizer/*'])
    expect(second.code, second.stderr).to.equal(0)
    const manifest = JSON.parse(await fs.readFile(statePaths(dir).manifest, 'utf8')) as {files: {path: string}[]}
    expect(manifest.files.map((f) => f.path)).to.deep.equal(['config.json', 'tokenizer/vocab.v2.txt'])
    // And verify checks both: a damaged config.json, pulled by the first run only, is found.
    await fs.writeFile(path.join(dir, 'config.json'), '{"hidden_size": 9}\n')
    const verify = await runCli(['verify', MODEL, '--local-dir', dir, '--level', 'full'], {env: testEnv(home)})
    expect(verify.code, verify.stdout + verify.stderr).to.not.equal(0)
    expect(verify.stdout + verify.stderr).to.include('config.json')
  })

  it('uses the ModelScope cache layout by default, with dots in the name masked', async () => {
    const res = await pull(['--print-path'])
    expect(res.code, res.stderr).to.equal(0)
    const modelDir = path.join(home, 'cache', 'models', 'acme', 'tiny___model-v1___5')
    expect(res.stdout.trim()).to.equal(modelDir)
    await expectByteExact(modelDir, FILES.map((f) => f.path))
    // The official client's index files and the dotted-name symlink.
    expect(await exists(path.join(modelDir, '.msc'))).to.equal(true)
    expect(await fs.readFile(path.join(modelDir, '.mv'), 'utf8')).to.match(/^Revision:master,CreatedAt:\d+$/)
    expect(await fs.readlink(path.join(home, 'cache', 'models', 'acme', 'tiny.model-v1.5'))).to.equal('tiny___model-v1___5')
  })

  it('--cache-dir puts files in DIR/<owner>/<masked name>', async () => {
    const res = await pull(['--cache-dir', path.join(home, 'cd')])
    expect(res.code, res.stderr).to.equal(0)
    await expectByteExact(path.join(home, 'cd', 'acme', 'tiny___model-v1___5'), ['config.json'])
  })

  it('writes the journal and the manifest with the umask\'s mode (0644 at umask 022; nothing secret in them) and a partial-free state', async () => {
    const dir = path.join(home, 'out')
    const oldUmask = process.umask(0o022)
    try {
      expect((await pull(['--local-dir', dir])).code).to.equal(0)
    } finally {
      process.umask(oldUmask)
    }
    const state = statePaths(dir).dir
    for (const name of ['journal-v1.json', 'manifest-v1.json']) {
      const st = await fs.stat(path.join(state, name))
      expect(st.mode & 0o777, name).to.equal(0o644)
    }
    expect(await fs.readdir(path.join(state, 'partial-v1'))).to.deep.equal([])
    const journal = JSON.parse(await fs.readFile(path.join(state, 'journal-v1.json'), 'utf8'))
    expect(journal.version).to.equal(1)
    const rec = journal.files['weights/model-00001.safetensors']
    expect(rec.status).to.equal('complete')
    expect(rec.chunks).to.have.length(6)
    expect(rec.sha256).to.equal(emu.sha256Of(MODEL, 'weights/model-00001.safetensors'))
  })

  it('--quiet stays silent with many files in flight (no MaxListeners warning on stderr)', async () => {
    await emu.stop()
    const many = Array.from({length: 40}, (_, i) => ({path: `shard/f${i}.bin`, size: 3000 + i}))
    emu = await HubEmulator.start({models: [{id: MODEL, files: many}]})
    const dir = path.join(home, 'out')
    const res = await pull(['--local-dir', dir, '--concurrency', '32', '--quiet'])
    expect(res.code, res.stderr).to.equal(0)
    expect(res.stdout).to.equal('')
    expect(res.stderr).to.equal('')
    expect(await listFiles(dir)).to.have.length(40)
  })

  it('--dry-run lists what would be downloaded and writes nothing', async () => {
    const dir = path.join(home, 'out')
    const res = await pull(['--local-dir', dir, '--dry-run'])
    expect(res.code, res.stderr).to.equal(0)
    expect(res.stderr).to.contain('weights/model-00001.safetensors')
    expect(await exists(dir)).to.equal(false)
    expect(emu.contentRequests(MODEL)).to.have.length(0)
  })

  it('a repo or revision that does not exist exits 5 with a clear message', async () => {
    const res = await runCli(['pull', 'acme/nope', '--endpoint', emu.url, '--local-dir', path.join(home, 'x')], {env: testEnv(home)})
    expect(res.code).to.equal(5)
    expect(res.stderr).to.contain('[E_NOT_FOUND]').and.to.contain('acme/nope')
    expect(res.stderr).not.to.match(/\n\s+at /)
    const rev = await pull(['--revision', 'v9', '--local-dir', path.join(home, 'y')])
    expect(rev.code).to.equal(5)
  })
})

describe('pull with a token', function () {
  this.timeout(60_000)
  let emu: HubEmulator
  let home: string
  const TOKEN = 'sekret-token-123'
  beforeEach(async () => {
    emu = await HubEmulator.start({models: [{id: MODEL, files: FILES}], token: TOKEN, blobOnSeparateOrigin: true})
    home = await makeTmpDir()
  })
  afterEach(async () => {
    await emu.stop()
    await fs.rm(home, {recursive: true, force: true})
  })

  it('without a token: exit 5 [E_AUTH], nothing written', async () => {
    const dir = path.join(home, 'out')
    const res = await runCli(['pull', MODEL, '--endpoint', emu.url, '--local-dir', dir], {env: testEnv(home)})
    expect(res.code).to.equal(5)
    expect(res.stderr).to.contain('[E_AUTH]')
    expect(await exists(dir)).to.equal(false)
  })

  it('with a wrong token: exit 5 [E_AUTH]', async () => {
    const res = await runCli(['pull', MODEL, '--endpoint', emu.url, '--token', 'wrong', '--local-dir', path.join(home, 'o')], {env: testEnv(home)})
    expect(res.code).to.equal(5)
    expect(res.stderr).to.contain('[E_AUTH]')
    expect(res.stderr).not.to.contain('wrong')
  })

  it('with the token (env): sends cookie and bearer to the hub only, never to the blob origin, never prints or stores it', async () => {
    const dir = path.join(home, 'out')
    const res = await runCli(['pull', MODEL, '--endpoint', emu.url, '--local-dir', dir], {env: testEnv(home, {MODELSCOPE_API_TOKEN: TOKEN})})
    expect(res.code, res.stderr).to.equal(0)
    const api = emu.log.filter((e) => e.origin === 'main')
    expect(api.length).to.be.greaterThan(0)
    for (const e of api) {
      expect(e.headers.cookie).to.equal(`m_session_id=${TOKEN}`)
      expect(e.headers.authorization).to.equal(`Bearer ${TOKEN}`)
    }
    const blob = emu.log.filter((e) => e.origin === 'blob')
    expect(blob.length).to.be.greaterThan(0)
    for (const e of blob) {
      expect(e.headers.cookie).to.equal(undefined)
      expect(e.headers.authorization).to.equal(undefined)
    }
    expect(res.stdout + res.stderr).not.to.contain(TOKEN)
    const stateFiles = await listFiles(statePaths(dir).dir, new Set())
    for (const f of stateFiles) {
      expect(await fs.readFile(path.join(statePaths(dir).dir, f), 'utf8'), f).not.to.contain(TOKEN)
    }
  })
})
