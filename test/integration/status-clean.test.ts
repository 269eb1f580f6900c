import {createHash} from 'node:crypto'
import fs from 'node:fs/promises'
import path from 'node:path'

import {expect} from 'chai'

import {exists, listFiles, makeTmpDir, runCli, startCli, testEnv} from '../support/cli.js'
import {HubEmulator} from '../support/emulator.js'
import {type JournalView, RunningCli, pullAndKillWhen, readJournal, waitUntil} from '../support/process.js'
import {statePaths} from '../support/state-paths.js'

const MODEL = 'acme/half.done-v2'
const MASKED = 'half___done-v2'
const MiB = 1024 * 1024
const FILES = [
  {path: 'config.json', content: '{"layers": 2}\n'},
  {path: 'tokenizer.json', size: 40_000},
  // A model file whose name looks like one of our temp files: clean must leave it alone.
  {path: '.mv.123.abcdef.tmp', content: 'part of the model\n'},
  {path: 'model.safetensors', size: 24 * MiB},
]
const SMALL = FILES.filter((f) => f.path !== 'model.safetensors').map((f) => f.path)

/** Every file below dir (state included) with size and content hash: "nothing changed" is equality. */
async function snapshot(dir: string): Promise<Record<string, string>> {
  const out: Record<string, string> = {}
  for (const f of await listFiles(dir, new Set())) {
    const p = path.join(dir, f)
    const stat = await fs.lstat(p)
    if (!stat.isFile()) continue
    out[f] = `${stat.size}:${stat.mtimeMs}:${createHash('sha256').update(await fs.readFile(p)).digest('hex')}`
  }
  return out
}

function partialReady(doc: JournalView): boolean {
  const records = Object.values(doc.files)
  const big = doc.files['model.safetensors']
  return SMALL.every((p) => doc.files[p]?.status === 'complete') && big?.status === 'partial' && big.chunks.some((c) => c !== null) && records.length === FILES.length
}

describe('status and clean on a model a killed pull left half done', function () {
  this.timeout(180_000)
  let emu: HubEmulator
  let home: string
  let env: NodeJS.ProcessEnv
  let modelDir: string

  beforeEach(async () => {
    emu = await HubEmulator.start({models: [{id: MODEL, files: FILES}], rateLimitBytesPerSec: 2 * MiB})
    home = await makeTmpDir()
    env = testEnv(home)
    modelDir = path.join(home, 'cache', 'models', 'acme', MASKED)
    // The default cache layout, so `status` and `clean` without a model find it by scanning.
    await pullAndKillWhen(['pull', MODEL, '--endpoint', emu.url, '--concurrency', '4', '--connections', '1'], env, modelDir, partialReady)
    const partials = await fs.readdir(statePaths(modelDir).partials)
    expect(partials).to.have.length(1)
    expect((await fs.stat(statePaths(modelDir).partial(partials[0]))).size).to.be.greaterThan(0)
  })
  afterEach(async () => {
    await emu.stop()
    await fs.rm(home, {recursive: true, force: true})
  })

  const cli = (args: string[]) => runCli(args, {env})

  it('status --json (scan of the cache, and by model) reports complete and partial files; it changes nothing', async () => {
    const before = await snapshot(modelDir)
    const scan = await cli(['status', '--json'])
    expect(scan.code, scan.stderr).to.equal(0)
    const report = JSON.parse(scan.stdout)
    expect(report.type).to.equal('status')
    expect(report.models).to.have.length(1)
    const m = report.models[0]
    expect(m).to.include({modelId: MODEL, modelDir, journal: 'ok', complete: false})
    expect(m.lockedBy).to.equal(undefined)
    expect(m.files).to.include({known: FILES.length, complete: SMALL.length, partial: 1, failed: 0})
    expect(m.bytes.partial).to.be.greaterThan(0).and.lessThan(24 * MiB)
    expect(m.leftovers.partialFiles).to.equal(1)
    expect(m.fileList).to.equal(undefined)

    const one = JSON.parse((await cli(['status', MODEL, '--json'])).stdout).models[0]
    expect(one.fileList.find((f: {path: string}) => f.path === 'model.safetensors')).to.include({status: 'partial', size: 24 * MiB})
    expect(one.fileList.filter((f: {status: string}) => f.status === 'complete')).to.have.length(SMALL.length)

    // --cache-dir scans another root: there is nothing there.
    const other = JSON.parse((await cli(['status', '--json', '--cache-dir', path.join(home, 'elsewhere')])).stdout)
    expect(other.models).to.deep.equal([])

    const human = await cli(['status', MODEL])
    expect(human.code).to.equal(0)
    expect(human.stdout).to.contain(MODEL).and.to.contain(modelDir).and.to.contain('model.safetensors')
    expect(await snapshot(modelDir)).to.deep.equal(before)
  })

  it('status sees a pull in progress without disturbing it', async () => {
    const run = new RunningCli(startCli(['pull', MODEL, '--endpoint', emu.url, '--connections', '1', '--json'], {env}))
    try {
      await run.waitForEvent((e) => e.type === 'start')
      const m = JSON.parse((await cli(['status', MODEL, '--json'])).stdout).models[0]
      expect(m.lockedBy).to.match(/^pid \d+/)
      const res = await run.done
      expect(res.code, res.stderr).to.equal(0)
    } finally {
      await run.kill('SIGKILL')
    }
    const done = JSON.parse((await cli(['status', '--json'])).stdout).models[0]
    expect(done.complete).to.equal(true)
    expect(done.files).to.include({complete: FILES.length, partial: 0})
  })

  it('clean --dry-run lists what would go and deletes nothing', async () => {
    const before = await snapshot(modelDir)
    const res = await cli(['clean', MODEL, '--dry-run', '--json'])
    expect(res.code, res.stderr).to.equal(0)
    const report = JSON.parse(res.stdout)
    expect(report.dryRun).to.equal(true)
    const [m] = report.models
    expect(m.items.filter((i: {kind: string}) => i.kind === 'partial')).to.have.length(1)
    expect(m.items[0].file).to.equal('model.safetensors')
    expect(m.journalEntries).to.deep.equal(['model.safetensors'])
    expect(report.freedBytes).to.be.greaterThan(0)
    expect(await snapshot(modelDir)).to.deep.equal(before)
    const human = await cli(['clean', '--dry-run'])
    expect(human.code).to.equal(0)
    expect(await snapshot(modelDir)).to.deep.equal(before)
  })

  it('clean removes partials, quarantine, temp files, journal backups and unfinished entries; never a verified file', async () => {
    const state = statePaths(modelDir).dir
    // Leftovers of other kinds, as crashes and failed hashes leave them.
    await fs.mkdir(path.join(state, 'quarantine'), {recursive: true})
    await fs.writeFile(path.join(state, 'quarantine', 'deadbeef.part'), Buffer.alloc(1000))
    await fs.writeFile(path.join(state, '.journal-v1.json.4242.0a1b2c3d.tmp'), '{')
    await fs.writeFile(path.join(state, 'journal-v1.json.unreadable-1700000000000'), 'garbage')
    await fs.writeFile(path.join(modelDir, '.msc.4242.00ff00ff00ff.tmp'), 'half an index')
    const verified: Record<string, Buffer> = {}
    for (const p of SMALL) verified[p] = await fs.readFile(path.join(modelDir, p))
    const journalBefore = (await readJournal(modelDir))!

    const res = await cli(['clean', '--json'])
    expect(res.code, res.stderr).to.equal(0)
    const kinds = JSON.parse(res.stdout).models[0].items.map((i: {kind: string}) => i.kind).sort()
    expect(kinds).to.deep.equal(['journal-backup', 'partial', 'quarantine', 'temp', 'temp'])

    expect(await fs.readdir(path.join(state, 'partial-v1'))).to.deep.equal([])
    expect(await exists(path.join(state, 'quarantine', 'deadbeef.part'))).to.equal(false)
    expect(await exists(path.join(state, '.journal-v1.json.4242.0a1b2c3d.tmp'))).to.equal(false)
    expect(await exists(path.join(state, 'journal-v1.json.unreadable-1700000000000'))).to.equal(false)
    expect(await exists(path.join(modelDir, '.msc.4242.00ff00ff00ff.tmp'))).to.equal(false)
    // Verified files and their complete entries are untouched; only the unfinished entry is gone.
    for (const p of SMALL) expect((await fs.readFile(path.join(modelDir, p))).equals(verified[p]), p).to.equal(true)
    const journal = (await readJournal(modelDir))!
    expect(Object.keys(journal.files).sort()).to.deep.equal([...SMALL].sort())
    for (const p of SMALL) expect(journal.files[p]).to.deep.equal(journalBefore.files[p])
    expect(await exists(path.join(state, 'lock'))).to.equal(false)

    // A second clean finds nothing; the next pull fetches the big file from the start and completes.
    expect(JSON.parse((await cli(['clean', MODEL, '--json'])).stdout).freedBytes).to.equal(0)
    emu.clearLog()
    emu.setRateLimit(undefined)
    const again = await cli(['pull', MODEL, '--endpoint', emu.url])
    expect(again.code, again.stderr).to.equal(0)
    expect(emu.contentRequests(MODEL).map((e) => e.path)).to.deep.equal(['model.safetensors'])
    expect(emu.contentRequests(MODEL)[0].rangeStart).to.equal(0)
  })

  it('clean while a pull runs: exit 6 E_LOCKED, nothing removed', async () => {
    const run = new RunningCli(startCli(['pull', MODEL, '--endpoint', emu.url, '--connections', '1', '--json'], {env}))
    try {
      await run.waitForEvent((e) => e.type === 'start')
      await waitUntil(async () => exists(statePaths(modelDir).lock), 'the lock')
      const partials = await fs.readdir(statePaths(modelDir).partials)
      for (const args of [['clean', MODEL], ['clean', MODEL, '--dry-run'], ['clean']]) {
        const res = await cli(args)
        expect(res.code, args.join(' ')).to.equal(6)
        expect(res.stderr).to.contain('[E_LOCKED]')
        expect(res.stderr).not.to.match(/^\s+at /m)
      }
      expect(await fs.readdir(statePaths(modelDir).partials)).to.deep.equal(partials)
    } finally {
      await run.kill('SIGKILL')
    }
  })
})
