import {spawnSync} from 'node:child_process'
import fs from 'node:fs/promises'
import os from 'node:os'
import path from 'node:path'
import {fileURLToPath} from 'node:url'
import vm from 'node:vm'

import {expect} from 'chai'

import {BUILD_LINE_PREFIX, BUNDLE_FILE, bundledCommand, loadBundle, sourceText, wrapBundle} from '../../src/cli/launch.js'
import {LONG_RUN_FLAGS, boundHeap, tuneForLongRun} from '../../src/cli/v8-flags.js'

const ID = '0123456789abcdef0123456789abcdef'

/** A bundle as scripts/bundle.ts writes one: the build line, then CommonJS exporting runCommand. */
function bundleSource(id: string, answer: number): string {
  return `${BUILD_LINE_PREFIX}${id}\n"use strict";\nexports.runCommand = async () => ${answer};\nexports.strict = (function () { return this === undefined })();\n`
}

describe('launch: commands run from the bundle and its code cache', () => {
  let dir: string
  beforeEach(async () => {
    dir = await fs.mkdtemp(path.join(os.tmpdir(), 'msr-launch-'))
  })
  afterEach(async () => {
    await fs.rm(dir, {recursive: true, force: true})
  })

  const write = async (source: string, cache?: Buffer) => {
    const file = path.join(dir, 'b.cjs')
    await fs.writeFile(file, source)
    if (cache) await fs.writeFile(`${file}.cache`, cache)
    return {file, cacheFile: `${file}.cache`}
  }
  const cacheFor = (source: string, id: string) => Buffer.concat([Buffer.from(id, 'latin1'), new vm.Script(wrapBundle(source), {filename: 'x'}).createCachedData()])

  it('uses a code cache made for this very bundle, and runs it in strict mode', async () => {
    const source = bundleSource(ID, 42)
    const {file, cacheFile} = await write(source, cacheFor(source, ID))
    const loaded = loadBundle(file, cacheFile)!
    expect(loaded.cache).to.equal('used')
    expect(await loaded.bundle.runCommand('x', [], dir)).to.equal(42)
    expect((loaded.bundle as unknown as {strict: boolean}).strict).to.equal(true)
  })

  it('a cache of another build (same length, other code) is not used: the bundle is compiled', async () => {
    const old = bundleSource(ID, 41)
    const source = bundleSource('fedcba9876543210fedcba9876543210', 43)
    expect(source.length).to.equal(old.length)
    const {file, cacheFile} = await write(source, cacheFor(old, ID))
    const loaded = loadBundle(file, cacheFile)!
    expect(loaded.cache).to.equal('none')
    expect(await loaded.bundle.runCommand('x', [], dir)).to.equal(43)
  })

  it('no cache, a garbage cache, a bundle without a build line: compiled and run all the same', async () => {
    // Each case its own source: V8 reuses a script compiled earlier in the process from the same text.
    expect(loadBundle((await write(bundleSource(ID, 46))).file, path.join(dir, 'missing'))!.cache).to.equal('none')
    const garbage = Buffer.concat([Buffer.from(ID, 'latin1'), Buffer.alloc(500, 7)])
    const loaded = loadBundle((await write(bundleSource(ID, 44), garbage)).file, path.join(dir, 'b.cjs.cache'))!
    expect(loaded.cache).to.equal('rejected')
    expect(await loaded.bundle.runCommand('x', [], dir)).to.equal(44)
    const plain = '"use strict";\nexports.runCommand = async () => 45;\n'
    expect(loadBundle((await write(plain, cacheFor(plain, ID))).file, path.join(dir, 'b.cjs.cache'))!.cache).to.equal('none')
    expect(loadBundle(path.join(dir, 'nope.cjs'), path.join(dir, 'nope.cache'))).to.equal(undefined)
  })

  it('only a command doing its work runs from the bundle; help, --version and unknown commands go to oclif', () => {
    const table: Array<[string[], string | undefined]> = [
      [['pull', 'acme/m'], 'pull'],
      [['verify', 'acme/m', '--level', 'fast'], 'verify'],
      [['status'], 'status'],
      [['pull', '--help'], undefined],
      [['pull', 'acme/m', '-h'], undefined],
      [['--version'], undefined],
      [['help', 'pull'], undefined],
      [[], undefined],
      [['bogus'], undefined],
      [['pull', '--', '--help'], 'pull'],
      [['constructor'], undefined],
      [['toString'], undefined],
    ]
    for (const [argv, want] of table) expect(bundledCommand(argv), argv.join(' ')).to.equal(want)
  })

  it('reads a bundle with a build line (ASCII: bundle.ts) as Latin-1 and any other file as UTF-8', async () => {
    const text = 'exports.s = "caf\u00e9 \u{1F600}" // W\u00e4rting\n'
    expect(sourceText(Buffer.from(text))).to.equal(text)
    expect(sourceText(Buffer.from('exports.a = 1\n'))).to.equal('exports.a = 1\n')
    const built = bundleSource(ID, 48)
    expect(sourceText(Buffer.from(built))).to.equal(built)
    // The build line is what decides: its bytes are taken one character each.
    expect(sourceText(Buffer.from(`${built}// \u00e9\n`))).to.equal(`${built}// \u00c3\u00a9\n`)
    const source = bundleSource(ID, 47).replace('"use strict";', '"use strict"; // J\u00e4rvinen \u2014 \u{1F600}')
    const loaded = loadBundle((await write(source)).file, path.join(dir, 'none'))!
    expect(await loaded.bundle.runCommand('x', [], dir)).to.equal(47)
  })

  it('the built bundle is ASCII (npm test builds it first)', async () => {
    const bytes = await fs.readFile(path.join(path.dirname(fileURLToPath(import.meta.url)), '..', '..', 'dist', BUNDLE_FILE)).catch(() => undefined)
    if (!bytes) return expect(process.env.CI, 'dist/ms-resume.cjs missing under CI').to.not.equal('true')
    const at = bytes.findIndex((b) => b > 0x7f)
    expect(at, `a non-ASCII byte at ${at}`).to.equal(-1)
  })

  it('sets each heap flag once, when its space has grown that far, and none at start-up', async () => {
    const MiB = 1024 * 1024
    const set: string[] = []
    let sizes = {new_space: 1 * MiB, old_space: 4 * MiB}
    const spaces = () => Object.entries(sizes).map(([space_name, space_size]) => ({space_name, space_size}) as ReturnType<typeof import('node:v8').getHeapSpaceStatistics>[number])
    const tick = () => new Promise((r) => setTimeout(r, 120))
    const cap = boundHeap((f) => set.push(f), spaces)
    try {
      expect(set, 'at start-up').to.deep.equal([])
      await tick()
      expect(set, 'small spaces').to.deep.equal([])
      sizes = {new_space: 8 * MiB, old_space: 4 * MiB}
      await tick()
      expect(set).to.deep.equal(['--semi-space-growth-factor=1'])
      sizes = {new_space: 8 * MiB, old_space: 40 * MiB}
      await tick()
      await tick()
      expect(set).to.deep.equal(['--semi-space-growth-factor=1', '--heap-growing-percent=30'])
    } finally {
      clearInterval(cap)
    }
  })

  it('tunes V8 for a long run once per process, with flags this Node accepts', () => {
    const set: string[] = []
    // Whether this is the first call in the process depends on what ran before; the second never sets.
    const first = tuneForLongRun((f) => set.push(f))
    expect(tuneForLongRun((f) => set.push(f))).to.equal(false)
    expect(set).to.deep.equal(first ? [LONG_RUN_FLAGS] : [])
    // An unknown V8 option on the command line is an error: these are known.
    const run = spawnSync(process.execPath, [...LONG_RUN_FLAGS.split(' '), '-e', '0'], {encoding: 'utf8'})
    expect(run.status, run.stderr).to.equal(0)
    expect(spawnSync(process.execPath, ['--no-such-v8-flag-at-all', '-e', '0']).status, 'the check can fail').to.not.equal(0)
  })
})
