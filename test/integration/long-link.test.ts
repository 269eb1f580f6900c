import {expect} from 'chai'
import crypto from 'node:crypto'
import fs from 'node:fs/promises'
import path from 'node:path'

import {makeTmpDir, runCli, testEnv} from '../support/cli.js'
import {NGINX_BIN, Nginx} from '../support/nginx.js'
import {Relay, type RelayOptions} from '../support/relay.js'
import {type StaticModel, writeStaticModel} from '../support/static-hub.js'
import {TRANSPORTS, makeTestCertificate} from '../support/tls.js'
import {requireTool} from '../support/tools.js'

const MODEL = 'acme/long-link'
const FILE = 'model.safetensors'
const MiB = 1024 * 1024
/** Automatic connections start from 64 MiB. */
const SIZE = 72 * MiB + 4321
/** A connection that carried file bytes (API replies are a few KB). */
const DATA_CONNECTION_BYTES = 1 * MiB

/**
 * Automatic connections on a long link (nginx as the CDN behind the relay's 100 ms round trip):
 * the first step opens 8 at once, the link decides on more (up to 10), and each connection fetches
 * its share in one request instead of a piece per round trip.
 */
describe('long links: automatic connections open what the link rewards', function () {
  this.timeout(180_000)
  let root: string
  let home: string
  let model: StaticModel
  const stops: Array<() => Promise<void>> = []

  before(async function () {
    requireTool(this, NGINX_BIN, 'nginx-light')
    requireTool(this, 'openssl', 'openssl')
    root = await makeTmpDir('msr-long-link-')
    model = await writeStaticModel(root, {id: MODEL, files: [{path: FILE, size: SIZE}]})
  })
  beforeEach(async () => {
    home = await makeTmpDir()
  })
  afterEach(async () => {
    for (const stop of stops.splice(0)) await stop()
    await fs.rm(home, {recursive: true, force: true})
  })
  after(async () => {
    if (root) await fs.rm(root, {recursive: true, force: true})
  })

  async function pullThrough(kind: string, link: Omit<RelayOptions, 'targetPort'>, limitRateBytesPerSec?: number) {
    const cert = kind === 'https' ? makeTestCertificate() : undefined
    const server = await Nginx.start({root, tls: cert, limitRateBytesPerSec, accessLog: true})
    stops.push(() => server.stop())
    const relay = await Relay.start({targetPort: server.port, ...link})
    stops.push(() => relay.stop())
    const dir = path.join(home, 'out')
    const env = testEnv(home, cert ? {NODE_EXTRA_CA_CERTS: cert.certPath} : {})
    const res = await runCli(['pull', MODEL, '--endpoint', relay.url(kind === 'https' ? 'https' : 'http'), '--local-dir', dir], {env, timeoutMs: 150_000})
    expect(res.code, res.stderr).to.equal(0)
    const got = crypto.createHash('sha256').update(await fs.readFile(path.join(dir, FILE))).digest('hex')
    expect(got, 'byte-exact').to.equal(model.files[0].sha256)
    const content = (await server.accessLog()).filter((e) => e.uri.startsWith('/blobs/'))
    const data = relay.perConnection.filter((c) => c.bytesToClient >= DATA_CONNECTION_BYTES)
    return {relay, content, data}
  }

  for (const kind of TRANSPORTS) {
    it(`${kind}: a per-connection limit rewards more connections: 10, one share each, no bytes sent twice`, async () => {
      // The limit is the relay's, paced smoothly. With nginx's limit_rate (used before), which sends
      // a whole second's worth at once and then pauses, the lone connection's ~200 ms window caught
      // either that burst (no reward: 8, now and then under load) or the pause (22 KB/s: rewarded
      // for the wrong reason).
      const {relay, content, data} = await pullThrough(kind, {rttMs: 100, bytesPerSecPerConnection: 2_000_000})
      expect(data.length, 'connections that carried file bytes').to.equal(10)
      // aria2c -x8 opens 8: at most 4 more in all, the API's included.
      expect(relay.connections, 'connections opened').to.be.at.most(12)
      // One request per share, a few more where a connection that finished early took over the
      // back half of a slower one's (each such take-over closes the slower one's connection).
      expect(content.length, `requests: ${content.map((e) => e.range).join(' ')}`).to.be.at.most(16)
      const served = content.reduce((sum, e) => sum + e.bodyBytes, 0)
      // What a cut reply had in flight (socket buffers) is all that may come twice.
      expect(served).to.be.at.least(SIZE).and.below(SIZE + 16 * MiB)
    })

    it(`${kind}: one bottleneck shared by every connection: the first step (8) and no more`, async () => {
      const {content, data} = await pullThrough(kind, {rttMs: 100, sharedBytesPerSec: 16_000_000})
      expect(data.length, 'connections that carried file bytes').to.equal(8)
      expect(content.length, `requests: ${content.map((e) => e.range).join(' ')}`).to.be.at.most(14)
    })
  }
})
