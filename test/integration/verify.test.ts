import fs from 'node:fs/promises'
import path from 'node:path'

import {expect} from 'chai'

import {loadXxh64} from '../../src/integrity/chunks.js'
import type {Manifest} from '../../src/integrity/manifest.js'
import type {FileReport, VerifyReport} from '../../src/verify/verify.js'
import {HubEmulator} from '../support/emulator.js'
import {exists, listFiles, makeTmpDir, runCli, testEnv} from '../support/cli.js'
import {STATE_DIR_NAME, statePaths} from '../support/state-paths.js'

const MiB = 1024 * 1024
const MODEL = 'acme/verify-me'
const BIG = 'weights/model-00001-of-00002.safetensors'
const SECOND = 'weights/model-00002-of-00002.safetensors'
const VOCAB = 'tokenizer/vocab.txt'
const CONFIG = 'config.json'
const FILES = [
  {path: CONFIG, content: '{"hidden_size": 8}\n'},
  {path: 'empty.txt', content: ''},
  // 40 MiB + 25 MiB: over the size at which verify hashes files in worker threads.
  {path: BIG, size: 40 * MiB},
  {path: SECOND, size: 25 * MiB + 7},
  {path: VOCAB, size: 3000},
  {path: 'sub dir/näme.bin', size: 70_000},
]
/** A small model whose files the tests change upstream. */
const PINNED = 'acme/pinned'
const PINNED_FILES = [
  {path: 'a.bin', size: 2 * MiB + 5},
  {path: 'b.json', content: '{"b": 1}\n'},
]

async function flipByte(file: string, offset: number): Promise<void> {
  const fh = await fs.open(file, 'r+')
  try {
    const b = Buffer.alloc(1)
    await fh.read(b, 0, 1, offset)
    b[0] ^= 0x5a
    await fh.write(b, 0, 1, offset)
  } finally {
    await fh.close()
  }
}

const byPath = (report: VerifyReport) => new Map<string, FileReport>(report.files.map((f) => [f.path, f]))

describe('verify, manifests and pull checks', function () {
  this.timeout(120_000)
  let emu: HubEmulator
  let home: string
  /** A complete pull of MODEL, made by an emulator that is stopped since. */
  let template: string
  let deadEndpoint: string

  before(async () => {
    home = await makeTmpDir('msr-verify-')
    template = path.join(home, 'template')
    const first = await HubEmulator.start({models: [{id: MODEL, files: FILES}]})
    const res = await runCli(['pull', MODEL, '--endpoint', first.url, '--local-dir', template, '--quiet'], {env: testEnv(home)})
    expect(res.code, res.stderr).to.equal(0)
    deadEndpoint = first.url
    await first.stop()
    // Content is a function of model id and path: this hub serves the same bytes.
    emu = await HubEmulator.start({models: [{id: MODEL, files: FILES}, {id: PINNED, files: PINNED_FILES}]})
  })
  after(async () => {
    await emu?.stop()
    await fs.rm(home, {recursive: true, force: true})
  })
  beforeEach(() => emu.clearLog())

  let copies = 0
  async function copyOfTemplate(opts: {state?: boolean} = {}): Promise<string> {
    const dir = path.join(home, `copy-${++copies}`)
    await fs.cp(template, dir, {recursive: true, filter: (src) => opts.state !== false || path.basename(src) !== STATE_DIR_NAME})
    return dir
  }

  /** Anything that reaches for a hub without being told where goes to the stopped one. */
  const cli = (args: string[], extra: Record<string, string | undefined> = {}) => runCli(args, {env: testEnv(home, {MODELSCOPE_ENDPOINT: deadEndpoint, ...extra})})
  const verifyJson = async (args: string[]) => {
    const res = await cli(['verify', ...args, '--json'])
    let report: VerifyReport | undefined
    try {
      report = JSON.parse(res.stdout) as VerifyReport
    } catch {
      // left undefined: the assertion on it says what came out
    }
    return {...res, report: report!}
  }
  async function expectByteExact(dir: string, repoPath: string, model = MODEL): Promise<void> {
    const onDisk = await fs.readFile(path.join(dir, ...repoPath.split('/')))
    expect(onDisk.equals(emu.contentOf(model, repoPath)), `${repoPath} byte-exact`).to.equal(true)
  }

  it('a good copy verifies at every level with the hub gone, in one JSON document', async () => {
    const dir = await copyOfTemplate()
    // One thread, and one worker thread per file (65 MiB in two big files is enough to use them).
    for (const [level, jobs] of [['size', '0'], ['fast', '2'], ['full', '1'], ['full', '2']]) {
      const res = await verifyJson([MODEL, '--local-dir', dir, '--level', level, '--jobs', jobs])
      expect(res.code, `${level} --jobs ${jobs}: ${res.stderr}`).to.equal(0)
      expect(res.report.ok).to.equal(true)
      expect(res.report.level).to.equal(level)
      expect(res.report.manifest.kind).to.equal('state')
      expect(res.report.files.map((f) => f.status)).to.deep.equal(FILES.map(() => 'ok'))
      expect(res.report.extra).to.deep.equal([])
    }
    expect(emu.log).to.have.length(0)
  })

  it('reports a flipped byte, a truncated file, a deleted file and an extra file; fast names the damaged chunk; exit 4; nothing is touched', async () => {
    const dir = await copyOfTemplate()
    const flipAt = 5 * MiB + 123
    await flipByte(path.join(dir, BIG), flipAt)
    await fs.truncate(path.join(dir, VOCAB), 1000)
    await fs.rm(path.join(dir, CONFIG))
    await fs.writeFile(path.join(dir, 'notes.md'), 'mine\n')
    await fs.mkdir(path.join(dir, 'sub dir', 'more'))
    await fs.writeFile(path.join(dir, 'sub dir', 'more', 'x.bin'), 'x')

    const fast = await verifyJson([MODEL, '--local-dir', dir, '--level', 'fast'])
    expect(fast.code, fast.stderr).to.equal(4)
    let files = byPath(fast.report)
    expect(files.get(BIG)!.status).to.equal('damaged')
    expect(files.get(BIG)!.damaged).to.deep.equal([{chunk: 5, start: 5 * MiB, end: 6 * MiB}])
    expect(files.get(VOCAB)!.status).to.equal('wrong-size')
    expect(files.get(VOCAB)!.foundSize).to.equal(1000)
    expect(files.get(CONFIG)!.status).to.equal('missing')
    expect(files.get(SECOND)!.status).to.equal('ok')
    expect(fast.report.ok).to.equal(false)
    expect(fast.report.extra).to.deep.equal(['notes.md', 'sub dir/more/x.bin'])

    const full = await verifyJson([MODEL, '--local-dir', dir, '--level', 'full', '--jobs', '2'])
    expect(full.code).to.equal(4)
    files = byPath(full.report)
    expect(files.get(BIG)!.status).to.equal('sha256-mismatch')
    expect(files.get(BIG)!.damaged!.map((d) => d.chunk)).to.deep.equal([5])
    expect(files.get(CONFIG)!.status).to.equal('missing')

    // Sizes only: the flipped byte is invisible, the rest is not.
    const size = await verifyJson([MODEL, '--local-dir', dir, '--level', 'size'])
    expect(size.code).to.equal(4)
    files = byPath(size.report)
    expect([files.get(BIG)!.status, files.get(VOCAB)!.status, files.get(CONFIG)!.status]).to.deep.equal(['ok', 'wrong-size', 'missing'])

    const plain = await cli(['verify', MODEL, '--local-dir', dir, '--level', 'fast'])
    expect(plain.code).to.equal(4)
    expect(plain.stderr).to.contain('[E_DAMAGED]')
    expect(plain.stderr).not.to.match(/\n\s+at /)
    for (const p of [BIG, VOCAB, CONFIG, 'notes.md']) expect(plain.stdout).to.contain(p)

    // Verification only reads.
    expect(await fs.readFile(path.join(dir, 'notes.md'), 'utf8')).to.equal('mine\n')
    expect((await fs.stat(path.join(dir, VOCAB))).size).to.equal(1000)
    const big = await fs.readFile(path.join(dir, BIG))
    expect(big[flipAt]).to.equal(emu.contentOf(MODEL, BIG)[flipAt] ^ 0x5a)
  })

  it('--repair fetches only the damaged chunk of a flipped byte (one Range request), downloads a missing file, keeps extra files', async () => {
    const dir = await copyOfTemplate()
    await flipByte(path.join(dir, BIG), 17 * MiB + 5)
    await fs.rm(path.join(dir, CONFIG))
    // Intact chunks followed by junk: cut back to size, nothing fetched.
    await fs.appendFile(path.join(dir, VOCAB), 'junk')
    await fs.writeFile(path.join(dir, 'notes.md'), 'mine\n')

    const res = await verifyJson([MODEL, '--local-dir', dir, '--repair', '--endpoint', emu.url])
    expect(res.code, res.stderr).to.equal(0)
    expect(res.report.ok).to.equal(true)
    const files = byPath(res.report)
    expect(files.get(BIG)!.repaired!.from).to.equal('sha256-mismatch')
    expect(files.get(CONFIG)!.repaired!.from).to.equal('missing')
    expect(files.get(VOCAB)!.repaired!.from).to.equal('wrong-size')
    await expectByteExact(dir, BIG)
    await expectByteExact(dir, CONFIG)
    await expectByteExact(dir, VOCAB)

    const big = emu.contentRequests(MODEL, BIG)
    expect(big, 'one request for the big file').to.have.length(1)
    expect([big[0].rangeStart, big[0].rangeEnd]).to.deep.equal([17 * MiB, 18 * MiB - 1])
    expect(emu.totalBytesSent(MODEL, BIG)).to.equal(MiB)
    expect(emu.contentRequests(MODEL, CONFIG)).to.have.length(1)
    expect(emu.contentRequests(MODEL).map((e) => e.path).sort()).to.deep.equal([BIG, CONFIG].sort())
    expect(await fs.readFile(path.join(dir, 'notes.md'), 'utf8')).to.equal('mine\n')

    const again = await verifyJson([MODEL, '--local-dir', dir, '--level', 'full'])
    expect(again.code).to.equal(0)
    expect(again.report.extra).to.deep.equal(['notes.md'])
  })

  it('--repair downloads a file whole when its chunk sums cannot place the damage', async () => {
    // A folder with no ms-resume state, and a manifest whose chunk sums describe the damaged bytes:
    // the SHA-256 says the file is wrong, no chunk says where.
    const dir = await copyOfTemplate({state: false})
    await flipByte(path.join(dir, SECOND), 3 * MiB)
    const manifest = JSON.parse(await fs.readFile(statePaths(template).manifest, 'utf8')) as Manifest
    const entry = manifest.files.find((f) => f.path === SECOND)!
    const onDisk = await fs.readFile(path.join(dir, SECOND))
    const xxh = await loadXxh64()
    entry.xxh64 = entry.xxh64.map((_, i) => xxh(onDisk.subarray(i * entry.chunkSizeBytes, (i + 1) * entry.chunkSizeBytes)))
    const skewed = path.join(home, 'skewed.manifest.json')
    await fs.writeFile(skewed, JSON.stringify(manifest))

    const res = await verifyJson(['--manifest', skewed, '--local-dir', dir, '--repair', '--endpoint', emu.url])
    expect(res.code, res.stderr).to.equal(0)
    expect(byPath(res.report).get(SECOND)!.repaired!.from).to.equal('sha256-mismatch')
    await expectByteExact(dir, SECOND)
    expect(emu.totalBytesSent(MODEL, SECOND)).to.equal(25 * MiB + 7)
    expect(emu.contentRequests(MODEL).map((e) => e.path)).to.deep.equal([SECOND])
  })

  it('a pinned manifest the hub no longer matches: pull --manifest refuses (nothing downloaded); --allow-manifest-mismatch proceeds', async () => {
    const first = path.join(home, 'pinned-first')
    expect((await cli(['pull', PINNED, '--endpoint', emu.url, '--local-dir', first])).code).to.equal(0)
    const pinnedFile = path.join(home, 'pinned.manifest.json')
    const out = await cli(['manifest', PINNED, '--local-dir', first, '--out', pinnedFile])
    expect(out.code, out.stderr).to.equal(0)

    emu.mutateFile(PINNED, 'a.bin')
    emu.clearLog()
    const dir = path.join(home, 'pinned-second')
    const refused = await cli(['pull', '--manifest', pinnedFile, '--endpoint', emu.url, '--local-dir', dir])
    expect(refused.code).to.equal(5)
    expect(refused.stderr).to.contain('[E_MANIFEST_MISMATCH]')
    expect(emu.contentRequests()).to.have.length(0)
    expect(await exists(path.join(dir, 'a.bin'))).to.equal(false)
    expect(await exists(path.join(dir, 'b.json'))).to.equal(false)

    const allowed = await cli(['pull', '--manifest', pinnedFile, '--endpoint', emu.url, '--local-dir', dir, '--allow-manifest-mismatch'])
    expect(allowed.code, allowed.stderr).to.equal(0)
    await expectByteExact(dir, 'a.bin', PINNED)
    await expectByteExact(dir, 'b.json', PINNED)

    // The first copy still matches its pin; the hub moved on.
    const remote = await verifyJson(['--manifest', pinnedFile, '--local-dir', first, '--remote', '--endpoint', emu.url])
    expect(remote.code, remote.stderr).to.equal(0)
    expect(remote.report.remote!.changed.map((c) => c.path)).to.deep.equal(['a.bin'])
    expect(remote.report.remote!.changed[0].hub.sha256).to.equal(emu.sha256Of(PINNED, 'a.bin'))
    expect(remote.report.remote!.removed).to.deep.equal([])

    // Repairing to a pin the hub no longer serves is refused too, and changes nothing.
    await flipByte(path.join(first, 'a.bin'), 10)
    emu.clearLog()
    const repair = await verifyJson(['--manifest', pinnedFile, '--local-dir', first, '--repair', '--endpoint', emu.url])
    expect(repair.code).to.equal(5)
    expect(repair.report.repair!.error!.code).to.equal('E_MANIFEST_MISMATCH')
    expect(emu.contentRequests()).to.have.length(0)
  })

  it('manifest prints the model manifest and --out writes it; verify --manifest checks a folder with no ms-resume state', async () => {
    const printed = await cli(['manifest', MODEL, '--local-dir', template])
    expect(printed.code, printed.stderr).to.equal(0)
    const manifest = JSON.parse(printed.stdout) as Manifest
    expect(manifest).to.deep.equal(JSON.parse(await fs.readFile(statePaths(template).manifest, 'utf8')))
    expect(manifest.files.map((f) => f.path)).to.deep.equal(FILES.map((f) => f.path).sort())
    const pinned = path.join(home, 'model.manifest.json')
    expect((await cli(['manifest', MODEL, '--local-dir', template, '--out', pinned])).code).to.equal(0)
    expect(JSON.parse(await fs.readFile(pinned, 'utf8'))).to.deep.equal(manifest)

    const bare = await copyOfTemplate({state: false})
    const res = await verifyJson(['--manifest', pinned, '--local-dir', bare, '--level', 'fast'])
    expect(res.code, res.stderr).to.equal(0)
    expect(res.report.manifest.kind).to.equal('file')
    expect(await exists(statePaths(bare).dir), 'verify writes no state').to.equal(false)

    // No manifest anywhere: a usage error, for verify and for manifest.
    const none = await cli(['verify', MODEL, '--local-dir', bare])
    expect(none.code).to.equal(2)
    expect(none.stderr).to.contain('[E_USAGE]')
    expect((await cli(['manifest', MODEL, '--local-dir', bare])).code).to.equal(2)
    // A directory that does not exist: every file is missing.
    const gone = await verifyJson(['--manifest', pinned, '--local-dir', path.join(home, 'nowhere')])
    expect(gone.code).to.equal(4)
    expect(gone.report.files.map((f) => f.status)).to.deep.equal(FILES.map(() => 'missing'))
    // A manifest that is not one.
    await fs.writeFile(path.join(home, 'bad.json'), '{"kind": "ms-resume/manifest", "version": 99}')
    expect((await cli(['verify', '--manifest', path.join(home, 'bad.json'), '--local-dir', bare])).code).to.equal(2)
  })

  it('without its manifest, verify <model> uses the journal\'s complete records', async () => {
    const dir = await copyOfTemplate()
    await fs.rm(statePaths(dir).manifest)
    const res = await verifyJson([MODEL, '--local-dir', dir, '--level', 'fast'])
    expect(res.code, res.stderr).to.equal(0)
    expect(res.report.manifest.kind).to.equal('journal')
    expect(res.report.files).to.have.length(FILES.length)
  })

  it('pull --check size neither reads nor fetches (a flipped byte stays); --check fast repairs just that chunk', async () => {
    const dir = await copyOfTemplate()
    const flipAt = 7 * MiB + 1
    await flipByte(path.join(dir, BIG), flipAt)

    const size = await cli(['pull', MODEL, '--endpoint', emu.url, '--local-dir', dir, '--check', 'size'])
    expect(size.code, size.stderr).to.equal(0)
    expect(emu.contentRequests()).to.have.length(0)
    expect((await fs.readFile(path.join(dir, BIG)))[flipAt]).to.equal(emu.contentOf(MODEL, BIG)[flipAt] ^ 0x5a)

    const fast = await cli(['pull', MODEL, '--endpoint', emu.url, '--local-dir', dir, '--check', 'fast', '--json'])
    expect(fast.code, fast.stderr).to.equal(0)
    await expectByteExact(dir, BIG)
    const requests = emu.contentRequests()
    expect(requests).to.have.length(1)
    expect([requests[0].path, requests[0].rangeStart, requests[0].rangeEnd]).to.deep.equal([BIG, 7 * MiB, 8 * MiB - 1])
    const summary = JSON.parse(fast.stdout.trim().split('\n').at(-1)!) as {type: string; repairedFiles: number; downloadedBytes: number}
    expect(summary.type).to.equal('summary')
    expect(summary.repairedFiles).to.equal(1)
    expect(summary.downloadedBytes).to.equal(MiB)
  })

  it('MODELSCOPE_ENABLE_DEFAULT_HASH_VALIDATION=true makes a plain pull find and repair a flipped byte', async () => {
    const dir = await copyOfTemplate()
    await flipByte(path.join(dir, SECOND), 25 * MiB + 3)
    const res = await cli(['pull', MODEL, '--endpoint', emu.url, '--local-dir', dir], {MODELSCOPE_ENABLE_DEFAULT_HASH_VALIDATION: 'true'})
    expect(res.code, res.stderr).to.equal(0)
    await expectByteExact(dir, SECOND)
    const requests = emu.contentRequests()
    expect(requests.map((e) => [e.path, e.rangeStart, e.rangeEnd])).to.deep.equal([[SECOND, 25 * MiB, 25 * MiB + 6]])
    expect(await listFiles(dir)).to.deep.equal(FILES.map((f) => f.path).sort())
  })
})
