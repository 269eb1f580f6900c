import {execFile} from 'node:child_process'
import fs from 'node:fs/promises'
import http from 'node:http'
import net from 'node:net'
import path from 'node:path'
import {promisify} from 'node:util'
import vm from 'node:vm'

import {expect} from 'chai'

import {BUNDLE_FILE, CODE_CACHE_FILE, sourceText, wrapBundle} from '../../src/cli/launch.js'
import {nativeSha256EngineId} from '../../src/integrity/native-addon.js'
import {HubEmulator} from '../support/emulator.js'
import {REPO_ROOT, makeTmpDir, runCli, testEnv} from '../support/cli.js'
import {pullAndKillWhen, skipBecause} from '../support/process.js'
import {statePaths} from '../support/state-paths.js'

const MODEL = 'acme/startup'
const MiB = 1024 * 1024

/**
 * What the start-up work must not have cost: the built CLI runs from its bundle with a code cache
 * V8 accepts, still finds the native SHA-256 engine (the bundle once broke the addon's lookup and
 * fell back to hash-wasm, 6 x slower, silently), a pull of a complete model writes nothing, and the
 * hub API (axios directly, undici through a proxy) still honours HTTP(S)_PROXY.
 */
describe('start-up: the bundle, the native engine, a no-op pull, proxies', function () {
  this.timeout(60_000)
  let emu: HubEmulator
  let home: string
  afterEach(async () => {
    await emu?.stop()
    await fs.rm(home, {recursive: true, force: true})
  })

  it('the build wrote the bundle and a code cache this Node accepts', async () => {
    home = await makeTmpDir()
    const dist = path.join(REPO_ROOT, 'dist')
    const script = `import('${path.join(dist, 'src', 'cli', 'launch.js')}').then((m) => process.stdout.write(m.loadBundle(${JSON.stringify(path.join(dist, BUNDLE_FILE))}, ${JSON.stringify(path.join(dist, CODE_CACHE_FILE))}).cache))`
    const {stdout} = await promisify(execFile)(process.execPath, ['-e', script])
    expect(stdout).to.equal('used')
  })

  it('the code cache was trained on a pull: it holds far more than the top level a fresh compile caches', async () => {
    home = await makeTmpDir()
    const dist = path.join(REPO_ROOT, 'dist')
    const source = sourceText(await fs.readFile(path.join(dist, BUNDLE_FILE)))
    const topLevel = new vm.Script(wrapBundle(source), {filename: path.join(dist, BUNDLE_FILE)}).createCachedData().length
    const built = (await fs.stat(path.join(dist, CODE_CACHE_FILE))).size
    // Untrained it is the top level's size (plus the build id); trained on a no-op pull, about 4 x.
    expect(built, `${built} bytes, top level alone ${topLevel}`).to.be.greaterThan(2.5 * topLevel)
  })

  it('a pull run from the bundle hashes with the native engine when the addon is built', async function () {
    const engine = nativeSha256EngineId()
    if (!engine) skipBecause(this, 'the native addon is not built (npm install builds it with a C compiler)')
    emu = await HubEmulator.start({models: [{id: MODEL, files: [{path: 'w.bin', size: 12 * MiB}]}], rateLimitBytesPerSec: 4 * MiB})
    home = await makeTmpDir()
    const dir = path.join(home, 'out')
    const doc = await pullAndKillWhen(['pull', MODEL, '--endpoint', emu.url, '--local-dir', dir], testEnv(home), dir, (d) => Boolean(d.files['w.bin']?.sha256State))
    expect(doc.files['w.bin'].sha256State!.engine).to.equal(engine)
  })

  it('a pull run from the bundle with MS_RESUME_SHA256_ENGINE=wasm saves hash-wasm states and resumes on them (hash-wasm is not in the bundle)', async () => {
    emu = await HubEmulator.start({models: [{id: MODEL, files: [{path: 'w.bin', size: 12 * MiB}]}], rateLimitBytesPerSec: 4 * MiB})
    home = await makeTmpDir()
    const dir = path.join(home, 'out')
    const env = {...testEnv(home), MS_RESUME_SHA256_ENGINE: 'wasm'}
    const args = ['pull', MODEL, '--endpoint', emu.url, '--local-dir', dir]
    const doc = await pullAndKillWhen(args, env, dir, (d) => Boolean(d.files['w.bin']?.sha256State))
    expect(doc.files['w.bin'].sha256State!.engine).to.match(/^hash-wasm-\d/)
    const res = await runCli([...args, '--json'], {env})
    expect(res.code, res.stderr).to.equal(0)
    // Resumed (not started over), and verified before it was placed (exit 0).
    expect(res.stdout).to.contain('"type":"resume"')
    expect((await fs.stat(path.join(dir, 'w.bin'))).size).to.equal(12 * MiB)
  })

  it('a pull of a complete model writes nothing: journal, manifest and the Python index keep their inodes and times', async () => {
    emu = await HubEmulator.start({models: [{id: MODEL, files: [{path: 'config.json', content: '{"a": 1}\n'}, {path: 'w.bin', size: 2 * MiB + 3}, {path: 'sub/t.json', size: 70_000}]}]})
    home = await makeTmpDir()
    const env = testEnv(home)
    const args = ['pull', MODEL, '--endpoint', emu.url]
    expect((await runCli(args, {env})).code).to.equal(0)
    const modelDir = path.join(home, 'cache', 'models', 'acme', 'startup')
    const state = statePaths(modelDir)
    const watched = [state.journal, state.journalLog, state.manifest, ...['.msc', '.mdl', '.mv'].map((n) => path.join(modelDir, n))]
    const before = await Promise.all(watched.map((f) => fs.stat(f).then((s) => `${s.ino}:${s.mtimeMs}:${s.size}`, () => 'absent')))
    expect(before.filter((b) => b !== 'absent').length, 'journal, manifest and index there').to.be.at.least(5)
    const logFrom = emu.log.length
    const res = await runCli([...args, '--json'], {env})
    expect(res.code, res.stderr).to.equal(0)
    const after = await Promise.all(watched.map((f) => fs.stat(f).then((s) => `${s.ino}:${s.mtimeMs}:${s.size}`, () => 'absent')))
    expect(after).to.deep.equal(before)
    expect(emu.log.slice(logFrom).filter((e) => e.content), 'no file bytes').to.have.length(0)
    expect(await fs.readdir(state.dir)).not.to.include('lock')
  })

  it('the hub API goes through HTTP_PROXY (a host the proxy resolves); loopback bodies go direct', async () => {
    emu = await HubEmulator.start({models: [{id: MODEL, files: [{path: 'config.json', content: '{"proxied": true}\n'}]}]})
    home = await makeTmpDir()
    const seen: string[] = []
    const port = new URL(emu.url).port
    // A forward proxy that knows one name, hub.test, as the emulator: no DNS, nothing off this machine.
    const target = (host: string) => (host.startsWith('hub.test:') ? {host: '127.0.0.1', port: Number(port)} : undefined)
    const proxy = http.createServer((req, res) => {
      seen.push(`${req.method} ${req.url}`)
      const url = new URL(req.url!)
      const to = target(url.host)
      if (!to) return res.writeHead(502).end()
      const upstream = http.request({host: to.host, port: to.port, method: req.method, path: `${url.pathname}${url.search}`, headers: {...req.headers, host: `127.0.0.1:${port}`}}, (up) => {
        res.writeHead(up.statusCode!, up.headers)
        up.pipe(res)
      })
      req.pipe(upstream)
    })
    proxy.on('connect', (req, socket) => {
      seen.push(`CONNECT ${req.url}`)
      const to = target(req.url!)
      if (!to) return socket.end('HTTP/1.1 502 Bad Gateway\r\n\r\n')
      const upstream = net.connect(to.port, to.host, () => {
        socket.write('HTTP/1.1 200 Connection Established\r\n\r\n')
        upstream.pipe(socket)
        socket.pipe(upstream)
      })
      upstream.on('error', () => socket.destroy())
      socket.on('error', () => upstream.destroy())
    })
    await new Promise<void>((resolve) => proxy.listen(0, '127.0.0.1', resolve))
    try {
      const proxyUrl = `http://127.0.0.1:${(proxy.address() as net.AddressInfo).port}`
      const dir = path.join(home, 'out')
      const res = await runCli(['pull', MODEL, '--endpoint', `http://hub.test:${port}`, '--local-dir', dir], {env: testEnv(home, {HTTP_PROXY: proxyUrl, http_proxy: proxyUrl})})
      expect(res.code, res.stderr).to.equal(0)
      expect(await fs.readFile(path.join(dir, 'config.json'), 'utf8')).to.equal('{"proxied": true}\n')
      // hub.test has no address but the proxy's: the listing could only have come through it.
      expect(seen.some((s) => s.includes('hub.test')), seen.join('\n')).to.equal(true)
    } finally {
      proxy.closeAllConnections()
      await new Promise((resolve) => proxy.close(resolve))
    }
  })
})
