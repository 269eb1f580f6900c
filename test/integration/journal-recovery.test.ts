import fs from 'node:fs/promises'
import path from 'node:path'

import {expect} from 'chai'

import {HubEmulator} from '../support/emulator.js'
import {makeTmpDir, runCli, testEnv} from '../support/cli.js'
import {journalClaimsProblems} from '../support/journal-check.js'
import {type JournalView, durableChunkIndices, journalPath, pullAndKillWhen, readJournal} from '../support/process.js'

const MODEL = 'acme/lost-journal'
const MiB = 1024 * 1024
const DONE = 'a-done.bin'
const PART = 'b-partial.safetensors'

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

  const damages: Array<[string, (doc: JournalView, text: string) => string | Buffer]> = [
    ['empty file', () => ''],
    ['NUL bytes', (_doc, text) => Buffer.alloc(text.length)],
    ['invalid JSON (torn)', (_doc, text) => text.slice(0, Math.floor(text.length / 2))],
    ['newer schema version (99)', (doc) => JSON.stringify({...doc, version: 99})],
    ['a damaged entry (chunk table of the wrong length)', (doc) => JSON.stringify({...doc, files: {...doc.files, [PART]: {...doc.files[PART], chunks: [null]}}})],
  ]

  for (const [name, damage] of damages) {
    it(`${name}: kept aside, files on disk adopted, the partial resumed, exit 0 byte-exact`, async () => {
      const text = await fs.readFile(journalPath(dir), 'utf8')
      const bad = damage(JSON.parse(text) as JournalView, text)
      await fs.writeFile(journalPath(dir), bad)
      const doneBefore = await fs.stat(path.join(dir, DONE))
      const partial = (JSON.parse(text) as JournalView).files[PART]
      const partialBytes = (await fs.stat(path.join(dir, '.ms-resume', 'partial-v1', partial.partialName!))).size
      const wholeChunks = Math.floor(partialBytes / partial.chunkSizeBytes) * partial.chunkSizeBytes

      const res = await runCli(['pull', MODEL, '--endpoint', emu.url, '--local-dir', dir, '--json'], {env: testEnv(home)})
      expect(res.code, res.stderr).to.equal(0)
      const events = res.stdout.trim().split('\n').map((l) => JSON.parse(l) as {type: string; [k: string]: unknown})
      const recovered = events.filter((e) => e.type === 'recovered-journal')
      expect(recovered, 'a recovered-journal event').to.have.length(1)

      // The bad journal is kept, byte for byte, next to the new one.
      const aside = (await fs.readdir(path.join(dir, '.ms-resume'))).filter((n) => n.startsWith('journal-v1.json.unreadable-'))
      expect(aside).to.have.length(1)
      expect(recovered[0].movedTo).to.equal(path.join(dir, '.ms-resume', aside[0]))
      expect((await fs.readFile(path.join(dir, '.ms-resume', aside[0]))).equals(Buffer.from(bad))).to.equal(true)

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
})
