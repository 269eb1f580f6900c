import fs from 'node:fs/promises'
import path from 'node:path'

import {expect} from 'chai'

import {HubEmulator} from '../support/emulator.js'
import {exists, makeTmpDir, runCli, testEnv} from '../support/cli.js'
import {journalClaimsProblems} from '../support/journal-check.js'
import {readJournalOnDisk} from '../support/journal-read.js'
import {type JournalView, durableChunkIndices, durablePrefixBytes, readJournal, strayTempFiles} from '../support/process.js'
import {statePaths} from '../support/state-paths.js'

const MODEL = 'acme/crashy'
const MiB = 1024 * 1024
const BIG = 'model.safetensors'
const SMALL = 'config.json'
const BIG_SIZE = 12 * MiB + 555

/**
 * SIGKILL inside a journal write, at the named points of MS_RESUME_CRASH_AT (src/fs/crash-points.ts):
 * an append to the log leaves at worst a torn last batch, which the next run ignores; a compaction
 * leaves the old snapshot or the new one, never a torn one. The next run removes the temp file a
 * killed writer left and finishes byte-exact from the durable state.
 */
describe('SIGKILL inside a journal write (MS_RESUME_CRASH_AT)', function () {
  this.timeout(60_000)
  let emu: HubEmulator
  let home: string
  let dir: string
  let stateDir: string

  beforeEach(async () => {
    // 4 MiB/s: checkpoints (every 1 s) happen while the file is still far from done.
    emu = await HubEmulator.start({models: [{id: MODEL, files: [{path: BIG, size: BIG_SIZE}, {path: SMALL, content: '{"a": 1}\n'}]}], rateLimitBytesPerSec: 4 * MiB})
    home = await makeTmpDir()
    dir = path.join(home, 'out')
    stateDir = statePaths(dir).dir
  })
  afterEach(async () => {
    await emu.stop()
    await fs.rm(home, {recursive: true, force: true})
  })

  const pull = (crashAt?: string, extra: string[] = [], env: Record<string, string> = {}) =>
    runCli(['pull', MODEL, '--endpoint', emu.url, '--local-dir', dir, '--concurrency', '1', ...extra], {env: testEnv(home, {MS_RESUME_CRASH_AT: crashAt, ...env})})

  async function expectExact(p: string): Promise<void> {
    expect((await fs.readFile(path.join(dir, p))).equals(emu.contentOf(MODEL, p)), `${p} byte-exact`).to.equal(true)
  }

  /** The crashed run: killed by the hook, nothing unverified at a final path, the journal whole and honest. */
  async function crash(crashAt: string, extra: string[] = [], env: Record<string, string> = {}): Promise<JournalView | undefined> {
    const res = await pull(crashAt, extra, env)
    expect(res.signal, `killed at ${crashAt}; stderr: ${res.stderr}`).to.equal('SIGKILL')
    for (const p of [BIG, SMALL]) if (await exists(path.join(dir, p))) await expectExact(p)
    const text = await fs.readFile(path.join(stateDir, 'journal-v1.json'), 'utf8').catch(() => undefined)
    if (text !== undefined) expect(JSON.parse(text).version, 'the journal parses').to.equal(1)
    expect((await journalClaimsProblems(dir)).problems).to.deep.equal([])
    return readJournal(dir)
  }

  /** The next run: no crash hook; resumes at the durable prefix and ends byte-exact with no temp files. */
  async function resume(before: JournalView | undefined): Promise<void> {
    emu.setRateLimit(undefined)
    const logFrom = emu.log.length
    const res = await pull()
    expect(res.code, res.stderr).to.equal(0)
    await expectExact(BIG)
    await expectExact(SMALL)
    expect(await strayTempFiles(stateDir), 'stray temp files after the next run').to.deep.equal([])
    expect(await fs.readdir(path.join(stateDir, 'partial-v1'))).to.deep.equal([])
    const record = before?.files[BIG]
    const prefix = durablePrefixBytes(record)
    if (record?.status !== 'complete' && prefix < BIG_SIZE) {
      // Resumed where the surviving journal said: never from 0 when it held chunks, never past it.
      const first = emu.log.slice(logFrom).find((e) => e.content && e.path === BIG)
      expect(first?.rangeStart, 'first request of the next run').to.equal(prefix)
    }
  }

  it('after-data-fsync: data durable, journal not yet updated; the old journal stands and the next run resumes from it', async () => {
    const before = await crash('after-data-fsync:2')
    expect(durableChunkIndices(before?.files[BIG]).length, 'the first checkpoint survived').to.be.greaterThan(0)
    // The second checkpoint's data was fsynced but never claimed: the partial holds more than the journal says.
    const partial = await fs.stat(path.join(stateDir, 'partial-v1', before!.files[BIG].partialName!))
    expect(partial.size).to.be.greaterThan(durablePrefixBytes(before!.files[BIG]))
    await resume(before)
  })

  // Every write compacts: the snapshot is rewritten each time, as a long run's compactions do.
  const COMPACT_ALWAYS = {MS_RESUME_TEST_JOURNAL_COMPACT_BYTES: '0'}

  for (const point of ['after-journal-temp', 'before-journal-rename']) {
    it(`${point} in a compaction: the new snapshot is a complete temp file, the old journal still stands; the temp is removed next run`, async () => {
      // Durable writes: snapshot and log at each write; the fifth is the third snapshot (killed here).
      const before = await crash(`${point}:5`, [], COMPACT_ALWAYS)
      const temps = (await strayTempFiles(stateDir)).filter((n) => n.startsWith('.journal-v1.json.'))
      expect(temps, 'the killed writer left its temp file').to.have.length(1)
      const next = JSON.parse(await fs.readFile(path.join(stateDir, temps[0]), 'utf8')) as JournalView
      const old = before!
      // Old or new, never torn: both parse; the temp (new) claims at least what the journal (old:
      // snapshot and log) claims. A compaction adds no claim of its own, so they may be equal.
      expect(next.version).to.equal(1)
      expect(durableChunkIndices(old.files[BIG]).length, 'checkpoints before the kill').to.be.greaterThan(0)
      expect(durableChunkIndices(next.files[BIG])).to.include.members(durableChunkIndices(old.files[BIG]))
      await resume(before)
    })
  }

  it('after-journal-snapshot: the new snapshot in place, the old log not yet replaced: the old log is ignored, nothing claimed is lost', async () => {
    const before = await crash('after-journal-snapshot:3', [], COMPACT_ALWAYS)
    const snapshot = JSON.parse(await fs.readFile(statePaths(dir).journal, 'utf8')) as JournalView
    const header = JSON.parse((await fs.readFile(statePaths(dir).journalLog, 'utf8')).split('\n')[0]) as {logId: string}
    expect(header.logId, 'the log still belongs to the first snapshot').to.not.equal(snapshot.logId)
    // What the journal says is the new snapshot alone, and it holds every claim the old log made.
    expect(JSON.stringify(before?.files)).to.equal(JSON.stringify(snapshot.files))
    expect(durableChunkIndices(before?.files[BIG]).length, 'checkpoints before the kill').to.be.greaterThan(0)
    await resume(before)
  })

  it('mid-journal-append: a torn last batch; the next run ignores it, keeps the journal and resumes from the committed batches', async () => {
    const before = await crash('mid-journal-append:2')
    const {log} = (await readJournalOnDisk(dir))!
    expect(log.tornBytes, 'half a batch at the end of the log').to.be.greaterThan(0)
    expect(log.batches, 'the batches before it stand').to.be.greaterThan(0)
    expect(durableChunkIndices(before?.files[BIG]).length, 'claims of the committed batches').to.be.greaterThan(0)
    const res = await pull(undefined, ['--json'])
    expect(res.code, res.stderr).to.equal(0)
    expect(res.stdout, 'a torn tail is not a damaged journal').not.to.contain('"recovered-journal"')
    expect((await readJournalOnDisk(dir))!.log.tornBytes, 'the next run did not append after the torn batch').to.equal(0)
    await expectExact(BIG)
    await expectExact(SMALL)
  })

  it('mid-journal-append, then the resume: the first request starts where the committed batches end', async () => {
    const before = await crash('mid-journal-append:2')
    await resume(before)
  })

  it('after-journal-append: a batch written but not yet fdatasynced is whole after a kill (the page cache keeps it)', async () => {
    const before = await crash('after-journal-append:2')
    const {log} = (await readJournalOnDisk(dir))!
    expect(log.tornBytes).to.equal(0)
    expect(log.batches).to.be.greaterThan(0)
    await resume(before)
  })

  it('before-finalize-rename: a verified partial not yet in place; nothing at the final path; the next run finishes it', async () => {
    const before = await crash('before-finalize-rename:1', ['--include', BIG])
    expect(await exists(path.join(dir, BIG))).to.equal(false)
    const logFrom = emu.log.length
    await resume(before)
    // Only what the last checkpoint had not claimed comes over the network again, not the whole file.
    const sent = emu.log.slice(logFrom).filter((e) => e.content && e.path === BIG).reduce((n, e) => n + e.bytesSent, 0)
    expect(sent).to.be.at.most(BIG_SIZE - durablePrefixBytes(before?.files[BIG]))
    expect(durablePrefixBytes(before?.files[BIG]), 'checkpoints before the kill').to.be.greaterThan(0)
  })

  it('a kill inside the manifest write: the next run removes its temp file too', async () => {
    // Small file only: the first journal write is a compaction (snapshot, then log), the third durable write the manifest.
    const before = await crash('after-journal-temp:3', ['--include', SMALL])
    expect(await strayTempFiles(stateDir), 'the killed writer left the manifest temp').to.satisfy((names: string[]) => names.some((n) => n.startsWith('.manifest-v1.json.')))
    expect(before?.files[SMALL]?.status).to.equal('complete')
    // A temp of a writer that is alive (this test process stands in for one) is not stray: kept.
    const live = `.manifest-v1.json.${process.pid}.0badf00d.tmp`
    await fs.writeFile(path.join(stateDir, live), '{}')
    const res = await pull(undefined, ['--include', SMALL])
    expect(res.code, res.stderr).to.equal(0)
    await expectExact(SMALL)
    expect(await strayTempFiles(stateDir)).to.deep.equal([live])
    expect(JSON.parse(await fs.readFile(path.join(stateDir, 'manifest-v1.json'), 'utf8')).files).to.have.length(1)
  })
})
