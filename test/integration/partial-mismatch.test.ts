import fs from 'node:fs/promises'
import path from 'node:path'

import {expect} from 'chai'

import {HubEmulator, type LogEntry} from '../support/emulator.js'
import {makeTmpDir, runCli, testEnv} from '../support/cli.js'
import {journalClaimsProblems} from '../support/journal-check.js'
import {type JournalRecordView, type JournalView, durableChunkIndices, durablePrefixBytes, partialPath, pullAndKillWhen, readJournal, startJsonCli, waitUntil, writeJournal} from '../support/process.js'

const MODEL = 'acme/partial'
const MiB = 1024 * 1024
const BIG = 'model.safetensors'
const SIZE = 12 * MiB + 99

interface PullEvent {
  type: string
  [key: string]: unknown
}

/**
 * The partial file and the journal disagree, or the saved hash state cannot be used. Each test
 * starts from the same killed pull (a partial with at least 5 durable chunks and a saved SHA-256
 * state that can be restored), damages one thing, and runs the pull again.
 */
describe('partial file vs journal: shorter, longer, altered; saved hash state unusable', function () {
  this.timeout(60_000)
  let emu: HubEmulator
  let home: string
  let fixture: string
  let dir: string
  let journal: JournalView
  let record: JournalRecordView
  let prefix: number

  before(async () => {
    emu = await HubEmulator.start({models: [{id: MODEL, files: [{path: BIG, size: SIZE}]}], rateLimitBytesPerSec: 4 * MiB})
    home = await makeTmpDir()
    fixture = path.join(home, 'fixture')
    await pullAndKillWhen(['pull', MODEL, '--endpoint', emu.url, '--local-dir', fixture], testEnv(home), fixture, (doc) =>
      durablePrefixBytes(doc.files[BIG]) >= 5 * MiB && (doc.files[BIG].sha256State?.offsetBytes ?? Infinity) <= durablePrefixBytes(doc.files[BIG]))
    emu.setRateLimit(undefined)
  })
  after(async () => {
    await emu.stop()
    await fs.rm(home, {recursive: true, force: true})
  })
  beforeEach(async () => {
    dir = path.join(home, `out-${Math.random().toString(36).slice(2)}`)
    await fs.cp(fixture, dir, {recursive: true})
    journal = (await readJournal(dir))!
    record = journal.files[BIG]
    prefix = durablePrefixBytes(record)
    emu.clearLog()
    emu.clearFaults()
  })

  async function pullJson(extra: string[] = []): Promise<{code: number | null; events: PullEvent[]; reqs: LogEntry[]}> {
    const res = await runCli(['pull', MODEL, '--endpoint', emu.url, '--local-dir', dir, '--json', ...extra], {env: testEnv(home)})
    expect(res.code, res.stderr).to.equal(0)
    const events = res.stdout.trim().split('\n').map((l) => JSON.parse(l) as PullEvent)
    expect((await fs.readFile(path.join(dir, BIG))).equals(emu.contentOf(MODEL, BIG)), 'byte-exact').to.equal(true)
    expect(events.filter((e) => e.type === 'integrity-retry'), 'no hash mismatch, no whole-file download').to.deep.equal([])
    expect((await journalClaimsProblems(dir)).problems).to.deep.equal([])
    return {code: res.code, events, reqs: emu.contentRequests(MODEL, BIG)}
  }

  it('data file shorter than the journal says: falls back to the last whole chunk on disk', async () => {
    const cut = prefix - MiB - MiB / 2
    await fs.truncate(partialPath(dir, record), cut)
    const {events, reqs} = await pullJson()
    const resumeAt = Math.floor(cut / record.chunkSizeBytes) * record.chunkSizeBytes
    expect(events.find((e) => e.type === 'resume')?.offsetBytes, 'resume event').to.equal(resumeAt)
    expect(reqs[0].rangeStart, 'first request').to.equal(resumeAt)
    expect(reqs.reduce((n, e) => n + e.bytesSent, 0)).to.equal(SIZE - resumeAt)
  })

  it('data file gone while the journal claims chunks: nothing trusted, the file starts over from 0', async () => {
    await fs.rm(partialPath(dir, record))
    const {events, reqs} = await pullJson()
    expect(events.filter((e) => e.type === 'resume')).to.deep.equal([])
    expect(reqs.map((e) => e.rangeStart)).to.deep.equal([0])
  })

  it('data file longer than the journal says (and than the file): cut back to the durable chunks, garbage never trusted', async () => {
    const file = partialPath(dir, record)
    await fs.appendFile(file, Buffer.alloc(SIZE, 0x5a)) // past the journal's claim and past the listed size
    // Hold the next run at its first request, to see the partial as prepare left it.
    emu.setFaults(MODEL, BIG, [{kind: 'stall'}])
    const stalled = startJsonCli(['pull', MODEL, '--endpoint', emu.url, '--local-dir', dir], testEnv(home))
    await waitUntil(async () => emu.contentRequests(MODEL, BIG).length > 0, 'the first content request')
    const sizeAfterPrepare = (await fs.stat(file)).size
    await stalled.kill('SIGKILL')
    expect(sizeAfterPrepare, 'partial truncated to what the journal claims').to.equal(prefix)
    expect(emu.contentRequests(MODEL, BIG)[0].rangeStart).to.equal(prefix)

    emu.clearLog()
    emu.clearFaults()
    const {reqs} = await pullJson()
    expect(reqs[0].rangeStart, 'resumed at the durable prefix').to.equal(prefix)
  })

  it('a partial altered inside a claimed chunk, --check fast: only that chunk is fetched again', async () => {
    const file = partialPath(dir, record)
    const fh = await fs.open(file, 'r+')
    const at = record.chunkSizeBytes + 4321 // inside chunk 1, not the last durable chunk
    const byte = Buffer.alloc(1)
    await fh.read(byte, 0, 1, at)
    byte[0] ^= 0xff
    await fh.write(byte, 0, 1, at)
    await fh.close()
    const {events, reqs} = await pullJson(['--check', 'fast'])
    expect(events.some((e) => e.type === 'warning'), 'a warning names the damage').to.equal(true)
    const ranges = reqs.map((e) => [e.rangeStart, e.rangeEnd])
    // Chunk 1 again, then the rest from the old prefix; chunks 0 and 2.. stay as they were.
    expect(ranges, JSON.stringify(ranges)).to.deep.include([record.chunkSizeBytes, 2 * record.chunkSizeBytes - 1])
    expect(ranges.filter(([s]) => s !== record.chunkSizeBytes).map(([s]) => s)).to.deep.equal([prefix])
  })

  it('a partial altered inside its last kept chunk, default --check size: caught, fetched again from that chunk', async () => {
    const file = partialPath(dir, record)
    const fh = await fs.open(file, 'r+')
    // The prefix of whole chunks (a byte-exact checkpoint may claim part of the next one too).
    const whole = durableChunkIndices(record).filter((i, k) => i === k).length * record.chunkSizeBytes
    const at = whole - 1000 // inside the last whole durable chunk of the prefix
    const byte = Buffer.alloc(1)
    await fh.read(byte, 0, 1, at)
    byte[0] ^= 0xff
    await fh.write(byte, 0, 1, at)
    await fh.close()
    const {events, reqs} = await pullJson()
    expect(events.some((e) => e.type === 'warning' && String(e.message).includes('did not match its journal')), 'a warning names the damage').to.equal(true)
    expect(reqs[0].rangeStart, 'starts again at the damaged chunk').to.equal(whole - record.chunkSizeBytes)
  })

  it('control: an intact saved hash state is restored, nothing re-hashed or fetched twice', async () => {
    const {events, reqs} = await pullJson()
    expect(events.filter((e) => e.type === 'rehash')).to.deep.equal([])
    expect(reqs.map((e) => e.rangeStart)).to.deep.equal([prefix])
  })

  const unusable: Array<[string, (state: NonNullable<JournalRecordView['sha256State']>) => void]> = [
    ['stateB64 not base64', (s) => (s.stateB64 = '!!not base64!!')],
    ['stateB64 of the wrong length', (s) => (s.stateB64 = Buffer.from(s.stateB64, 'base64').subarray(0, 40).toString('base64'))],
    ['an engine id not available here', (s) => (s.engine = 'sha256-engine-from-the-future-v9')],
    ['a byte count that disagrees with offsetBytes', (s) => (s.offsetBytes -= record.chunkSizeBytes)],
  ]
  for (const [name, spoil] of unusable) {
    it(`saved hash state unusable (${name}): the prefix is re-hashed from disk, not downloaded again`, async () => {
      spoil(record.sha256State!)
      await writeJournal(dir, journal)
      const {events, reqs} = await pullJson()
      const rehash = events.filter((e) => e.type === 'rehash')
      expect(rehash, 'a rehash event').to.have.length(1)
      expect(rehash[0].bytes).to.equal(prefix)
      expect(reqs[0].rangeStart, 'first request').to.equal(prefix)
      expect(reqs.reduce((n, e) => n + e.bytesSent, 0)).to.equal(SIZE - prefix)
    })
  }

  it('saved hash state that loads but is wrong (a hash word flipped): settled by re-hashing from disk, not by a new download', async () => {
    const state = record.sha256State!
    const raw = Buffer.from(state.stateB64, 'base64')
    // The running hash words: first in OpenSSL's SHA256_CTX, after fingerprint+block+length in hash-wasm's.
    raw[state.engine.startsWith('hash-wasm') ? 80 : 0] ^= 0x01
    state.stateB64 = raw.toString('base64')
    await writeJournal(dir, journal)
    const res = await runCli(['pull', MODEL, '--endpoint', emu.url, '--local-dir', dir, '--json'], {env: testEnv(home)})
    expect(res.code, res.stderr).to.equal(0)
    expect((await fs.readFile(path.join(dir, BIG))).equals(emu.contentOf(MODEL, BIG))).to.equal(true)
    const reqs = emu.contentRequests(MODEL, BIG)
    expect(reqs.map((e) => e.rangeStart), 'only the missing tail was fetched').to.deep.equal([prefix])
  })
})
