import {expect} from 'chai'
import fs from 'node:fs/promises'
import https from 'node:https'
import net from 'node:net'
import path from 'node:path'

import {listFiles, makeTmpDir, runCli, testEnv} from '../support/cli.js'
import {deterministicBytes} from '../support/emulator.js'
import {NGINX_BIN, Nginx} from '../support/nginx.js'
import {Relay} from '../support/relay.js'
import {type StaticModel, downloadUrl, writeStaticModel} from '../support/static-hub.js'
import {TRANSPORTS, makeTestCertificate} from '../support/tls.js'
import {requireTool} from '../support/tools.js'

/**
 * The benchmark's and transfer tests' infrastructure against the real CLI: nginx serving a static hub
 * (plain and TLS, with the test certificate), and the relay in front of it. If these are wrong, every
 * figure measured with them is too.
 */
const MODEL = 'infra/static-model'
const FILES = [
  {path: 'config.json', content: '{"hidden_size": 8}\n'},
  {path: 'empty.txt', content: ''},
  {path: 'tokenizer/vocab.v2.txt', size: 3000},
  {path: 'weights/model-00001-of-00002.safetensors', size: 5 * 1024 * 1024 + 123},
  // 32 MiB and more take the large-file reader.
  {path: 'weights/model-00002-of-00002.safetensors', size: 33 * 1024 * 1024 + 7},
]

function get(url: string, headers: Record<string, string>, ca?: string): Promise<{status: number; headers: Record<string, string | string[] | undefined>; body: Buffer}> {
  return new Promise((resolve, reject) => {
    const req = https.get(url, {headers, ca}, (res) => {
      const parts: Buffer[] = []
      res.on('data', (d: Buffer) => parts.push(d))
      res.on('end', () => resolve({status: res.statusCode ?? 0, headers: res.headers, body: Buffer.concat(parts)}))
      res.on('error', reject)
    })
    req.on('error', reject)
  })
}

describe('test infrastructure: nginx, TLS and the relay with the real CLI', function () {
  this.timeout(120_000)
  let root: string
  let home: string
  let model: StaticModel
  const stops: Array<() => Promise<void>> = []

  before(async function () {
    requireTool(this, NGINX_BIN, 'nginx-light')
    requireTool(this, 'openssl', 'openssl')
    root = await makeTmpDir('msr-static-hub-')
    model = await writeStaticModel(root, {id: MODEL, files: FILES})
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

  async function nginx(o: {tls?: boolean; limitRateBytesPerSec?: number} = {}): Promise<Nginx> {
    const server = await Nginx.start({root, accessLog: true, tls: o.tls ? makeTestCertificate() : undefined, limitRateBytesPerSec: o.limitRateBytesPerSec})
    stops.push(() => server.stop())
    return server
  }

  async function expectServedBytes(dir: string): Promise<void> {
    expect(await listFiles(dir)).to.deep.equal(FILES.map((f) => f.path).sort())
    for (const f of model.files) {
      const served = await fs.readFile(path.join(root, 'blobs', ...MODEL.split('/'), ...f.path.split('/')))
      const onDisk = await fs.readFile(path.join(dir, ...f.path.split('/')))
      expect(onDisk.equals(served), `${f.path} byte-exact`).to.equal(true)
    }
  }

  it('serves a Range request with 206 and the right bytes over HTTPS with the test certificate', async () => {
    const server = await nginx({tls: true})
    const {cert} = makeTestCertificate()
    const file = 'weights/model-00001-of-00002.safetensors'
    const size = 5 * 1024 * 1024 + 123
    // The hub route redirects to the blob, relative to the origin it was asked on.
    const hop = await get(downloadUrl(server.url, MODEL, file), {}, cert)
    expect(hop.status).to.equal(302)
    expect(hop.headers.location).to.equal(`/blobs/${MODEL}/${encodeURIComponent(file)}`)
    const ranged = await get(new URL(String(hop.headers.location), server.url).toString(), {Range: 'bytes=1000000-1999999'}, cert)
    expect(ranged.status).to.equal(206)
    expect(ranged.headers['content-range']).to.equal(`bytes 1000000-1999999/${size}`)
    expect(ranged.body.equals(deterministicBytes(MODEL, file, 1_000_000, 2_000_000))).to.equal(true)
    const log = await server.accessLog()
    expect(log.map((e) => [e.status, e.range])).to.deep.equal([[302, undefined], [206, 'bytes=1000000-1999999']])
    expect(log[1].bodyBytes).to.equal(1_000_000)
    // Without the certificate the TLS is refused: it is real TLS, not plain HTTP on another port.
    const refused = await get(`${server.url}/blobs/${MODEL}/config.json`, {}).then(() => null, (e: Error) => e)
    expect(refused?.message).to.match(/self.signed|certificate/i)
  })

  for (const kind of TRANSPORTS) {
    it(`ms-resume pull from nginx over ${kind} gives byte-exact files, every content request ranged`, async () => {
      const server = await nginx({tls: kind === 'https'})
      const dir = path.join(home, 'out')
      const env = testEnv(home, kind === 'https' ? {NODE_EXTRA_CA_CERTS: makeTestCertificate().certPath} : {})
      const res = await runCli(['pull', MODEL, '--endpoint', server.url, '--local-dir', dir], {env})
      expect(res.code, res.stderr).to.equal(0)
      await expectServedBytes(dir)
      const content = (await server.accessLog()).filter((e) => e.uri.startsWith('/blobs/'))
      expect(content.length).to.be.greaterThan(0)
      for (const e of content) expect([e.status, e.range], e.uri).to.match(/^206,bytes=\d+-\d+$/)
      const served = content.reduce((sum, e) => sum + e.bodyBytes, 0)
      expect(served).to.equal(model.files.reduce((sum, f) => sum + f.size, 0))
    })
  }

  it('ms-resume pull through the relay (TLS passes through, 60 ms round trip) is byte-exact and counted', async () => {
    const server = await nginx({tls: true})
    const relay = await Relay.start({targetPort: server.port, rttMs: 60})
    stops.push(() => relay.stop())
    const dir = path.join(home, 'out')
    const env = testEnv(home, {NODE_EXTRA_CA_CERTS: makeTestCertificate().certPath})
    const res = await runCli(['pull', MODEL, '--endpoint', relay.url('https'), '--local-dir', dir], {env})
    expect(res.code, res.stderr).to.equal(0)
    await expectServedBytes(dir)
    // Every body byte (and the TLS around it) went through the relay: redirects stay on its origin.
    const total = model.files.reduce((sum, f) => sum + f.size, 0)
    expect(relay.bytesToClient).to.be.greaterThan(total)
    expect(relay.connections).to.be.greaterThan(0)
    expect(relay.perConnection.reduce((sum, c) => sum + c.bytesToClient, 0)).to.equal(relay.bytesToClient)
  })

  it('limit_rate caps each connection (a lower bound on the time only)', async () => {
    const server = await nginx({tls: true, limitRateBytesPerSec: 2_000_000})
    const t0 = performance.now()
    const res = await get(`${server.url}/blobs/${MODEL}/weights/model-00001-of-00002.safetensors`, {Range: 'bytes=0-999999'}, makeTestCertificate().cert)
    expect(res.body.length).to.equal(1_000_000)
    expect(performance.now() - t0).to.be.greaterThan(350)
  })

  it('an unknown model gets the JSON 404 envelope, and ms-resume exits 5 with E_NOT_FOUND', async () => {
    const server = await nginx()
    const res = await runCli(['pull', 'infra/no-such-model', '--endpoint', server.url, '--local-dir', path.join(home, 'out')], {env: testEnv(home)})
    expect(res.code, res.stderr).to.equal(5)
    expect(res.stderr).to.contain('[E_NOT_FOUND]')
  })

  it('stop() ends nginx: the process is gone and the port refuses', async () => {
    const server = await Nginx.start({root})
    const pid = server.pid!
    await server.stop()
    expect(() => process.kill(pid, 0)).to.throw()
    const refused = await new Promise<string>((resolve) => {
      const s = net.connect(server.port, '127.0.0.1', () => resolve('connected'))
      s.on('error', (e: NodeJS.ErrnoException) => resolve(e.code ?? 'error'))
    })
    expect(refused).to.equal('ECONNREFUSED')
  })
})
