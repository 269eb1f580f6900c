import fs from 'node:fs/promises'
import os from 'node:os'
import path from 'node:path'

import {expect} from 'chai'

import {chunkSizeFor} from '../../src/integrity/chunks.js'
import {Low} from 'lowdb'

import {SnapshotAdapter, UnreadableJournal, journalFiles} from '../../src/journal/journal-files.js'
import {encodeBatch, logHeader, parseLog} from '../../src/journal/journal-log.js'
import {Journal} from '../../src/journal/journal.js'
import {type FileRecord, type JournalDoc, emptyJournal} from '../../src/journal/schema.js'
import {partialNameFor} from '../../src/store/layout.js'
import {readJournalOnDisk} from '../support/journal-read.js'
import {statePaths} from '../support/state-paths.js'

const SUM = '0123456789abcdef'
const INIT = {hub: 'modelscope', endpoint: 'http://127.0.0.1:1', modelId: 'acme/m', revision: 'master'}

function record(p: string, size = 5000, status: FileRecord['status'] = 'complete'): FileRecord {
  const chunkSizeBytes = chunkSizeFor(size)
  return {
    path: p, size, sha256: 'a'.repeat(64), commit: 'c'.repeat(40), status, chunkSizeBytes,
    chunks: Array.from({length: Math.ceil(size / chunkSizeBytes)}, () => (status === 'complete' ? SUM : null)),
    integrityFailures: 0,
  }
}

const line = (r: FileRecord) => JSON.stringify({file: r})
const ID = '0123456789abcdef'

/** A log with a header and one batch per element of `batches`. */
function log(...batches: FileRecord[][]): Buffer {
  return Buffer.concat([Buffer.from(logHeader(ID)), ...batches.map((b) => encodeBatch(b.map(line)))])
}

describe('journal log: format (torn tails, damage, validation of the frame)', () => {
  it('gives back the committed batches in order, every byte accounted for', () => {
    const bytes = log([record('a')], [record('b'), record('c')], [record('a', 7000)])
    const got = parseLog(bytes)
    expect(got.problem).to.equal(undefined)
    expect(got.logId).to.equal(ID)
    expect(got.entries.map((e) => (e as {file: FileRecord}).file.path)).to.deep.equal(['a', 'b', 'c', 'a'])
    expect((got.entries[3] as {file: FileRecord}).file.size).to.equal(7000)
    expect(got.validBytes).to.equal(bytes.length)
    expect(got.tornBytes).to.equal(0)
  })

  it('a last batch cut at any byte is a torn tail: ignored, the batches before it stand', () => {
    const good = log([record('a')], [record('b')])
    const last = encodeBatch([line(record('c')), line(record('d'))])
    for (let cut = 0; cut < last.length; cut++) {
      const got = parseLog(Buffer.concat([good, last.subarray(0, cut)]))
      expect(got.problem, `cut at ${cut}`).to.equal(undefined)
      expect(got.entries.map((e) => (e as {file: FileRecord}).file.path), `cut at ${cut}`).to.deep.equal(['a', 'b'])
      expect(got.validBytes).to.equal(good.length)
      expect(got.tornBytes).to.equal(cut)
    }
  })

  it('a last batch with zeroed or garbage blocks (a power loss mid-append) is a torn tail too', () => {
    const good = log([record('a')])
    const last = encodeBatch(Array.from({length: 40}, (_, i) => line(record(`f${i}`))))
    for (const [from, to] of [[0, 512], [100, 4096], [last.length - 600, last.length - 10], [1000, last.length]]) {
      const torn = Buffer.from(last)
      torn.fill(0, from, to)
      const got = parseLog(Buffer.concat([good, torn]))
      expect(got.problem, `${from}-${to}`).to.equal(undefined)
      expect(got.entries).to.have.length(1)
      const noise = Buffer.from(last)
      for (let i = from; i < to; i++) noise[i] = (i * 31) & 0xff
      expect(parseLog(Buffer.concat([good, noise])).entries, `noise ${from}-${to}`).to.have.length(1)
    }
  })

  it('entries without their commit line are not committed', () => {
    const bytes = Buffer.concat([log([record('a')]), Buffer.from(`${line(record('b'))}\n${line(record('c'))}\n`)])
    const got = parseLog(bytes)
    expect(got.entries).to.have.length(1)
    expect(got.tornBytes).to.be.greaterThan(0)
  })

  it('damage followed by a committed batch is not a torn tail: the log cannot be trusted', () => {
    const first = encodeBatch([line(record('a'))])
    const bad = Buffer.from(first)
    bad[10] ^= 0x01
    expect(parseLog(Buffer.concat([Buffer.from(logHeader(ID)), bad, encodeBatch([line(record('b'))])])).problem).to.match(/damaged/)
    // A batch whose commit counts fewer entries than it has, then a good batch.
    const lying = Buffer.from(`${line(record('x'))}\n${encodeBatch([line(record('y'))]).toString()}`)
    expect(parseLog(Buffer.concat([Buffer.from(logHeader(ID)), lying, encodeBatch([line(record('z'))])])).problem).to.match(/damaged/)
  })

  it('refuses what is not our log: another kind, a newer version, no id', () => {
    expect(parseLog(Buffer.from('{"kind":"something-else","version":1,"logId":"0123456789abcdef"}\n')).problem).to.match(/not an ms-resume journal log/)
    expect(parseLog(Buffer.from('{"kind":"ms-resume/journal-log","version":2,"logId":"0123456789abcdef"}\n')).problem).to.match(/newer/)
    expect(parseLog(Buffer.from('{"kind":"ms-resume/journal-log","version":1,"logId":"../x"}\n')).problem).to.match(/id/)
    expect(parseLog(Buffer.from('not json at all\n')).problem).to.match(/not an ms-resume journal log/)
    // No complete header line: nothing, and no problem (a log whose creation was cut short).
    expect(parseLog(Buffer.from('{"kind":"ms-resume/jour')).problem).to.equal(undefined)
  })
})

describe('journal: snapshot and append-only log', () => {
  let stateDir: string
  let modelDir: string
  beforeEach(async () => {
    modelDir = await fs.mkdtemp(path.join(os.tmpdir(), 'msr-journal-'))
    stateDir = statePaths(modelDir).dir
    await fs.mkdir(stateDir)
  })
  afterEach(async () => {
    await fs.rm(modelDir, {recursive: true, force: true})
  })

  const files = () => journalFiles(stateDir)
  const size = async (f: string) => (await fs.stat(f).catch(() => undefined))?.size
  const open = async (opts: {beforeWrite?: () => Promise<void>} = {}) => Journal.open(stateDir, INIT, opts)
  /** A journal whose snapshot holds 50 records: a few more stay in the log, even across close(). */
  const seeded = async () => {
    const {journal} = await open()
    for (let i = 0; i < 50; i++) journal.set(record(`seed${i}`))
    await journal.flush()
    return journal
  }

  it('writes nothing when nothing changed (a no-op pull leaves the journal as it was)', async () => {
    const {journal} = await open()
    await journal.flush()
    await journal.close()
    expect(await fs.readdir(stateDir)).to.deep.equal([])
    // With a journal there: still nothing written, byte for byte.
    const second = (await open()).journal
    second.set(record('a'))
    await second.close()
    const before = await fs.readFile(files().snapshot)
    const logBefore = await fs.readFile(files().log)
    const third = (await open()).journal
    third.get('a')
    await third.close()
    expect((await fs.readFile(files().snapshot)).equals(before)).to.equal(true)
    expect((await fs.readFile(files().log)).equals(logBefore)).to.equal(true)
  })

  it('appends each batch of changed records; the snapshot is not rewritten; a reopen sees every batch', async () => {
    const {journal} = await open()
    journal.set(record('a'))
    await journal.flush()
    const snapshot = await fs.readFile(files().snapshot)
    const logAfterFirst = (await size(files().log))!
    for (let i = 0; i < 5; i++) {
      journal.set(record(`b${i}`))
      await journal.flush()
    }
    expect((await fs.readFile(files().snapshot)).equals(snapshot), 'snapshot untouched').to.equal(true)
    expect((await size(files().log))!).to.be.greaterThan(logAfterFirst)
    const onDisk = await readJournalOnDisk<{files: Record<string, FileRecord>}>(modelDir)
    expect(onDisk!.log.batches).to.equal(5)
    expect(Object.keys(onDisk!.doc.files).sort()).to.deep.equal(['a', 'b0', 'b1', 'b2', 'b3', 'b4'])
    const again = (await Journal.peek(stateDir)).doc!
    expect(Object.keys(again.files).sort()).to.deep.equal(['a', 'b0', 'b1', 'b2', 'b3', 'b4'])
    await journal.close()
  })

  it('writes only what changed: one batch holds the set, removed and tracked records, not the others', async () => {
    const {journal} = await open()
    for (let i = 0; i < 50; i++) journal.set(record(`r${i}`))
    await journal.flush()
    const logBefore = (await size(files().log))!
    journal.set(record('new'))
    journal.remove('r1')
    journal.track('r2')
    journal.get('r2')!.checkedAt = 'now'
    await journal.flush()
    const appended = (await fs.readFile(files().log)).subarray(logBefore).toString().trim().split('\n')
    expect(appended.map((l) => Object.keys(JSON.parse(l))[0])).to.deep.equal(['doc', 'file', 'drop', 'file', 'commit'])
    // A tracked record is written with every batch, until untracked.
    journal.get('r2')!.checkedAt = 'later'
    await journal.flush()
    journal.untrack('r2')
    await journal.flush()
    await journal.flush()
    const doc = (await Journal.peek(stateDir)).doc!
    expect(doc.files.r2.checkedAt).to.equal('later')
    expect(doc.files.r1).to.equal(undefined)
    expect(doc.files.new.path).to.equal('new')
    expect((await readJournalOnDisk(modelDir))!.log.batches).to.equal(3)
    await journal.close()
  })

  it('compacts once the log outgrows the snapshot (and 256 KiB): a new snapshot and an empty log under a new id', async () => {
    const {journal} = await open()
    journal.set(record('seed'))
    await journal.flush()
    const firstId = JSON.parse(await fs.readFile(files().snapshot, 'utf8')).logId
    // About 400 bytes a record: 3,000 single-record batches pass 256 KiB.
    let compacted = false
    let logBytesBefore = 0
    for (let i = 0; i < 3000 && !compacted; i++) {
      logBytesBefore = (await fs.stat(files().log)).size
      journal.set(record(`f${i}`))
      await journal.flush()
      compacted = JSON.parse(await fs.readFile(files().snapshot, 'utf8')).logId !== firstId
    }
    expect(compacted, 'compacted').to.equal(true)
    // The batch that compacted took the log past 256 KiB (a batch is well under 2 KiB): not before.
    expect(logBytesBefore).to.be.at.most(256 * 1024).and.greaterThan(254 * 1024)
    const snapshot = JSON.parse(await fs.readFile(files().snapshot, 'utf8'))
    expect(Object.keys(snapshot.files).length).to.be.greaterThan(500)
    const logText = await fs.readFile(files().log, 'utf8')
    expect(logText).to.equal(logHeader(snapshot.logId))
    const peeked = (await Journal.peek(stateDir)).doc!
    expect(Object.keys(peeked.files).sort()).to.deep.equal(Object.keys(journal.doc.files).sort())
    await journal.close()
  })

  it('the snapshot it writes a piece at a time is exactly JSON of the document', async () => {
    const {journal} = await open()
    for (let i = 0; i < 4500; i++) journal.set(record(`d${i % 7}/f${i}`, 1000 + i))
    journal.set(record('__proto__'))
    journal.set(record('constructor'))
    await journal.flush()
    const text = await fs.readFile(files().snapshot, 'utf8')
    expect(JSON.parse(text)).to.deep.equal(JSON.parse(JSON.stringify({...journal.doc, files: {...journal.doc.files}})))
    expect(Object.keys(JSON.parse(text).files)).to.have.length(4502)
    await journal.close()
  })

  it('lowdb reads through the snapshot adapter what the journal wrote (snapshot and log), and its write() is a durable snapshot', async () => {
    const journal = await seeded()
    journal.set(record('late', 9000))
    await journal.flush()
    await journal.close()
    const db = new Low<JournalDoc>(new SnapshotAdapter(stateDir), emptyJournal(INIT))
    await db.read()
    expect(Object.keys(db.data.files)).to.have.length(51)
    expect(db.data.files.late?.size).to.equal(9000)
    db.data.files.other = record('other')
    await db.write()
    expect(Object.keys(JSON.parse(await fs.readFile(files().snapshot, 'utf8')).files)).to.include('other')
    // Nothing of a write is left beside it (the temp file was renamed into place).
    expect((await fs.readdir(stateDir)).filter((n) => n.endsWith('.tmp'))).to.deep.equal([])
    // A snapshot that fails validation is refused, never handed to lowdb as data.
    await fs.writeFile(files().snapshot, JSON.stringify({...db.data, files: {'../x': record('../x')}}))
    const bad = new Low<JournalDoc>(new SnapshotAdapter(stateDir), emptyJournal(INIT))
    let thrown: unknown
    await bad.read().catch((error: unknown) => (thrown = error))
    expect(thrown).to.be.instanceOf(UnreadableJournal)
    expect(bad.data.files).to.deep.equal({})
  })

  it('close() compacts a log larger than half the snapshot, so a model at rest is one snapshot', async () => {
    const {journal} = await open()
    journal.set(record('a'))
    await journal.flush()
    for (let i = 0; i < 20; i++) journal.set(record(`b${i}`))
    await journal.close()
    const snapshot = JSON.parse(await fs.readFile(files().snapshot, 'utf8'))
    expect(Object.keys(snapshot.files)).to.have.length(21)
    expect(await fs.readFile(files().log, 'utf8')).to.equal(logHeader(snapshot.logId))
  })

  it('a torn tail is ignored on open, and the next write compacts instead of appending after it', async () => {
    const first = await seeded()
    first.set(record('a'))
    await first.flush()
    first.set(record('b'))
    await first.close()
    await fs.appendFile(files().log, encodeBatch([line(record('torn'))]).subarray(0, 30))
    const {journal, recovered} = await open()
    expect(recovered).to.equal(undefined)
    expect((await readJournalOnDisk(modelDir))!.log.batches, 'a and b are in the log').to.equal(2)
    expect(Object.keys(journal.doc.files).filter((p) => !p.startsWith('seed')).sort()).to.deep.equal(['a', 'b'])
    journal.set(record('c'))
    await journal.flush()
    const onDisk = await readJournalOnDisk<{files: Record<string, FileRecord>}>(modelDir)
    expect(onDisk!.log.tornBytes).to.equal(0)
    expect(Object.keys(onDisk!.doc.files).filter((p) => !p.startsWith('seed')).sort()).to.deep.equal(['a', 'b', 'c'])
    await journal.close()
  })

  it('an entry the snapshot would not accept either (a path out of the model, a foreign partialName) sets the journal aside', async () => {
    for (const bad of [{...record('x'), path: '../x'}, {...record('y', 5000, 'partial'), partialName: '../../victim.txt'}, {...record('z'), chunkSizeBytes: 7}]) {
      await fs.rm(stateDir, {recursive: true, force: true})
      await fs.mkdir(stateDir)
      const first = (await open()).journal
      first.set(record('a'))
      await first.close()
      await fs.appendFile(files().log, encodeBatch([JSON.stringify({file: bad})]))
      expect((await Journal.peek(stateDir)).problem, bad.path).to.match(/log entry/)
      const {journal, recovered} = await open()
      expect(recovered?.reason, bad.path).to.match(/log entry/)
      expect(journal.get('a'), 'nothing of it trusted').to.equal(undefined)
      const names = await fs.readdir(stateDir)
      expect(names.some((n) => /^journal-v1\.json\.unreadable-\d+$/.test(n)), 'snapshot kept aside').to.equal(true)
      expect(names.some((n) => /^journal-v1\.log\.unreadable-\d+$/.test(n)), 'log kept aside').to.equal(true)
      await journal.close()
    }
  })

  it('a log of another snapshot (a compaction killed before it replaced the log, or an older writer) is ignored', async () => {
    const first = (await open()).journal
    first.set(record('a'))
    await first.flush()
    await first.close()
    const snapshot = JSON.parse(await fs.readFile(files().snapshot, 'utf8'))
    await fs.writeFile(files().log, Buffer.concat([Buffer.from(logHeader('fedcba9876543210')), encodeBatch([line(record('stale'))])]))
    expect(Object.keys((await Journal.peek(stateDir)).doc!.files)).to.deep.equal(['a'])
    // A snapshot without a log id (written by an older ms-resume): its log is not read at all.
    delete snapshot.logId
    await fs.writeFile(files().snapshot, JSON.stringify(snapshot))
    await fs.writeFile(files().log, Buffer.concat([Buffer.from(logHeader(ID)), encodeBatch([line(record('stale'))])]))
    const {journal} = await open()
    expect(Object.keys(journal.doc.files)).to.deep.equal(['a'])
    journal.set(record('b'))
    await journal.flush()
    expect(Object.keys((await Journal.peek(stateDir)).doc!.files).sort()).to.deep.equal(['a', 'b'])
    await journal.close()
  })

  it('a write stopped by beforeWrite (a lost lock) leaves the journal as it was', async () => {
    let allowed = true
    const {journal} = await open({beforeWrite: async () => {
      if (!allowed) throw new Error('lock lost')
    }})
    journal.set(record('a'))
    await journal.flush()
    const before = Buffer.concat([await fs.readFile(files().snapshot), await fs.readFile(files().log)])
    allowed = false
    journal.set(record('b'))
    let failed: unknown
    await journal.flush().catch((error: unknown) => (failed = error))
    expect(String(failed)).to.match(/lock lost/)
    expect(Buffer.concat([await fs.readFile(files().snapshot), await fs.readFile(files().log)]).equals(before)).to.equal(true)
    await journal.close().catch(() => {})
  })

  it('records with prototype names live in the log as in the snapshot', async () => {
    const first = await seeded()
    for (const p of ['__proto__', 'constructor', 'toString']) first.set(record(p))
    await first.close()
    expect((await readJournalOnDisk(modelDir))!.log.batches, 'written to the log').to.equal(1)
    const {journal} = await open()
    for (const p of ['__proto__', 'constructor', 'toString']) expect(journal.get(p)?.path, p).to.equal(p)
    expect(journal.get('hasOwnProperty')).to.equal(undefined)
    expect(Object.getPrototypeOf(journal.doc.files)).to.equal(null)
    await journal.close()
  })

  it('a partial record written with every checkpoint keeps a valid partialName through the log', async () => {
    const {journal} = await open()
    const r = {...record('w.bin', 3 * 1024 * 1024, 'partial'), partialName: partialNameFor('w.bin')}
    journal.set(r)
    journal.track('w.bin')
    for (let i = 0; i < 3; i++) {
      r.chunks[i] = SUM
      await journal.flush()
    }
    expect((await Journal.peek(stateDir)).doc!.files['w.bin'].chunks).to.deep.equal([SUM, SUM, SUM])
    await journal.close()
  })
})
