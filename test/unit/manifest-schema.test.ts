import fs from 'node:fs/promises'
import path from 'node:path'

import {Ajv2020} from 'ajv/dist/2020.js'
import {expect} from 'chai'

import {loadXxh64} from '../../src/integrity/chunks.js'
import {type Manifest, manifestProblem, readManifest} from '../../src/integrity/manifest.js'
import {unsafeReason} from '../../src/store/safe-path.js'
import {REPO_ROOT} from '../support/cli.js'
import {HubEmulator} from '../support/emulator.js'
import {EXAMPLE_MODEL} from '../support/example-model.js'

const SCHEMA = path.join(REPO_ROOT, 'manifests', 'manifest-v1.schema.json')
const EXAMPLE = path.join(REPO_ROOT, 'manifests', 'example.manifest.json')

const RFC3339 = /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?(Z|[+-]\d{2}:\d{2})$/i

async function compile() {
  const ajv = new Ajv2020({strict: true, allErrors: true})
  // ajv leaves formats to ajv-formats; the one this schema uses is small enough to state here.
  ajv.addFormat('date-time', (s: string) => RFC3339.test(s) && !Number.isNaN(Date.parse(s)))
  return ajv.compile(JSON.parse(await fs.readFile(SCHEMA, 'utf8')))
}

const clone = <T>(x: T): T => JSON.parse(JSON.stringify(x)) as T

describe('manifest JSON Schema', () => {
  let example: Manifest

  before(async () => {
    example = JSON.parse(await fs.readFile(EXAMPLE, 'utf8')) as Manifest
  })

  it('the example manifest validates against the schema, and ms-resume reads it', async () => {
    const validate = await compile()
    expect(validate(example), JSON.stringify(validate.errors)).to.equal(true)
    expect((await readManifest(EXAMPLE)).files).to.have.length(example.files.length)
  })

  it('the example is a real pull of the example model: an empty file, a 3-chunk file, the right bytes', async () => {
    const emu = await HubEmulator.start({models: [EXAMPLE_MODEL]})
    try {
      const xxh = await loadXxh64()
      expect(example.modelId).to.equal(EXAMPLE_MODEL.id)
      expect(example.files.map((f) => f.path)).to.deep.equal(EXAMPLE_MODEL.files.map((f) => f.path).sort())
      expect(example.files.some((f) => f.size === 0 && f.xxh64.length === 0)).to.equal(true)
      expect(example.files.some((f) => f.xxh64.length === 3)).to.equal(true)
      for (const f of example.files) {
        const bytes = emu.contentOf(EXAMPLE_MODEL.id, f.path)
        expect(f.size, f.path).to.equal(bytes.length)
        expect(f.sha256, f.path).to.equal(emu.sha256Of(EXAMPLE_MODEL.id, f.path))
        expect(f.commit, f.path).to.equal(emu.revisionOf(EXAMPLE_MODEL.id, f.path))
        const sums = []
        for (let start = 0; start < bytes.length; start += f.chunkSizeBytes) sums.push(xxh(bytes.subarray(start, start + f.chunkSizeBytes)))
        expect(f.xxh64, f.path).to.deep.equal(sums)
      }
    } finally {
      await emu.stop()
    }
  })

  it('rejects what ms-resume rejects: bad digests, unknown or missing fields, other versions, unsafe paths', async () => {
    const validate = await compile()
    const broken: Array<[string, (m: Manifest & Record<string, unknown>) => void]> = [
      ['uppercase sha256', (m) => (m.files[1].sha256 = m.files[1].sha256.toUpperCase())],
      ['short xxh64', (m) => (m.files[1].xxh64[0] = 'abc')],
      ['negative size', (m) => (m.files[1].size = -1)],
      ['fractional size', (m) => (m.files[1].size = 1.5)],
      ['version 2', (m) => (m.version = 2)],
      ['other kind', (m) => ((m as {kind: string}).kind = 'something/else')],
      ['missing createdAt', (m) => delete (m as Partial<Manifest>).createdAt],
      ['missing file commit', (m) => delete (m.files[1] as Partial<Manifest['files'][0]>).commit],
      ['zero chunk size', (m) => (m.files[1].chunkSizeBytes = 0)],
      ['parent path', (m) => (m.files[1].path = '../escape')],
      ['absolute path', (m) => (m.files[1].path = '/etc/passwd')],
      ['bad model id', (m) => (m.modelId = 'no-slash')],
      ['a repo kind other than dataset', (m) => ((m as Record<string, unknown>).repoKind = 'model')],
      ['sizeOnly false', (m) => ((m.files[1] as Record<string, unknown>).sizeOnly = false)],
      ['sizeOnly as a string', (m) => ((m.files[1] as Record<string, unknown>).sizeOnly = 'yes')],
    ]
    for (const [name, breakIt] of broken) {
      const m = clone(example) as Manifest & Record<string, unknown>
      breakIt(m)
      expect(validate(m), `schema accepts: ${name}`).to.equal(false)
      expect(manifestProblem(m), `reader accepts: ${name}`).to.be.a('string')
    }
    // A dataset's manifest, with a file the hub listed without a SHA-256, is valid for both.
    const dataset = clone(example) as Manifest
    dataset.repoKind = 'dataset'
    dataset.files[1].sizeOnly = true
    expect(validate(dataset), JSON.stringify(validate.errors)).to.equal(true)
    expect(manifestProblem(dataset)).to.equal(undefined)
    // The schema is closed (additionalProperties: false); the reader tolerates unknown fields.
    expect(validate({...clone(example), extra: 1})).to.equal(false)
  })

  it('the reader also refuses what the schema cannot express: a chunk grid other than the size gives, a reserved path, a repeated path', () => {
    const three = example.files.findIndex((f) => f.xxh64.length === 3)
    const broken: Array<[string, (m: Manifest) => void]> = [
      ['chunk size off the grid (a consistent 512 KiB list)', (m) => {
        const f = m.files[three]
        f.chunkSizeBytes = 512 * 1024
        f.xxh64 = Array.from({length: Math.ceil(f.size / f.chunkSizeBytes)}, () => '0123456789abcdef')
      }],
      ["ms-resume's state directory", (m) => (m.files[three].path = '.ms-resume/journal-v1.json')],
      ["the client's index, in another case", (m) => (m.files[three].path = '.MSC')],
      ['a repeated path', (m) => m.files.push({...m.files[three]})],
    ]
    for (const [name, breakIt] of broken) {
      const m = clone(example)
      breakIt(m)
      expect(manifestProblem(m), `reader accepts: ${name}`).to.be.a('string')
    }
    expect(manifestProblem(clone(example))).to.equal(undefined)
  })

  it("the schema's path pattern agrees with the reader's path safety rules", async () => {
    const schema = JSON.parse(await fs.readFile(SCHEMA, 'utf8')) as {$defs: {file: {properties: {path: {pattern: string}}}}}
    const pattern = new RegExp(schema.$defs.file.properties.path.pattern, 'u')
    const samples = [
      'config.json', 'a/b/c.bin', 'sub dir/with space/näme ünïcode.bin', '.hidden', 'a/.b', '...', 'a/..b', 'a..',
      '', '/abs', 'a//b', 'a/', './a', 'a/./b', '../a', 'a/..', 'a\\b', 'C:/x', 'c:x', 'tab\there', 'nl\nhere', 'del\u007f',
    ]
    for (const p of samples) {
      expect(pattern.test(p), JSON.stringify(p)).to.equal(unsafeReason(p) === undefined)
    }
  })
})
