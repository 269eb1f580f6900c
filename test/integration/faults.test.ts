import fs from 'node:fs/promises'
import path from 'node:path'

import {expect} from 'chai'

import {type EmulatorFileSpec, type Fault, HubEmulator} from '../support/emulator.js'
import {exists, listFiles, makeTmpDir, runCli, testEnv} from '../support/cli.js'
import {statePaths} from '../support/state-paths.js'

const MODEL = 'acme/faulty'
const MiB = 1024 * 1024
const BIG = 'model.safetensors'

/** One fault-scripted file per test: start the emulator, pull, and hand back what happened. */
describe('pull under transport faults', function () {
  this.timeout(120_000)
  let emu: HubEmulator | undefined
  let home: string

  beforeEach(async () => {
    home = await makeTmpDir()
  })
  afterEach(async () => {
    await emu?.stop()
    emu = undefined
    await fs.rm(home, {recursive: true, force: true})
  })

  async function pullWith(files: EmulatorFileSpec[], faults: Record<string, Array<Fault | null>>, args: string[] = []) {
    emu = await HubEmulator.start({models: [{id: MODEL, files}]})
    for (const [p, f] of Object.entries(faults)) emu.setFaults(MODEL, p, f)
    const dir = path.join(home, 'out')
    const started = Date.now()
    const res = await runCli(['pull', MODEL, '--endpoint', emu.url, '--local-dir', dir, ...args], {env: testEnv(home)})
    return {res, dir, ms: Date.now() - started, emu}
  }

  async function expectExact(dir: string, p: string): Promise<void> {
    const data = await fs.readFile(path.join(dir, p))
    expect(data.equals(emu!.contentOf(MODEL, p)), `${p} byte-exact`).to.equal(true)
  }

  it('connection drop: retries and resumes at the exact next byte, not from 0 or a chunk boundary', async () => {
    const {res, dir} = await pullWith([{path: BIG, size: 3 * MiB + 77}], {[BIG]: [{kind: 'reset', afterBytes: 1.5 * MiB}]})
    expect(res.code, res.stderr).to.equal(0)
    await expectExact(dir, BIG)
    const reqs = emu!.contentRequests(MODEL, BIG)
    expect(reqs).to.have.length(2)
    expect(reqs[0].rangeStart).to.equal(0)
    expect(reqs[1].rangeStart).to.equal(1.5 * MiB)
    expect(reqs[1].rangeEnd).to.equal(3 * MiB + 76)
  })

  it('503 with Retry-After: waits as told, then succeeds', async () => {
    const {res, dir} = await pullWith([{path: BIG, size: 100_000}], {[BIG]: [{kind: 'status', status: 503, headers: {'Retry-After': '1'}}]})
    expect(res.code, res.stderr).to.equal(0)
    await expectExact(dir, BIG)
    const reqs = emu!.contentRequests(MODEL, BIG)
    expect(reqs).to.have.length(2)
    expect(reqs[0].status).to.equal(503)
    // Our own backoff in tests is 20 ms: a gap of a second can only come from Retry-After.
    expect(reqs[1].t - reqs[0].t).to.be.at.least(950)
  })

  it('a corrupt byte in transit: hash mismatch, quarantined, downloaded again, never handed over', async () => {
    const {res, dir} = await pullWith([{path: BIG, size: 2 * MiB}], {[BIG]: [{kind: 'corrupt', offsets: [123_456]}]})
    expect(res.code, res.stderr).to.equal(0)
    await expectExact(dir, BIG)
    expect(emu!.contentRequests(MODEL, BIG)).to.have.length(2)
    const quarantined = await fs.readdir(statePaths(dir).quarantine)
    expect(quarantined).to.have.length(1)
    const bad = await fs.readFile(path.join(statePaths(dir).dir, 'quarantine', quarantined[0]))
    expect(bad[123_456]).to.equal(emu!.contentOf(MODEL, BIG)[123_456] ^ 0xff)
  })

  it('a permanently wrong Sha256 in the listing: exit 4 [E_INTEGRITY] after 3 downloads, nothing at the final path', async () => {
    const wrong = 'ab'.repeat(32)
    const {res, dir} = await pullWith([{path: BIG, size: 300_000, listedSha256: wrong}, {path: 'ok.json', content: '{}'}], {})
    expect(res.code).to.equal(4)
    expect(res.stderr).to.contain('[E_INTEGRITY]').and.to.contain(BIG).and.to.contain(wrong)
    expect(res.stderr).not.to.match(/^\s+at /m)
    expect(await exists(path.join(dir, BIG))).to.equal(false)
    expect(emu!.contentRequests(MODEL, BIG)).to.have.length(3)
    // The other file is fine and in place.
    await expectExact(dir, 'ok.json')
  })

  it('200 with the full body to a resumed Range request: never appended, file byte-exact', async () => {
    const {res, dir} = await pullWith([{path: BIG, size: 3 * MiB}], {[BIG]: [{kind: 'reset', afterBytes: 2.2 * MiB}, {kind: 'ignoreRange'}]})
    expect(res.code, res.stderr).to.equal(0)
    await expectExact(dir, BIG)
    const reqs = emu!.contentRequests(MODEL, BIG)
    expect(reqs).to.have.length(2)
    expect(reqs[1].rangeStart).to.equal(reqs[0].bytesSent)
    expect(reqs[1].rangeStart).to.be.greaterThan(2 * MiB)
    expect(reqs[1].status).to.equal(200)
    expect((await fs.stat(path.join(dir, BIG))).size).to.equal(3 * MiB)
  })

  it('a stall past --timeout: the connection is dropped and the download resumes', async () => {
    const {res, dir, ms} = await pullWith([{path: BIG, size: 3 * MiB}], {[BIG]: [{kind: 'stall', afterBytes: 1.2 * MiB}]}, ['--timeout', '1'])
    expect(res.code, res.stderr).to.equal(0)
    await expectExact(dir, BIG)
    const reqs = emu!.contentRequests(MODEL, BIG)
    expect(reqs).to.have.length(2)
    expect(reqs[1].rangeStart).to.equal(reqs[0].bytesSent)
    expect(reqs[1].rangeStart).to.be.greaterThan(1 * MiB)
    expect(ms).to.be.lessThan(30_000) // not the default 30 s timeout
  })

  for (const hostile of ['../evil.bin', 'a/../../evil.bin', '/abs/evil.bin', 'C:evil.bin', 'dir\\evil.bin', 'ctl\u0001.bin', './dot.bin', 'a//b.bin']) {
    it(`refuses the traversal name ${JSON.stringify(hostile)} before writing anything`, async () => {
      const {res, dir} = await pullWith([{path: 'good.bin', size: 10}, {path: 'placeholder.bin', size: 10, listedExtra: {Path: hostile, Name: 'x'}}], {})
      expect(res.code).to.equal(5)
      expect(res.stderr).to.contain('[E_UNSAFE_PATH]')
      expect(await exists(dir)).to.equal(false)
      expect(await exists(path.join(home, 'evil.bin'))).to.equal(false)
      expect(emu!.contentRequests(MODEL)).to.have.length(0)
      expect(await listFiles(home)).to.deep.equal([])
    })
  }
})
