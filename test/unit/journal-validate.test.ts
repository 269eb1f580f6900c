import {expect} from 'chai'

import {chunkSizeFor} from '../../src/integrity/chunks.js'
import {type FileRecord, type JournalDoc, emptyJournal} from '../../src/journal/schema.js'
import {validateJournal} from '../../src/journal/validate.js'
import {partialNameFor} from '../../src/store/layout.js'

const MiB = 1024 * 1024
const SUM = '0123456789abcdef'

function record(path: string, size: number, durable: number): FileRecord {
  const chunkSizeBytes = chunkSizeFor(size)
  return {
    path, size, sha256: 'a'.repeat(64), commit: 'c'.repeat(40), status: 'partial', chunkSizeBytes,
    chunks: Array.from({length: Math.ceil(size / chunkSizeBytes)}, (_, i) => (i < durable ? SUM : null)),
    partialName: partialNameFor(path), integrityFailures: 0,
  }
}

function doc(...records: FileRecord[]): JournalDoc {
  const d = emptyJournal({hub: 'modelscope', endpoint: 'http://127.0.0.1:1', modelId: 'acme/m', revision: 'master'})
  for (const r of records) d.files[r.path] = r
  // As read from disk: plain JSON, prototype and all.
  return JSON.parse(JSON.stringify(d)) as JournalDoc
}

describe('journal validation (state files are input)', () => {
  it('keeps a hash state anywhere up to the durable prefix plus a partial chunk at its end, unaligned included', () => {
    const r = record('w.bin', 10 * MiB, 3)
    r.partialChunks = [{index: 3, bytes: 1000, xxh64: SUM}]
    for (const offsetBytes of [0, 3 * MiB - 1, 3 * MiB, 3 * MiB + 1000]) {
      r.sha256State = {engine: 'hash-wasm-4.13.0', offsetBytes, stateB64: 'AAAA'}
      const got = validateJournal(doc(r))
      expect(got.problem, String(offsetBytes)).to.equal(undefined)
      expect(got.doc!.files['w.bin'].sha256State?.offsetBytes, String(offsetBytes)).to.equal(offsetBytes)
    }
  })

  it('drops (never trusts) a hash state past what the record vouches for, keeping the journal', () => {
    const r = record('w.bin', 10 * MiB, 3)
    r.partialChunks = [{index: 3, bytes: 1000, xxh64: SUM}]
    r.sha256State = {engine: 'hash-wasm-4.13.0', offsetBytes: 3 * MiB + 1001, stateB64: 'AAAA'}
    const got = validateJournal(doc(r))
    expect(got.problem).to.equal(undefined)
    expect(got.doc!.files['w.bin'].sha256State).to.equal(undefined)
    // A partial chunk that does not follow the durable prefix does not extend it.
    r.partialChunks = [{index: 5, bytes: 1000, xxh64: SUM}]
    r.sha256State = {engine: 'hash-wasm-4.13.0', offsetBytes: 3 * MiB + 1, stateB64: 'AAAA'}
    expect(validateJournal(doc(r)).doc!.files['w.bin'].sha256State).to.equal(undefined)
  })

  it('looks records up by own key only: constructor, toString and __proto__ are ordinary paths', () => {
    const names = ['constructor', 'toString', '__proto__', 'hasOwnProperty']
    const text = JSON.stringify(doc(record('plain.bin', 10, 0)))
      .replace('"files":{', `"files":{${names.map((n) => `${JSON.stringify(n)}:${JSON.stringify(record(n, 10, 0))},`).join('')}`)
    const got = validateJournal(JSON.parse(text))
    expect(got.problem).to.equal(undefined)
    const files = got.doc!.files
    expect(Object.getPrototypeOf(files)).to.equal(null)
    for (const n of names) expect(Object.hasOwn(files, n) && files[n].path, n).to.equal(n)
    expect(Object.keys(files).sort()).to.deep.equal([...names, 'plain.bin'].sort())
    // A record for `toString` must not be mistaken for a function, nor an absent one found.
    expect(validateJournal(doc(record('plain.bin', 10, 0))).doc!.files.toString).to.equal(undefined)
  })

  it('a size-only record (sha256 "") is valid; once complete it needs the hash it was placed with, nothing else may carry one', () => {
    const r = record('s.bin', 10, 1)
    r.sha256 = ''
    expect(validateJournal(doc(r)).problem).to.equal(undefined)
    r.status = 'complete'
    expect(validateJournal(doc(r)).problem).to.match(/complete size-only file without observedSha256/)
    r.observedSha256 = 'd'.repeat(64)
    expect(validateJournal(doc(r)).problem).to.equal(undefined)
    r.observedSha256 = 'nope'
    expect(validateJournal(doc(r)).problem).to.match(/bad observedSha256/)
    const listed = record('l.bin', 10, 1)
    listed.observedSha256 = 'd'.repeat(64)
    expect(validateJournal(doc(listed)).problem, 'a listed hash and an observed one').to.match(/bad observedSha256/)
  })

  it('repoKind: absent (a model) or "dataset"; anything else sets the journal aside', () => {
    const d = emptyJournal({hub: 'modelscope', endpoint: 'http://127.0.0.1:1', modelId: 'acme/m', repoKind: 'dataset', revision: 'master'})
    expect(d.repoKind).to.equal('dataset')
    expect(validateJournal(JSON.parse(JSON.stringify(d))).problem).to.equal(undefined)
    expect(emptyJournal({hub: 'modelscope', endpoint: 'http://127.0.0.1:1', modelId: 'acme/m', repoKind: 'model', revision: 'master'})).not.to.have.property('repoKind')
    expect(validateJournal({...JSON.parse(JSON.stringify(d)), repoKind: 'space'}).problem).to.match(/bad repoKind/)
  })

  it('a chunk sum is null or 16 lowercase hex digits, wherever it is in the table', () => {
    const bad: unknown[] = ['0123456789ABCDEF', '0123456789abcde', '0123456789abcdef0', '0123456789abcdeg', 81985529216486895, ' 123456789abcdef', '', {}, ['0123456789abcdef']]
    for (const sum of bad) {
      for (const at of [0, 2, 9]) {
        const r = record('c.bin', 10 * MiB, 10)
        ;(r.chunks as unknown[])[at] = sum
        expect(validateJournal(doc(r)).problem, `${JSON.stringify(sum)} at ${at}`).to.match(/bad chunk sum/)
      }
    }
    // Two sums that join into 32 valid digits are still two bad sums.
    const r = record('c.bin', 10 * MiB, 10)
    ;(r.chunks as unknown[])[0] = '0123456789abcdef01234567'
    ;(r.chunks as unknown[])[1] = '89abcdef'
    expect(validateJournal(doc(r)).problem).to.match(/bad chunk sum/)
    const good = record('c.bin', 10 * MiB, 4)
    expect(validateJournal(doc(good)).problem).to.equal(undefined)
  })

  it('a file of 0 bytes has no chunks and is valid', () => {
    expect(validateJournal(doc(record('empty', 0, 0))).problem).to.equal(undefined)
  })
})
