import {expect} from 'chai'
import {execFileSync, spawnSync} from 'node:child_process'
import {randomBytes} from 'node:crypto'
import fs from 'node:fs/promises'
import os from 'node:os'
import path from 'node:path'

import {mulberry32} from '../support/process.js'
import {
  MAX_INDEX_BYTES,
  decodePickle,
  encodePickleDict,
  encodePickleIndex,
  formatModelVersion,
  maskModelName,
  parseModelVersion,
  readModelscopeIndex,
  writeModelscopeIndex,
  type PickleDict,
  type PythonIndexEntry,
} from '../../src/hub/modelscope/python-index.js'
import {skipBecause} from '../support/process.js'

const rev = (i: number): string => i.toString(16).padStart(40, '0')

/** The `.msc` cases Python must round-trip: 0, 1 and 300 entries, non-ASCII, spaces, long paths. */
const CASES: Record<string, PythonIndexEntry[]> = {
  empty: [],
  one: [{Path: 'config.json', Revision: rev(1)}],
  mixed: [
    {Path: 'config.json', Revision: rev(1)},
    {Path: 'données/模型 权重 🚀.safetensors', Revision: rev(2)},
    {Path: 'with space/and  two.bin', Revision: rev(3)},
    {Path: `deep/${'x'.repeat(300)}`, Revision: rev(4)},
    {Path: 'a', Revision: ''},
  ],
  three_hundred: Array.from({length: 300}, (_, i) => ({
    Path: `shards/${'p'.repeat(300)}-${String(i).padStart(5, '0')} é.safetensors`,
    Revision: rev(i),
  })),
}

const hasPython = spawnSync('python3', ['-c', 'import pickle'], {stdio: 'ignore'}).status === 0

function py(code: string, ...args: string[]): Buffer {
  return execFileSync('python3', ['-c', code, ...args], {maxBuffer: 1 << 28})
}

/** The brief's loader: what the official client's `pickle.load` sees, as JSON. */
function pythonLoad(file: string): unknown {
  return JSON.parse(py('import pickle,sys,json; print(json.dumps(pickle.load(open(sys.argv[1],"rb"))))', file).toString('utf8'))
}

async function tmpDir(): Promise<string> {
  return fs.mkdtemp(path.join(os.tmpdir(), 'msr-pyindex-'))
}

describe('python-index: the official client index (.msc/.mdl/.mv)', () => {
  let dir: string
  beforeEach(async () => {
    dir = await tmpDir()
  })
  afterEach(async () => {
    await fs.rm(dir, {recursive: true, force: true})
  })

  describe('maskModelName', () => {
    it('replaces every dot with three underscores', () => {
      expect(maskModelName('Qwen2.5-7B')).to.equal('Qwen2___5-7B')
      expect(maskModelName('a.b.c')).to.equal('a___b___c')
      expect(maskModelName('plain-name')).to.equal('plain-name')
    })
  })

  describe('encoder, byte-exact fixtures (derived by hand from the pickle format)', () => {
    it('two entries: PROTO 4, one FRAME, MEMOIZE each object, keys shared by BINGET, MARK…APPENDS', () => {
      const expected = [
        '8004', //                                   PROTO 4
        '95' + '4b00000000000000', //                FRAME 75 (bytes up to and including STOP)
        '5d94', //                                   EMPTY_LIST, MEMOIZE -> 0
        '28', //                                     MARK (list items)
        '7d94', //                                   EMPTY_DICT, MEMOIZE -> 1
        '28', //                                     MARK (dict items)
        '8c04' + '50617468' + '94', //               SHORT_BINUNICODE 'Path', MEMOIZE -> 2
        '8c0b' + '636f6e6669672e6a736f6e' + '94', // 'config.json' -> 3
        '8c08' + '5265766973696f6e' + '94', //       'Revision' -> 4
        '8c06' + '633066666565' + '94', //           'c0ffee' -> 5
        '75', //                                     SETITEMS
        '7d94', //                                   EMPTY_DICT -> 6
        '28', //                                     MARK
        '6802', //                                   BINGET 2 ('Path')
        '8c07' + '612f622e62696e' + '94', //         'a/b.bin' -> 7
        '6804', //                                   BINGET 4 ('Revision')
        '8c04' + '66303064' + '94', //               'f00d' -> 8
        '75', //                                     SETITEMS
        '65', //                                     APPENDS
        '2e', //                                     STOP
      ].join('')
      const got = encodePickleIndex([
        {Path: 'config.json', Revision: 'c0ffee'},
        {Path: 'a/b.bin', Revision: 'f00d'},
      ])
      expect(got.toString('hex')).to.equal(expected)
    })

    it('one entry uses APPEND (no MARK); non-ASCII lengths count UTF-8 bytes', () => {
      const expected = [
        '8004',
        '95' + '2700000000000000', //        FRAME 39
        '5d94', //                           EMPTY_LIST -> 0
        '7d94', //                           EMPTY_DICT -> 1
        '28',
        '8c04' + '50617468' + '94', //       'Path' -> 2
        '8c05' + '6ae6a8a1' + '2e' + '94', // 'j模.' is 3 chars, 5 UTF-8 bytes -> 3
        '8c08' + '5265766973696f6e' + '94', // 'Revision' -> 4
        '8c02' + '3031' + '94', //           '01' -> 5
        '75', //                             SETITEMS
        '61', //                             APPEND
        '2e',
      ].join('')
      expect(encodePickleIndex([{Path: 'j模.', Revision: '01'}]).toString('hex')).to.equal(expected)
    })

    it('a string over 255 UTF-8 bytes uses BINUNICODE with a 4-byte little-endian length', () => {
      const buf = encodePickleIndex([{Path: 'é'.repeat(150), Revision: 'r0'}]) // 300 bytes
      const at = buf.indexOf(Buffer.from('582c010000', 'hex')) // 'X', 300 LE
      expect(at).to.be.greaterThan(0)
      expect(buf.subarray(at + 5, at + 5 + 300).toString('utf8')).to.equal('é'.repeat(150))
    })

    it('an empty list is too short for a FRAME (under 4 bytes)', () => {
      expect(encodePickleIndex([]).toString('hex')).to.equal('80045d942e')
    })

    it('.mdl dict: one item uses SETITEM', () => {
      const expected = [
        '8004',
        '95' + '1d00000000000000', // FRAME 29
        '7d94', //                    EMPTY_DICT -> 0
        '8c02' + '6964' + '94', //    'id' -> 1
        '8c11' + Buffer.from('Qwen/Qwen2___5-7B').toString('hex') + '94', // -> 2
        '73', //                      SETITEM
        '2e',
      ].join('')
      expect(encodePickleDict({id: 'Qwen/Qwen2___5-7B'}).toString('hex')).to.equal(expected)
    })

    it('ignores extra properties: each entry holds exactly Path and Revision', () => {
      const withExtra = [{Path: 'x.bin', Revision: 'r1', Sha256: 'ab'} as PythonIndexEntry]
      expect(encodePickleIndex(withExtra)).to.deep.equal(encodePickleIndex([{Path: 'x.bin', Revision: 'r1'}]))
    })

    it('refuses non-string fields', () => {
      expect(() => encodePickleIndex([{Path: 'x', Revision: 5 as unknown as string}])).to.throw(TypeError)
    })
  })

  describe('with the real Python (python3)', function () {
    before(function () {
      if (!hasPython) skipBecause(this, 'python3 is not installed')
    })

    for (const [name, files] of Object.entries(CASES)) {
      it(`pickle.load reads our .msc: ${name} (${files.length} entries)`, async () => {
        const file = path.join(dir, '.msc')
        await fs.writeFile(file, encodePickleIndex(files))
        expect(pythonLoad(file)).to.deep.equal(files)
      })
    }

    it("our bytes equal CPython's pickle.dumps(protocol=4), multi-frame and over-64KiB strings included", async () => {
      const cases = {
        ...CASES,
        thousand_and_one: Array.from({length: 1001}, (_, i) => ({Path: `f${i}`, Revision: rev(i)})),
        huge_string: [
          {Path: 'a', Revision: rev(1)},
          {Path: 'z'.repeat(70_000), Revision: rev(2)},
          {Path: 'short', Revision: rev(3)},
        ],
        lone_surrogate: [{Path: 'bad\ud800name', Revision: rev(1)}],
      }
      for (const [name, files] of Object.entries(cases)) {
        const input = path.join(dir, `${name}.json`)
        await fs.writeFile(input, JSON.stringify(files))
        // Built like the client builds it: fresh dicts with literal keys, values from JSON.
        const expected = py(
          'import json,pickle,sys\n' +
            'l=[{"Path": e["Path"], "Revision": e["Revision"]} for e in json.load(open(sys.argv[1]))]\n' +
            'sys.stdout.buffer.write(pickle.dumps(l, protocol=4))',
          input,
        )
        expect(encodePickleIndex(files).equals(expected), name).to.equal(true)
      }
      const mdl = py('import pickle,sys; sys.stdout.buffer.write(pickle.dumps({"id": "Qwen/Qwen2___5-7B"}, protocol=4))')
      expect(encodePickleDict({id: 'Qwen/Qwen2___5-7B'}).equals(mdl)).to.equal(true)
    })

    for (const proto of [1, 2, 3, 4, 5]) {
      it(`decodePickle reads what Python writes with protocol ${proto} (list and dict)`, async () => {
        for (const files of Object.values(CASES)) {
          const input = path.join(dir, 'in.json')
          await fs.writeFile(input, JSON.stringify(files))
          const out = py(
            `import json,pickle,sys; sys.stdout.buffer.write(pickle.dumps(json.load(open(sys.argv[1])), protocol=${proto}))`,
            input,
          )
          expect(decodePickle(out)).to.deep.equal(files)
        }
        const dict = py(`import pickle,sys; sys.stdout.buffer.write(pickle.dumps({"id": "Qwen/Qwen2___5-7B", "é": "模"}, protocol=${proto}))`)
        expect(decodePickle(dict)).to.deep.equal({id: 'Qwen/Qwen2___5-7B', é: '模'})
      })
    }

    it('decodePickle follows memo references past 255 (LONG_BINPUT / LONG_BINGET) and shared objects', () => {
      for (const proto of [2, 4]) {
        const out = py(
          'import pickle,pickletools,sys\n' +
            'l=[{"Path": "p%d" % i, "Revision": "r%040d" % i} for i in range(300)]\n' +
            'l.append({"Path": "again", "Revision": l[290]["Revision"]})\n' + // memo index > 255
            'l.append(l[0])\n' + //                                            the same dict twice
            `data=pickle.dumps(l, protocol=${proto})\n` +
            'assert any(op.name == "LONG_BINGET" for op, _, _ in pickletools.genops(data))\n' +
            'sys.stdout.buffer.write(data)',
        )
        const got = decodePickle(out) as PickleDict[]
        expect(got).to.have.length(302)
        expect(got[300]).to.deep.equal({Path: 'again', Revision: `r${'290'.padStart(40, '0')}`})
        expect(got[301]).to.deep.equal({Path: 'p0', Revision: `r${'0'.padStart(40, '0')}`})
      }
    })

    it('returns null for protocol 0 (text opcodes), which this reader does not speak', () => {
      const out = py('import pickle,sys; sys.stdout.buffer.write(pickle.dumps([{"Path": "a", "Revision": "b"}], protocol=0))')
      expect(decodePickle(out)).to.equal(null)
    })

    it('.mdl loads in Python as the masked id; .mv is exact and has no trailing newline', async () => {
      const modelDir = path.join(dir, 'Qwen', 'Qwen2___5-7B')
      await writeModelscopeIndex({
        modelDir,
        owner: 'Qwen',
        name: 'Qwen2.5-7B',
        files: CASES.mixed,
        revisionName: 'master',
        revisionCreatedAt: 1_700_000_000,
      })
      expect(pythonLoad(path.join(modelDir, '.mdl'))).to.deep.equal({id: 'Qwen/Qwen2___5-7B'})
      expect(await fs.readFile(path.join(modelDir, '.mv'), 'utf8')).to.equal('Revision:master,CreatedAt:1700000000')
      expect(pythonLoad(path.join(modelDir, '.msc'))).to.deep.equal(CASES.mixed)
    })

    it("the client's presence check (dict equality and Path + Revision prefix) finds every file", async () => {
      await writeModelscopeIndex({
        modelDir: dir, owner: 'o', name: 'n', files: CASES.three_hundred, revisionName: 'v1', revisionCreatedAt: 1,
      })
      const input = path.join(dir, 'want.json')
      await fs.writeFile(input, JSON.stringify(CASES.three_hundred))
      const missing = py(
        'import json,pickle,sys\n' +
          'cached=pickle.load(open(sys.argv[1],"rb"))\n' +
          'want=json.load(open(sys.argv[2]))\n' +
          'def present(w):\n' +
          '  key={"Path": w["Path"], "Revision": w["Revision"]}\n' +
          '  return key in cached and any(c["Path"]==w["Path"] and (c["Revision"].startswith(w["Revision"]) or w["Revision"].startswith(c["Revision"])) for c in cached)\n' +
          'print(sum(1 for w in want if not present(w)))',
        path.join(dir, '.msc'),
        input,
      )
      expect(missing.toString().trim()).to.equal('0')
    })

    it('merging keeps foreign entries an official-client .msc holds, and ours replace same-Path ones', async () => {
      const foreign = [
        {Path: 'README.md', Revision: rev(100)},
        {Path: 'model.safetensors', Revision: rev(101)}, // ours will replace this one
        {Path: 'tokenizer.json', Revision: rev(102)},
      ]
      const input = path.join(dir, 'foreign.json')
      await fs.writeFile(input, JSON.stringify(foreign))
      py(
        'import json,pickle,sys\n' +
          'l=[{"Path": e["Path"], "Revision": e["Revision"]} for e in json.load(open(sys.argv[1]))]\n' +
          'pickle.dump(l, open(sys.argv[2], "wb"))', // default protocol: what the client writes
        input,
        path.join(dir, '.msc'),
      )
      const ours = [
        {Path: 'model.safetensors', Revision: rev(201)},
        {Path: 'config.json', Revision: rev(202)},
      ]
      const res = await writeModelscopeIndex({
        modelDir: dir, owner: 'o', name: 'n', files: ours, revisionName: 'master', revisionCreatedAt: 5,
      })
      const expected = [foreign[0], foreign[2], ...ours]
      expect(res.keptForeign).to.equal(2)
      expect(res.entries).to.deep.equal(expected)
      expect(pythonLoad(path.join(dir, '.msc'))).to.deep.equal(expected)
      expect((await readModelscopeIndex(dir)).files).to.deep.equal(expected)

      // merge: false rewrites from ours alone.
      await writeModelscopeIndex({
        modelDir: dir, owner: 'o', name: 'n', files: ours, revisionName: 'master', revisionCreatedAt: 5, merge: false,
      })
      expect(pythonLoad(path.join(dir, '.msc'))).to.deep.equal(ours)
    })
  })

  describe('writeModelscopeIndex / readModelscopeIndex', () => {
    const base = {owner: 'Qwen', name: 'Qwen2.5-7B', revisionName: 'master', revisionCreatedAt: 1_712_345_678}

    it('round-trips through readModelscopeIndex', async () => {
      await writeModelscopeIndex({...base, modelDir: dir, files: CASES.mixed})
      expect(await readModelscopeIndex(dir)).to.deep.equal({
        files: CASES.mixed,
        id: 'Qwen/Qwen2___5-7B',
        revision: {name: 'master', createdAt: 1_712_345_678},
      })
    })

    it('a dataset: .mv is the bare revision name (as dataset_snapshot_download writes it), no dotted-name symlink, the same lock file', async () => {
      const cacheRoot = path.join(dir, 'cache')
      const modelDir = path.join(cacheRoot, 'datasets', 'acme', 'corpus___v1')
      const res = await writeModelscopeIndex({owner: 'acme', name: 'corpus.v1', repoKind: 'dataset', revisionName: 'v2', modelDir, cacheRoot, files: CASES.mixed})
      expect(await fs.readFile(path.join(modelDir, '.mv'), 'utf8')).to.equal('v2')
      expect(res.symlink).to.equal('not-needed')
      expect(await fs.lstat(path.join(cacheRoot, 'datasets', 'acme', 'corpus.v1')).catch(() => undefined)).to.equal(undefined)
      expect(res.lockFile).to.equal(path.join(cacheRoot, '.lock', 'acme___corpus.v1'))
      const index = await readModelscopeIndex(modelDir)
      expect(index).to.include({id: 'acme/corpus___v1'})
      expect(index.files).to.deep.equal(CASES.mixed)
    })

    it('reads a missing index as nulls, and a garbage one as nulls too', async () => {
      expect(await readModelscopeIndex(path.join(dir, 'nope'))).to.deep.equal({files: null, id: null, revision: null})
      await fs.writeFile(path.join(dir, '.msc'), 'not a pickle')
      await fs.writeFile(path.join(dir, '.mdl'), encodePickleIndex([]))
      await fs.writeFile(path.join(dir, '.mv'), 'Revision:master')
      expect(await readModelscopeIndex(dir)).to.deep.equal({files: null, id: null, revision: null})
    })

    it('an unreadable existing .msc is rewritten from our entries', async () => {
      await fs.writeFile(path.join(dir, '.msc'), randomBytes(64))
      const res = await writeModelscopeIndex({...base, modelDir: dir, files: CASES.one})
      expect(res.replacedUnreadable).to.equal(true)
      expect((await readModelscopeIndex(dir)).files).to.deep.equal(CASES.one)
    })

    describe("another writer's .msc (state files are input)", () => {
      const fifos: string[] = []
      afterEach(async () => {
        // A reader stuck in open() on a FIFO (the bug) is released by a writer appearing.
        for (const f of fifos.splice(0)) {
          const fh = await fs.open(f, fs.constants.O_WRONLY | fs.constants.O_NONBLOCK).catch(() => undefined)
          await fh?.close()
        }
      })

      it('a FIFO named .msc (or .mdl, .mv) does not hang: not read, replaced by a regular file', async function () {
        this.timeout(5000)
        for (const f of ['.msc', '.mdl', '.mv']) {
          execFileSync('mkfifo', [path.join(dir, f)])
          fifos.push(path.join(dir, f))
        }
        expect(await readModelscopeIndex(dir)).to.deep.equal({files: null, id: null, revision: null})
        const res = await writeModelscopeIndex({...base, modelDir: dir, files: CASES.one})
        expect(res.replacedUnreadable).to.equal(true)
        expect(res.unreadableReason).to.equal('not a regular file')
        expect((await fs.lstat(path.join(dir, '.msc'))).isFile()).to.equal(true)
        expect((await readModelscopeIndex(dir)).files).to.deep.equal(CASES.one)
      })

      it('a symlinked .msc is not followed: its target is neither read (merged) nor written', async () => {
        const target = path.join(dir, 'elsewhere.pkl')
        const foreign = encodePickleIndex([{Path: 'foreign.bin', Revision: rev(9)}])
        await fs.writeFile(target, foreign)
        await fs.symlink(target, path.join(dir, '.msc'))
        const res = await writeModelscopeIndex({...base, modelDir: dir, files: CASES.one})
        expect(res.keptForeign).to.equal(0)
        expect(res.unreadableReason).to.equal('a symlink, not a file')
        expect((await fs.readFile(target)).equals(foreign)).to.equal(true)
        expect((await fs.lstat(path.join(dir, '.msc'))).isFile()).to.equal(true)
        expect((await readModelscopeIndex(dir)).files).to.deep.equal(CASES.one)
      })

      it(`an .msc larger than ${MAX_INDEX_BYTES / 1024 / 1024} MiB is not read, and replaced with a reason`, async () => {
        const fh = await fs.open(path.join(dir, '.msc'), 'w')
        await fh.truncate(MAX_INDEX_BYTES + 1) // sparse: nothing to read unless someone reads it
        await fh.close()
        const res = await writeModelscopeIndex({...base, modelDir: dir, files: CASES.one})
        expect(res.unreadableReason).to.match(/^larger than /)
        expect((await readModelscopeIndex(dir)).files).to.deep.equal(CASES.one)
      })

      it('repeated foreign entries are merged (last Revision wins), so a rewrite never grows with them', async () => {
        const repeated = [
          {Path: 'f.bin', Revision: rev(1)},
          {Path: 'g.bin', Revision: rev(2)},
          ...Array.from({length: 500}, (_, i) => ({Path: 'f.bin', Revision: rev(10 + i)})),
        ]
        await fs.writeFile(path.join(dir, '.msc'), encodePickleIndex(repeated))
        const res = await writeModelscopeIndex({...base, modelDir: dir, files: CASES.one})
        const expected = [{Path: 'g.bin', Revision: rev(2)}, {Path: 'f.bin', Revision: rev(509)}, ...CASES.one]
        expect(res.keptForeign).to.equal(2)
        expect(res.entries).to.deep.equal(expected)
        expect((await readModelscopeIndex(dir)).files).to.deep.equal(expected)
        // Written twice more: the same bytes, not a growing file.
        const once = await fs.readFile(path.join(dir, '.msc'))
        await writeModelscopeIndex({...base, modelDir: dir, files: CASES.one})
        await writeModelscopeIndex({...base, modelDir: dir, files: CASES.one})
        expect((await fs.readFile(path.join(dir, '.msc'))).equals(once)).to.equal(true)
      })
    })

    it('a Path listed twice by the caller appears once, with the last Revision', async () => {
      const res = await writeModelscopeIndex({
        ...base,
        modelDir: dir,
        files: [{Path: 'a', Revision: 'r1'}, {Path: 'b', Revision: 'r2'}, {Path: 'a', Revision: 'r3'}],
      })
      expect(res.entries).to.deep.equal([{Path: 'b', Revision: 'r2'}, {Path: 'a', Revision: 'r3'}])
    })

    it('writes mode 0644 whatever the umask, and leaves no temp files', async () => {
      const old = process.umask(0o077)
      try {
        await writeModelscopeIndex({...base, modelDir: dir, files: CASES.one})
      } finally {
        process.umask(old)
      }
      for (const f of ['.msc', '.mdl', '.mv']) {
        expect((await fs.stat(path.join(dir, f))).mode & 0o777, f).to.equal(0o644)
      }
      expect((await fs.readdir(dir)).sort()).to.deep.equal(['.mdl', '.msc', '.mv'])
    })

    it('.mv: exact text; parse is the inverse and tolerates the strip() the client applies', () => {
      expect(formatModelVersion('v1.0', 1_700_000_000)).to.equal('Revision:v1.0,CreatedAt:1700000000')
      expect(parseModelVersion('Revision:a,b,CreatedAt:12\n')).to.deep.equal({name: 'a,b', createdAt: 12})
      expect(parseModelVersion('garbage')).to.equal(null)
    })

    it('rejects an unsafe owner or name', async () => {
      let caught: unknown
      try {
        await writeModelscopeIndex({...base, name: '../escape', modelDir: dir, files: []})
      } catch (error) {
        caught = error
      }
      expect(caught).to.have.property('code', 'E_USAGE')
    })

    describe('default cache layout (cacheRoot)', () => {
      const modelDirOf = (root: string): string => path.join(root, 'models', 'Qwen', 'Qwen2___5-7B')

      it('creates the empty lock file and a relative symlink for a dotted name', async () => {
        const res = await writeModelscopeIndex({...base, cacheRoot: dir, modelDir: modelDirOf(dir), files: CASES.one})
        const lock = path.join(dir, '.lock', 'Qwen___Qwen2.5-7B')
        expect(res.lockFile).to.equal(lock)
        expect((await fs.stat(lock)).size).to.equal(0)
        const link = path.join(dir, 'models', 'Qwen', 'Qwen2.5-7B')
        expect(res.symlink).to.equal('created')
        expect((await fs.lstat(link)).isSymbolicLink()).to.equal(true)
        expect(await fs.readlink(link)).to.equal('Qwen2___5-7B')
        expect(await fs.realpath(link)).to.equal(await fs.realpath(modelDirOf(dir)))
        expect(await fs.readFile(path.join(link, '.mv'), 'utf8')).to.equal('Revision:master,CreatedAt:1712345678')

        const again = await writeModelscopeIndex({...base, cacheRoot: dir, modelDir: modelDirOf(dir), files: CASES.one})
        expect(again.symlink).to.equal('kept')
      })

      it('keeps an existing lock file as it is', async () => {
        await fs.mkdir(path.join(dir, '.lock'), {recursive: true})
        const lock = path.join(dir, '.lock', 'Qwen___Qwen2.5-7B')
        await fs.writeFile(lock, 'held')
        await writeModelscopeIndex({...base, cacheRoot: dir, modelDir: modelDirOf(dir), files: []})
        expect(await fs.readFile(lock, 'utf8')).to.equal('held')
      })

      it('no symlink for a name without a dot', async () => {
        const modelDir = path.join(dir, 'models', 'org', 'plain')
        const res = await writeModelscopeIndex({...base, owner: 'org', name: 'plain', cacheRoot: dir, modelDir, files: []})
        expect(res.symlink).to.equal('not-needed')
        expect(await fs.readdir(path.join(dir, 'models', 'org'))).to.deep.equal(['plain'])
        expect((await fs.stat(path.join(dir, '.lock', 'org___plain'))).isFile()).to.equal(true)
      })

      it('never replaces a real directory at the link path', async () => {
        const link = path.join(dir, 'models', 'Qwen', 'Qwen2.5-7B')
        await fs.mkdir(link, {recursive: true})
        await fs.writeFile(path.join(link, 'keep.txt'), 'mine')
        const res = await writeModelscopeIndex({...base, cacheRoot: dir, modelDir: modelDirOf(dir), files: []})
        expect(res.symlink).to.equal('blocked')
        expect(await fs.readFile(path.join(link, 'keep.txt'), 'utf8')).to.equal('mine')
      })

      it('replaces a stale symlink pointing elsewhere', async () => {
        const link = path.join(dir, 'models', 'Qwen', 'Qwen2.5-7B')
        await fs.mkdir(path.dirname(link), {recursive: true})
        await fs.symlink('does-not-exist', link)
        const res = await writeModelscopeIndex({...base, cacheRoot: dir, modelDir: modelDirOf(dir), files: []})
        expect(res.symlink).to.equal('replaced')
        expect(await fs.readlink(link)).to.equal('Qwen2___5-7B')
        expect((await fs.readdir(path.dirname(link))).sort()).to.deep.equal(['Qwen2.5-7B', 'Qwen2___5-7B'])
      })
    })
  })

  describe('decodePickle on bad input: null, never a throw', () => {
    const valid = encodePickleIndex(CASES.mixed)

    it('every truncation of a valid pickle', () => {
      for (let i = 0; i < valid.length; i++) expect(decodePickle(valid.subarray(0, i)), `prefix ${i}`).to.equal(null)
      expect(decodePickle(valid)).to.deep.equal(CASES.mixed)
    })

    /** What decodePickle promises: null, a dict of str → str, or a list of such dicts; plain objects. */
    const isStrDict = (v: unknown): boolean =>
      typeof v === 'object' && v !== null && !Array.isArray(v) && Object.getPrototypeOf(v) === Object.prototype &&
      Object.values(v).every((x) => typeof x === 'string')

    it('random bytes and random corruption (seeded: MS_RESUME_PICKLE_SEED replays a run)', () => {
      const seed = Number(process.env.MS_RESUME_PICKLE_SEED ?? 20261205)
      const rand = mulberry32(seed)
      const bytes = (n: number) => Buffer.from(Array.from({length: n}, () => Math.floor(rand() * 256)))
      let decodedCorruptions = 0
      for (let i = 0; i < 2000; i++) {
        const noise = decodePickle(bytes(1 + Math.floor(rand() * 200)))
        expect(noise === null || isStrDict(noise) || (Array.isArray(noise) && noise.every(isStrDict)), `seed ${seed}, noise ${i}`).to.equal(true)
        const bad = Buffer.from(valid)
        const at = Math.floor(rand() * bad.length)
        bad[at] ^= 1 + Math.floor(rand() * 255)
        const got = decodePickle(bad)
        if (got === null) continue
        decodedCorruptions++
        const what = `seed ${seed}, corruption ${i} at byte ${at}: ${JSON.stringify(got)}`
        expect((Array.isArray(got) && got.every(isStrDict)) || isStrDict(got), what).to.equal(true)
        // Whatever entries decode must survive a round trip through our own writer unchanged.
        const entries = (Array.isArray(got) ? got : [got])
          .filter((d) => typeof d.Path === 'string' && typeof d.Revision === 'string')
          .map((d) => ({Path: d.Path, Revision: d.Revision}))
        expect(decodePickle(encodePickleIndex(entries)), what).to.deep.equal(entries)
      }
      // A flipped byte inside a string payload still decodes: the loop above did check something.
      expect(decodedCorruptions, `seed ${seed}`).to.be.greaterThan(0)
    })

    it('a pickle repeating one memoized dict millions of times (2 bytes each) is refused, not expanded', () => {
      const head = Buffer.from('80045d9428' + '7d9428' + '8c0450617468948c016194' + '8c085265766973696f6e948c01729475', 'hex')
      const ok = Buffer.concat([head, Buffer.from('6801'.repeat(1000), 'hex'), Buffer.from('652e', 'hex')])
      expect((decodePickle(ok) as PickleDict[]).length).to.equal(1001)
      const bomb = Buffer.concat([head, Buffer.from('6801'.repeat(3_000_000), 'hex'), Buffer.from('652e', 'hex')])
      expect(decodePickle(bomb)).to.equal(null)
    })

    it('hand-made garbage', () => {
      const cases: Array<[string, string]> = [
        ['empty', ''],
        ['text', Buffer.from('hello').toString('hex')],
        ['STOP on empty stack', '80042e'],
        ['int (unsupported opcode K)', '80024b052e'],
        ['GLOBAL os.system is never executed', Buffer.from('cos\nsystem\n.').toString('hex')],
        ['list of str, not of dict', '80045d948c01619461' + '2e'],
        ['top-level str', '80048c0161942e'],
        ['dict containing itself', '80047d948c016194680073' + '2e'],
        ['list containing itself', '80045d94680061' + '2e'],
        ['SETITEMS without MARK', '80047d94752e'],
        ['odd SETITEMS', '80047d94288c01619475' + '2e'],
        ['BINGET of an unknown slot', '800468092e'],
        ['BINUNICODE8 length beyond input', '80048d' + 'ffffffffffffff7f' + '2e'],
        ['FRAME longer than input', '800495' + 'ff00000000000000' + '5d942e'],
        ['invalid UTF-8', '80045d947d94288c01ff948c0161947561' + '2e'],
        ['unknown protocol', '80092e'],
        ['two items left at STOP', '80045d945d942e'],
      ]
      for (const [what, hex] of cases) {
        expect(decodePickle(Buffer.from(hex, 'hex')), what).to.equal(null)
      }
    })

    it('a "__proto__" key stays a plain key', () => {
      const buf = encodePickleDict(JSON.parse('{"__proto__": "x", "id": "o/n"}') as Record<string, string>)
      const got = decodePickle(buf) as Record<string, string>
      expect(Object.getPrototypeOf(got)).to.equal(Object.prototype)
      expect(Object.keys(got)).to.deep.equal(['__proto__', 'id'])
      expect(got.id).to.equal('o/n')
    })
  })
})
