import fs from 'node:fs/promises'
import path from 'node:path'

import {expect} from 'chai'

import {HubEmulator} from '../support/emulator.js'
import {makeTmpDir, runCli, testEnv} from '../support/cli.js'
import {TRANSPORTS, transport} from '../support/tls.js'

const MODEL = 'acme/datapath'
const MiB = 1024 * 1024

/**
 * The path every real user takes: TLS, a rate cap, several connections, a disk slower than the
 * network. Each case must end byte-exact on the first download: one pass over the file, no
 * integrity retry (which is what corrupted bodies used to cost: three downloads, then exit 4).
 */
describe('data path: TLS, rate caps, several connections, slow disks', function () {
  this.timeout(180_000)
  let emu: HubEmulator | undefined
  let home: string

  afterEach(async () => {
    await emu?.stop()
    emu = undefined
    await fs.rm(home, {recursive: true, force: true})
  })

  const cases: Array<{name: string; args: string[]; env?: Record<string, string>; hubRate?: number}> = [
    {name: 'plain', args: []},
    {name: '--max-speed 30M', args: ['--max-speed', '30M']},
    {name: '--max-speed 30M --connections 4', args: ['--max-speed', '30M', '--connections', '4']},
    {name: '--connections 8', args: ['--connections', '8']},
    {name: 'a hub at 6 MB/s per connection, automatic connections', args: [], hubRate: 6 * MiB},
    {name: 'a disk slower than the network, --connections 4', args: ['--connections', '4'], env: {MS_RESUME_TEST_WRITE_DELAY_MS: '40'}},
    {name: 'a rate wait longer than --timeout', args: ['--max-speed', '8M', '--timeout', '1'], env: {MS_RESUME_TEST_WRITE_DELAY_MS: '300'}},
  ]

  for (const kind of TRANSPORTS) {
    for (const c of cases) {
      it(`${kind}: ${c.name}: byte-exact in one pass`, async () => {
        const size = 40 * MiB + 12_345
        const t = transport(kind)
        emu = await HubEmulator.start({models: [{id: MODEL, files: [{path: 'w.bin', size}]}], tls: t.tls, rateLimitBytesPerSec: c.hubRate})
        home = await makeTmpDir()
        const dir = path.join(home, 'out')
        const res = await runCli(['pull', MODEL, '--endpoint', emu.url, '--local-dir', dir, '--json', ...c.args], {env: testEnv(home, {...t.env, ...c.env})})
        expect(res.code, res.stderr).to.equal(0)
        expect((await fs.readFile(path.join(dir, 'w.bin'))).equals(emu.contentOf(MODEL, 'w.bin'))).to.equal(true)
        const events = res.stdout.trim().split('\n').map((l) => JSON.parse(l) as {type: string; code?: string})
        expect(events.filter((e) => e.type === 'integrity-retry' || e.code === 'E_INTEGRITY'), 'no integrity retry').to.deep.equal([])
        // One pass: what the hub sent is the file, plus what connections had in flight (socket
        // buffers, about 2 MiB each on loopback) when an idle one took over their tail.
        const sent = emu.totalBytesSent(MODEL, 'w.bin')
        const connections = Number(c.args[c.args.indexOf('--connections') + 1]) || 1
        expect(sent).to.be.at.least(size).and.below(size + 4 * MiB + connections * 2 * MiB)
      })
    }
  }
})
