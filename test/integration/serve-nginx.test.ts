import {type ChildProcess, spawn, spawnSync} from 'node:child_process'
import fs from 'node:fs/promises'
import path from 'node:path'

import {expect} from 'chai'

import {type EmulatorFileSpec, HubEmulator} from '../support/emulator.js'
import {REPO_ROOT, makeTmpDir, runCli, testEnv} from '../support/cli.js'
import {skipBecause, waitUntil} from '../support/process.js'
import {type ServeRun, connect, downloadTarget, freePort, request, startServe, stopServe} from '../support/serve.js'

const MODEL = 'acme/sliced'
const MiB = 1024 * 1024
const FILES: EmulatorFileSpec[] = [
  {path: 'config.json', content: '{"layers": 3}\n'},
  {path: 'empty.txt', content: ''},
  // Three 8 MiB slices and a bit: the last slice is short.
  {path: 'model.safetensors', size: 20 * MiB + 5},
  {path: 'tokenizer/vocab.txt', size: 100_000},
]

/**
 * The nginx block of docs/serve.md, run as written with only its paths and ports replaced: the
 * documented configuration is the tested one.
 */
async function documentedConfig(dir: string, listenPort: number, serveUrl: string): Promise<string> {
  const doc = await fs.readFile(path.join(REPO_ROOT, 'docs', 'serve.md'), 'utf8')
  const block = /```nginx\n([\s\S]*?)```/.exec(doc)?.[1]
  expect(block, 'docs/serve.md has an ```nginx block').to.be.a('string')
  const serve = new URL(serveUrl)
  const replacements: Array<[string, string]> = [
    ['/var/cache/nginx/ms-resume', path.join(dir, 'cache')],
    ['server 127.0.0.1:8090;', `server 127.0.0.1:${serve.port};`],
    ['listen 8080;', `listen 127.0.0.1:${listenPort};`],
  ]
  let snippet = block!
  for (const [from, to] of replacements) {
    expect(snippet, `the documented config still contains ${from}`).to.contain(from)
    snippet = snippet.replaceAll(from, to)
  }
  const t = (name: string) => path.join(dir, 'tmp', name)
  return `${process.getuid?.() === 0 ? 'user root root;\n' : ''}daemon off;
worker_processes 2;
pid ${path.join(dir, 'nginx.pid')};
error_log ${path.join(dir, 'error.log')} info;
events { worker_connections 256; }
http {
  log_format cachelog '$request_uri|$status|$upstream_cache_status|$http_range';
  access_log ${path.join(dir, 'access.log')} cachelog;
  client_body_temp_path ${t('body')};
  proxy_temp_path ${t('proxy')};
  fastcgi_temp_path ${t('fastcgi')};
  uwsgi_temp_path ${t('uwsgi')};
  scgi_temp_path ${t('scgi')};
${snippet}
}
`
}

/** nginx in the foreground under `dir`; resolves once it accepts connections. */
async function startNginx(dir: string, serveUrl: string): Promise<{child: ChildProcess; url: string}> {
  for (let attempt = 1; ; attempt++) {
    // nginx cannot listen on port 0: take a port the kernel just gave out, and retry if it was
    // taken again before nginx bound it.
    const port = await freePort()
    const conf = path.join(dir, 'nginx.conf')
    await fs.writeFile(conf, await documentedConfig(dir, port, serveUrl))
    const child = spawn('nginx', ['-p', dir, '-c', conf, '-e', path.join(dir, 'error.log')], {stdio: ['ignore', 'ignore', 'pipe']})
    let stderr = ''
    child.stderr!.on('data', (d) => (stderr += d))
    const url = `http://127.0.0.1:${port}`
    try {
      await waitUntil(async () => {
        if (child.exitCode !== null) throw new Error(`nginx exited (${child.exitCode}): ${stderr}${await fs.readFile(path.join(dir, 'error.log'), 'utf8').catch(() => '')}`)
        return connect(url).then((s) => {
          s.destroy()
          return true
        }, () => false)
      }, 'nginx to listen', 15_000, 50)
      return {child, url}
    } catch (error) {
      child.kill('SIGKILL')
      if (attempt >= 3) throw error
    }
  }
}

describe('serve behind nginx (proxy_cache + slice), as docs/serve.md configures it', function () {
  this.timeout(120_000)
  let emu: HubEmulator | undefined
  let home: string | undefined
  let serve: ServeRun | undefined
  let nginx: ChildProcess | undefined

  before(function () {
    const probe = spawnSync('nginx', ['-v'])
    if (probe.error) skipBecause(this, `nginx is not installed (apt-get install nginx-light): ${probe.error.message}`)
  })
  afterEach(async () => {
    if (nginx && nginx.exitCode === null) {
      const exited = new Promise((resolve) => nginx!.once('exit', resolve))
      nginx.kill('SIGTERM')
      await exited
    }
    await stopServe(serve)
    await emu?.stop()
    if (home) await fs.rm(home, {recursive: true, force: true})
  })

  it('two pulls through nginx are byte-exact, and serve sees each byte of each file once', async () => {
    emu = await HubEmulator.start({models: [{id: MODEL, files: FILES}]})
    home = await makeTmpDir()
    const filled = await runCli(['pull', MODEL, '--endpoint', emu.url], {env: testEnv(home)})
    expect(filled.code, filled.stderr).to.equal(0)
    serve = await startServe([], testEnv(home))
    const nginxDir = path.join(home, 'nginx')
    await fs.mkdir(path.join(nginxDir, 'tmp'), {recursive: true})
    const started = await startNginx(nginxDir, serve.url)
    nginx = started.child

    const downloads = (p: string) => serve!.access().filter((e) => e.route === 'download' && e.path === p)
    const nonEmpty = FILES.filter((f) => emu!.sizeOf(MODEL, f.path) > 0)
    const pullThroughNginx = async (out: string) => {
      const res = await runCli(['pull', MODEL, '--endpoint', started.url, '--local-dir', out], {env: testEnv(home!)})
      expect(res.code, res.stderr).to.equal(0)
      for (const f of FILES) expect((await fs.readFile(path.join(out, ...f.path.split('/')))).equals(emu!.contentOf(MODEL, f.path)), f.path).to.equal(true)
    }

    await pullThroughNginx(path.join(home, 'first'))
    // serve saw every byte of every file exactly once: slices that tile [0, size) without overlap.
    await waitUntil(async () => nonEmpty.every((f) => downloads(f.path).reduce((n, e) => n + Number(e.bytes), 0) >= emu!.sizeOf(MODEL, f.path)), 'serve\'s access lines', 10_000)
    const seen = new Map<string, number>()
    for (const f of nonEmpty) {
      const size = emu!.sizeOf(MODEL, f.path)
      const lines = downloads(f.path)
      const spans = lines.map((e) => {
        expect(e.status, f.path).to.equal(206)
        expect(e.complete, f.path).to.equal(true)
        const m = /^bytes=(\d+)-(\d+)$/.exec(String(e.range))
        expect(m, `${f.path}: a slice range, got ${String(e.range)}`).to.not.equal(null)
        return {start: Number(m![1]), bytes: Number(e.bytes)}
      }).sort((a, b) => a.start - b.start)
      let next = 0
      for (const s of spans) {
        expect(s.start, `${f.path}: slices tile the file`).to.equal(next)
        next += s.bytes
      }
      expect(next, f.path).to.equal(size)
      expect(spans.length, f.path).to.equal(Math.ceil(size / (8 * MiB)))
      seen.set(f.path, lines.length)
    }

    await pullThroughNginx(path.join(home, 'second'))
    // A client Range is cut from the cached slices too.
    const big = 'model.safetensors'
    const mid = await request(started.url, downloadTarget(MODEL, big), {headers: {Range: 'bytes=9000000-9000099'}})
    expect(mid.status).to.equal(206)
    expect(mid.body.equals(emu.contentOf(MODEL, big).subarray(9_000_000, 9_000_100))).to.equal(true)
    expect(mid.headers.etag).to.equal(`"${emu.sha256Of(MODEL, big)}"`)
    // Any request nginx made to serve would have finished before the client got its last byte;
    // give serve's log line a moment to cross the pipe, then count.
    await new Promise((resolve) => setTimeout(resolve, 500))
    for (const f of nonEmpty) expect(downloads(f.path), `${f.path}: nothing new at serve`).to.have.length(seen.get(f.path)!)
    const log = (await fs.readFile(path.join(nginxDir, 'access.log'), 'utf8')).trim().split('\n').map((l) => l.split('|'))
    const secondPullFiles = log.filter(([uri]) => uri.includes('/repo?')).slice(-nonEmpty.length - 1)
    for (const [uri, status, cache] of secondPullFiles) {
      expect(status, uri).to.equal('206')
      expect(cache, uri).to.equal('HIT')
    }
  })
})
