import http from 'node:http'
import net from 'node:net'

import {startCli} from './cli.js'
import {type JsonEvent, RunningCli} from './process.js'

/** `ms-resume serve --json` on 127.0.0.1, a free port; its NDJSON access log parsed as it comes. */
export interface ServeRun {
  run: RunningCli
  url: string
  /** The access lines seen so far. */
  access(): JsonEvent[]
}

export async function startServe(args: string[], env: NodeJS.ProcessEnv): Promise<ServeRun> {
  const run = new RunningCli(startCli(['serve', '--host', '127.0.0.1', '--port', '0', '--json', ...args], {env}))
  const listening = await run.waitForEvent((e) => e.type === 'listening', 30_000)
  return {run, url: String(listening.url), access: () => run.events.filter((e) => e.type === 'access')}
}

export async function stopServe(s: ServeRun | undefined): Promise<void> {
  if (s && !s.run.exited) await s.run.kill('SIGKILL')
}

export interface Reply {
  status: number
  headers: http.IncomingHttpHeaders
  body: Buffer
}

/** One plain HTTP request; `target` goes on the request line exactly as given (no normalising). */
export function request(base: string, target: string, opts: {method?: string; headers?: Record<string, string>} = {}): Promise<Reply> {
  const u = new URL(base)
  return new Promise((resolve, reject) => {
    const req = http.request({host: u.hostname, port: u.port, method: opts.method ?? 'GET', path: target, headers: opts.headers, agent: false}, (res) => {
      const chunks: Buffer[] = []
      res.on('data', (c: Buffer) => chunks.push(c))
      res.on('end', () => resolve({status: res.statusCode ?? 0, headers: res.headers, body: Buffer.concat(chunks)}))
      res.on('error', reject)
    })
    req.on('error', reject)
    req.end()
  })
}

/** Parsed JSON envelope of a reply. */
export function envelopeOf(r: Reply): {Code: number; Data: any; Message: string; RequestId: string; Success: boolean} {
  return JSON.parse(r.body.toString('utf8'))
}

/** The form encoding the official clients use for Revision and FilePath (`/` as %2F, space as +). */
export function downloadTarget(modelId: string, filePath: string, revision = 'master'): string {
  return `/api/v1/models/${modelId}/repo?${new URLSearchParams({Revision: revision, FilePath: filePath}).toString()}`
}

/** A raw TCP connection to the server, for clients that misbehave on purpose. */
export function connect(base: string): Promise<net.Socket> {
  const u = new URL(base)
  return new Promise((resolve, reject) => {
    const s = net.connect({host: u.hostname, port: Number(u.port)}, () => resolve(s))
    s.once('error', reject)
  })
}

/** A port nothing listens on right now (nginx cannot listen on port 0): bind 0, read it, close. */
export function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = net.createServer()
    srv.once('error', reject)
    srv.listen(0, '127.0.0.1', () => {
      const {port} = srv.address() as net.AddressInfo
      srv.close(() => resolve(port))
    })
  })
}
