import {createHash} from 'node:crypto'
import fs from 'node:fs/promises'
import path from 'node:path'

import {expect} from 'chai'
import xxhash from 'xxhash-wasm'

import {HubEmulator} from '../support/emulator.js'
import {makeTmpDir, runCli, testEnv} from '../support/cli.js'
import {journalClaimsProblems} from '../support/journal-check.js'
import {type JournalView, durableChunkIndices, journalPath, pullAndKillWhen, readJournal, writeJournal} from '../support/process.js'
import {statePaths} from '../support/state-paths.js'

const MODEL = 'acme/lost-journal'
const MiB = 1024 * 1024
const DONE = 'a-done.bin'
const PART = 'b-partial.safetensors'

/** The partial name ms-resume generates for a repo path (src/store/layout.ts partialNameFor). */
const partialNameOf = (repoPath: string): string => `${createHash('sha256').update(repoPath).digest('hex').slice(0, 40)}.part`
/** Index of the first chunk a record does not claim. */
const firstMissing = (r: JournalView['files'][string]): number => r.chunks.findIndex((c) => c === null)

type Damage = (doc: JournalView, text: string) => string | Buffer
/** A damage to one field of the partial's record (the rest of the journal stays intact). */
const part = (change: (r: JournalView['files'][string]) => void): Damage => (doc) => {
  const copy = JSON.parse(JSON.stringify(doc)) as JournalView
  change(copy.files[PART])
  return JSON.stringify(copy)
}
/** A damage to the document around the records. */
const whole = (change: (d: JournalView) => void): Damage => (doc) => {
  const copy = JSON.parse(JSON.stringify(doc)) as JournalView
  change(copy)
  return JSON.stringify(copy)
}

/**
 * A journal that cannot be trusted (empty, NUL bytes, invalid JSON, a newer schema, a damaged entry)
 * is kept aside, never deleted, and the state is rebuilt from disk: a verified file at its final path
 * is adopted by hashing (neither deleted nor fetched again), a partial is taken up where its whole
 * chunks end, and the SHA-256 decides.
 */
describe('journal empty / NUL bytes / invalid JSON / newer schema version', function () {
  this.timeout(60_000)
  let emu: HubEmulator
  let home: string
  let fixture: string
  let dir: string

  before(async () => {
    emu = await HubEmulator.start({
      models: [{id: MODEL, files: [{path: DONE, size: MiB + 7}, {path: PART, size: 12 * MiB + 99}]}],
      rateLimitBytesPerSec: 4 * MiB,
    })
    home = await makeTmpDir()
    // The shared starting point: one file complete at its final path, one partial with durable chunks.
    fixture = path.join(home, 'fixture')
    await pullAndKillWhen(['pull', MODEL, '--endpoint', emu.url, '--local-dir', fixture, '--concurrency', '2'], testEnv(home), fixture, (doc) =>
      doc.files[DONE]?.status === 'complete' && durableChunkIndices(doc.files[PART]).length >= 3)
    // The journal as one snapshot, without its log: each damage below is then to the whole journal
    // (damage to the log has its own tests, journal-log.test.ts).
    await writeJournal(fixture, (await readJournal(fixture))!)
    emu.setRateLimit(undefined)
  })
  after(async () => {
    await emu.stop()
    await fs.rm(home, {recursive: true, force: true})
  })
  beforeEach(async () => {
    dir = path.join(home, `out-${Math.random().toString(36).slice(2)}`)
    await fs.cp(fixture, dir, {recursive: true})
    emu.clearLog()
  })

  const damages: Array<[string, Damage]> = [
    ['empty file', () => ''],
    ['NUL bytes', (_doc, text) => Buffer.alloc(text.length)],
    ['invalid JSON (torn)', (_doc, text) => text.slice(0, Math.floor(text.length / 2))],
    ['newer schema version (99)', (doc) => JSON.stringify({...doc, version: 99})],
    ['a damaged entry (chunk table of the wrong length)', (doc) => JSON.stringify({...doc, files: {...doc.files, [PART]: {...doc.files[PART], chunks: [null]}}})],
    // Every field is input: a journal may be copied, restored from a backup, shared or committed.
    ['partialName not of the shape ms-resume makes', part((r) => (r.partialName = 'mine.part'))],
    ['partialName of another file', part((r) => (r.partialName = partialNameOf(DONE)))],
    ['partialName with a directory in it (same file)', part((r) => (r.partialName = `../partial-v1/${r.partialName}`))],
    ['chunkSizeBytes off the grid (a consistent 512 KiB table)', part((r) => {
      r.chunkSizeBytes = 512 * 1024
      r.chunks = Array.from({length: Math.ceil(r.size / r.chunkSizeBytes)}, () => null)
    })],
    ['a negative size with an empty chunk table', part((r) => {
      r.size = -1
      r.chunks = []
    })],
    ['sha256 not 64 hex digits', part((r) => (r.sha256 = 'not-a-digest'))],
    ['a chunk sum that is not 16 hex digits', part((r) => (r.chunks[0] = 'not-a-sum'))],
    ['an unknown status', part((r) => (r.status = 'done'))],
    ['integrityFailures unbounded', part((r) => (r.integrityFailures = 1e12))],
    ['an ETag with a line break (would reach an If-Range header)', part((r) => (r.etag = '"abc"\r\nX-Injected: 1'))],
    ['lastError not an object', part((r) => (r.lastError = 'boom'))],
    ['sha256State past the end of the file', part((r) => (r.sha256State = {...r.sha256State!, offsetBytes: r.size + 1}))],
    ['sha256State at a negative offset', part((r) => (r.sha256State = {...r.sha256State!, offsetBytes: -1024}))],
    ['sha256State at a fractional offset', part((r) => (r.sha256State = {...r.sha256State!, offsetBytes: 1.5}))],
    ['partialChunks not an array', part((r) => (r.partialChunks = {index: 0}))],
    ['partialChunks index past the chunk table', part((r) => (r.partialChunks = [{index: r.chunks.length, bytes: 10, xxh64: '0123456789abcdef'}]))],
    ['partialChunks index not an integer', part((r) => (r.partialChunks = [{index: firstMissing(r) + 0.5, bytes: 10, xxh64: '0123456789abcdef'}]))],
    ['partialChunks on a chunk already durable', part((r) => (r.partialChunks = [{index: 0, bytes: 10, xxh64: '0123456789abcdef'}]))],
    ['partialChunks of 0 bytes', part((r) => (r.partialChunks = [{index: firstMissing(r), bytes: 0, xxh64: '0123456789abcdef'}]))],
    ['partialChunks as long as the whole chunk', part((r) => (r.partialChunks = [{index: firstMissing(r), bytes: r.chunkSizeBytes, xxh64: '0123456789abcdef'}]))],
    ['partialChunks with an uppercase xxh64', part((r) => (r.partialChunks = [{index: firstMissing(r), bytes: 10, xxh64: '0123456789ABCDEF'}]))],
    ['partialChunks with a repeated index', part((r) => (r.partialChunks = [
      {index: firstMissing(r), bytes: 10, xxh64: '0123456789abcdef'},
      {index: firstMissing(r), bytes: 20, xxh64: '0123456789abcdef'},
    ]))],
    ['an entry whose path climbs out (../x)', whole((d) => (d.files['../x.bin'] = {...d.files[DONE], path: '../x.bin'}))],
    ["an entry for ms-resume's own state (.ms-resume/journal-v1.json)", whole((d) => (d.files['.ms-resume/journal-v1.json'] = {...d.files[DONE], path: '.ms-resume/journal-v1.json'}))],
    ['a file table that is an array', whole((d) => (d.files = [] as unknown as JournalView['files']))],
    ['a modelId that is not a model id', whole((d) => (d.modelId = '../../etc'))],
    ['no revision', whole((d) => delete d.revision)],
  ]

  for (const [name, damage] of damages) {
    it(`${name}: kept aside, files on disk adopted, the partial resumed, exit 0 byte-exact`, async () => {
      const text = await fs.readFile(journalPath(dir), 'utf8')
      const bad = damage(JSON.parse(text) as JournalView, text)
      await fs.writeFile(journalPath(dir), bad)
      const doneBefore = await fs.stat(path.join(dir, DONE))
      const partial = (JSON.parse(text) as JournalView).files[PART]
      const partialBytes = (await fs.stat(statePaths(dir).partial(partial.partialName!))).size
      const wholeChunks = Math.floor(partialBytes / partial.chunkSizeBytes) * partial.chunkSizeBytes

      const res = await runCli(['pull', MODEL, '--endpoint', emu.url, '--local-dir', dir, '--json'], {env: testEnv(home)})
      expect(res.code, res.stderr).to.equal(0)
      const events = res.stdout.trim().split('\n').map((l) => JSON.parse(l) as {type: string; [k: string]: unknown})
      const recovered = events.filter((e) => e.type === 'recovered-journal')
      expect(recovered, 'a recovered-journal event').to.have.length(1)

      // The bad journal is kept, byte for byte, next to the new one.
      const aside = (await fs.readdir(statePaths(dir).dir)).filter((n) => n.startsWith('journal-v1.json.unreadable-'))
      expect(aside).to.have.length(1)
      expect(recovered[0].movedTo).to.equal(path.join(statePaths(dir).dir, aside[0]))
      expect((await fs.readFile(path.join(statePaths(dir).dir, aside[0]))).equals(Buffer.from(bad))).to.equal(true)

      // The verified file: same inode, same bytes, not fetched again.
      const doneAfter = await fs.stat(path.join(dir, DONE))
      expect(doneAfter.ino, `${DONE} was not replaced`).to.equal(doneBefore.ino)
      expect(emu.contentRequests(MODEL, DONE), `${DONE} fetched again`).to.have.length(0)
      expect((await fs.readFile(path.join(dir, DONE))).equals(emu.contentOf(MODEL, DONE))).to.equal(true)

      // The partial: re-checked and taken up at its last whole chunk, not from 0.
      const reqs = emu.contentRequests(MODEL, PART)
      expect(wholeChunks, 'the fixture had whole chunks').to.be.greaterThan(0)
      expect(reqs[0]?.rangeStart, 'first request for the partial').to.equal(wholeChunks)
      expect(events.some((e) => e.type === 'integrity-retry'), 'no hash mismatch').to.equal(false)
      expect((await fs.readFile(path.join(dir, PART))).equals(emu.contentOf(MODEL, PART))).to.equal(true)

      const journal = await readJournal(dir)
      expect(journal?.version).to.equal(1)
      expect(Object.values(journal!.files).map((r) => r.status)).to.deep.equal(['complete', 'complete'])
      expect((await journalClaimsProblems(dir)).problems).to.deep.equal([])
    })
  }

  const pullJson = async () => {
    const res = await runCli(['pull', MODEL, '--endpoint', emu.url, '--local-dir', dir, '--json'], {env: testEnv(home)})
    const events = res.stdout.trim().split('\n').filter(Boolean).map((l) => JSON.parse(l) as {type: string; [k: string]: unknown})
    return {res, events}
  }

  it('a partialName of "../../../victim.txt" is never opened: the file outside keeps its bytes and mode, the journal is set aside', async () => {
    // The partial folder is <dir>/.ms-resume/partial-v1: three levels up is the parent of <dir>.
    const victim = path.join(path.dirname(dir), 'victim.txt')
    await fs.writeFile(victim, 'the victim\'s own bytes\n', {mode: 0o600})
    const before = await fs.stat(victim)
    try {
      const doc = (await readJournal(dir))!
      doc.files[PART].partialName = '../../../victim.txt'
      await fs.writeFile(journalPath(dir), JSON.stringify(doc))

      const {res, events} = await pullJson()
      expect(res.code, res.stderr).to.equal(0)
      expect(events.filter((e) => e.type === 'recovered-journal'), 'the journal was set aside').to.have.length(1)
      expect(await fs.readFile(victim, 'utf8')).to.equal('the victim\'s own bytes\n')
      const after = await fs.stat(victim)
      expect(after.mode & 0o777, 'not chmodded').to.equal(0o600)
      expect(after.ino, 'not moved into the model').to.equal(before.ino)
      expect((await fs.readFile(path.join(dir, PART))).equals(emu.contentOf(MODEL, PART))).to.equal(true)
      expect((await fs.stat(path.join(dir, PART))).ino, 'the model file is not the victim').not.to.equal(before.ino)
    } finally {
      await fs.rm(victim, {force: true})
    }
  })

  it('a valid partialChunks entry (and the field itself) is accepted: no set-aside, nothing durable fetched again', async () => {
    const doc = (await readJournal(dir))!
    const r = doc.files[PART]
    const k = firstMissing(r)
    // Make the partial hold the true first 100 bytes of chunk k, as a byte-granular checkpoint would.
    const bytes = emu.contentOf(MODEL, PART).subarray(k * r.chunkSizeBytes, k * r.chunkSizeBytes + 100)
    const fh = await fs.open(statePaths(dir).partial(r.partialName!), 'r+')
    await fh.write(bytes, 0, bytes.length, k * r.chunkSizeBytes)
    await fh.close()
    const {h64Raw} = await xxhash()
    r.partialChunks = [{index: k, bytes: 100, xxh64: h64Raw(bytes).toString(16).padStart(16, '0')}]
    await fs.writeFile(journalPath(dir), JSON.stringify(doc))

    const {res, events} = await pullJson()
    expect(res.code, res.stderr).to.equal(0)
    expect(events.filter((e) => e.type === 'recovered-journal'), 'the journal was trusted').to.have.length(0)
    expect(emu.contentRequests(MODEL, PART)[0]?.rangeStart).to.be.at.least(k * r.chunkSizeBytes)
    expect(emu.contentRequests(MODEL, DONE)).to.have.length(0)
    expect((await fs.readFile(path.join(dir, PART))).equals(emu.contentOf(MODEL, PART))).to.equal(true)
  })

  it('a saved hash state past the durable chunks (left when chunks are unclaimed) is dropped, not trusted, and the journal kept', async () => {
    const doc = (await readJournal(dir))!
    const r = doc.files[PART]
    expect(r.sha256State, 'the fixture has a saved hash state').to.not.equal(undefined)
    const k = firstMissing(r)
    // Unclaim the last durable chunk but keep the state that covers it.
    r.chunks[k - 1] = null
    r.sha256State = {...r.sha256State!, offsetBytes: k * r.chunkSizeBytes}
    await fs.writeFile(journalPath(dir), JSON.stringify(doc))

    const {res, events} = await pullJson()
    expect(res.code, res.stderr).to.equal(0)
    expect(events.filter((e) => e.type === 'recovered-journal')).to.have.length(0)
    expect(events.some((e) => e.type === 'rehash' && e.path === PART), 'the prefix is re-hashed from disk').to.equal(true)
    expect(emu.contentRequests(MODEL, PART)[0]?.rangeStart).to.equal((k - 1) * r.chunkSizeBytes)
    expect((await fs.readFile(path.join(dir, PART))).equals(emu.contentOf(MODEL, PART))).to.equal(true)
  })
})
