import {type ChildProcess, spawn} from 'node:child_process'
import fs from 'node:fs/promises'
import net from 'node:net'
import os from 'node:os'
import path from 'node:path'

/**
 * nginx (Debian's nginx-light) as our own child process, serving a static hub tree written by
 * test/support/static-hub.ts: the CDN of the benchmark, and a server no Node code of ours is part of.
 * Everything it writes (config, pid, logs, temp dirs) lives in its own temp prefix; `stop()` ends it,
 * and so does this process's exit. Plain Node: tests and scripts both use it.
 *
 * Routes (as src/hub/modelscope asks them):
 *   /api/v1/models/{o}/{n}                    hub/{o}/{n}/probe.json
 *   /api/v1/models/{o}/{n}/revisions          hub/{o}/{n}/revisions.json
 *   /api/v1/models/{o}/{n}/repo/files?...     hub/{o}/{n}/files.json (Revision, Root ignored)
 *   /api/v1/models/{o}/{n}/repo?FilePath=P    302 to /blobs/{o}/{n}/P (relative, so it works behind a relay)
 *   /blobs/...                                the files: Range, If-Range, ETag as nginx does them
 * Unknown models answer 404 with a JSON envelope.
 */
export const NGINX_BIN = process.env.MSR_NGINX ?? '/usr/sbin/nginx'

export interface NginxOptions {
  /** The static hub tree. */
  root: string
  /** Serve HTTPS with this certificate (test/support/tls.ts). */
  tls?: {certPath: string; keyPath: string}
  /** nginx `limit_rate` on /blobs/: bytes per second for each request (so, each connection). */
  limitRateBytesPerSec?: number
  /** Log every request to `<prefix>/access.log` (read it with `accessLog()`). */
  accessLog?: boolean
}

export interface AccessEntry {
  /** Unix time in ms when the request finished. */
  timeMs: number
  status: number
  /** Body bytes sent (short when the client went away). */
  bodyBytes: number
  method: string
  uri: string
  range: string | undefined
  /** nginx's connection serial number, and the request's index on it (1 = a fresh connection). */
  connection: number
  connectionRequests: number
}

function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = net.createServer()
    s.once('error', reject)
    s.listen(0, '127.0.0.1', () => {
      const {port} = s.address() as net.AddressInfo
      s.close(() => resolve(port))
    })
  })
}

/** A path as an nginx string (a space or `;` in a temp dir would otherwise end the directive). */
function q(p: string): string {
  if (/["\\$\n]/.test(p)) throw new Error(`nginx config cannot hold this path: ${JSON.stringify(p)}`)
  return `"${p}"`
}

function config(o: NginxOptions, prefix: string, port: number): string {
  const root = path.resolve(o.root)
  const tls = o.tls
    ? `ssl_certificate ${q(o.tls.certPath)};\n    ssl_certificate_key ${q(o.tls.keyPath)};\n    ssl_session_cache shared:msr:1m;\n    ssl_session_timeout 1h;`
    : ''
  const rate = o.limitRateBytesPerSec ? `limit_rate ${Math.round(o.limitRateBytesPerSec)};` : ''
  const notFound = `error_page 404 @api404;`
  return `daemon off;
master_process off;
worker_processes 1;
pid ${q(`${prefix}/nginx.pid`)};
error_log ${q(`${prefix}/error.log`)} warn;
events { worker_connections 4096; }
http {
  types { application/json json; }
  default_type application/octet-stream;
  log_format msr '$msec\\t$status\\t$body_bytes_sent\\t$request_method\\t$request_uri\\t$http_range\\t$connection\\t$connection_requests';
  access_log ${o.accessLog ? `${q(`${prefix}/access.log`)} msr` : 'off'};
  client_body_temp_path ${q(`${prefix}/tmp/body`)};
  proxy_temp_path ${q(`${prefix}/tmp/proxy`)};
  fastcgi_temp_path ${q(`${prefix}/tmp/fastcgi`)};
  uwsgi_temp_path ${q(`${prefix}/tmp/uwsgi`)};
  scgi_temp_path ${q(`${prefix}/tmp/scgi`)};
  sendfile on;
  tcp_nopush on;
  tcp_nodelay on;
  keepalive_timeout 75s;
  keepalive_requests 1000000;
  absolute_redirect off;
  server_tokens off;
  server {
    listen 127.0.0.1:${port}${o.tls ? ' ssl' : ''};
    ${tls}
    root ${q(root)};
    location ~ ^/api/v1/models/([^/]+)/([^/]+)/repo/files$ { ${notFound} try_files /hub/$1/$2/files.json =404; }
    location ~ ^/api/v1/models/([^/]+)/([^/]+)/revisions$ { ${notFound} try_files /hub/$1/$2/revisions.json =404; }
    location ~ ^/api/v1/models/([^/]+)/([^/]+)/repo$ { return 302 /blobs/$1/$2/$arg_FilePath; }
    location ~ ^/api/v1/models/([^/]+)/([^/]+)$ { ${notFound} try_files /hub/$1/$2/probe.json =404; }
    location /blobs/ { ${rate} }
    location /hub/ { internal; }
    location @api404 {
      default_type application/json;
      return 404 '{"Code":404,"Data":null,"Message":"not found","RequestId":"nginx","Success":false}';
    }
  }
}
`
}

const running = new Set<ChildProcess>()
process.once('exit', () => {
  for (const child of running) child.kill('SIGKILL')
})

export class Nginx {
  private constructor(
    private readonly child: ChildProcess,
    readonly port: number,
    readonly prefix: string,
    readonly url: string,
  ) {}

  static async start(o: NginxOptions): Promise<Nginx> {
    const prefix = await fs.mkdtemp(path.join(os.tmpdir(), 'msr-nginx-'))
    await fs.mkdir(path.join(prefix, 'tmp'))
    let lastError = ''
    // The port is free when asked and taken when nginx binds: another process may win in between.
    for (let attempt = 0; attempt < 5; attempt++) {
      const port = await freePort()
      const conf = path.join(prefix, 'nginx.conf')
      await fs.writeFile(conf, config(o, prefix, port))
      const child = spawn(NGINX_BIN, ['-p', `${prefix}/`, '-c', conf, '-e', `${prefix}/error.log`], {stdio: ['ignore', 'ignore', 'pipe']})
      let stderr = ''
      child.stderr!.on('data', (d) => (stderr += d))
      const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()))
      child.once('error', (e) => (stderr += String(e)))
      running.add(child)
      child.once('exit', () => running.delete(child))
      if (await listening(port, exited)) return new Nginx(child, port, prefix, `${o.tls ? 'https' : 'http'}://127.0.0.1:${port}`)
      child.kill('SIGKILL')
      await exited
      lastError = `${stderr}${await fs.readFile(path.join(prefix, 'error.log'), 'utf8').catch(() => '')}`.trim()
      if (!/in use/.test(lastError)) break
    }
    await fs.rm(prefix, {recursive: true, force: true})
    throw new Error(`nginx (${NGINX_BIN}) did not start: ${lastError.slice(-600)}`)
  }

  get pid(): number | undefined {
    return this.child.pid
  }

  /** Every request logged so far (needs `accessLog: true`). */
  async accessLog(): Promise<AccessEntry[]> {
    const text = await fs.readFile(path.join(this.prefix, 'access.log'), 'utf8').catch(() => '')
    return text
      .split('\n')
      .filter((l) => l !== '')
      .map((line) => {
        const [msec, status, body, method, uri, range, conn, reqs] = line.split('\t')
        return {
          timeMs: Math.round(Number(msec) * 1000),
          status: Number(status),
          bodyBytes: Number(body),
          method,
          uri,
          range: range === '-' ? undefined : range,
          connection: Number(conn),
          connectionRequests: Number(reqs),
        }
      })
  }

  /** Forgets the access log (between benchmark runs). */
  async clearAccessLog(): Promise<void> {
    await fs.truncate(path.join(this.prefix, 'access.log')).catch(() => undefined)
  }

  async stop(): Promise<void> {
    if (this.child.exitCode === null && this.child.signalCode === null) {
      const exited = new Promise((resolve) => this.child.once('exit', resolve))
      this.child.kill('SIGTERM')
      const timer = setTimeout(() => this.child.kill('SIGKILL'), 5000)
      await exited
      clearTimeout(timer)
    }
    await fs.rm(this.prefix, {recursive: true, force: true})
  }
}

/** Resolves true once `port` accepts a TCP connection, false if nginx exits first (or 10 s pass). */
async function listening(port: number, exited: Promise<void>): Promise<boolean> {
  let gone = false
  void exited.then(() => (gone = true))
  const deadline = Date.now() + 10_000
  while (!gone && Date.now() < deadline) {
    const ok = await new Promise<boolean>((resolve) => {
      const s = net.connect(port, '127.0.0.1')
      s.once('connect', () => {
        s.destroy()
        resolve(true)
      })
      s.once('error', () => resolve(false))
    })
    if (ok && !gone) return true
    await new Promise((r) => setTimeout(r, 20))
  }
  return false
}
