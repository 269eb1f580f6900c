import fs from 'node:fs/promises'
import path from 'node:path'

import {Nginx} from '../../test/support/nginx.js'
import {Relay, type RelayOptions} from '../../test/support/relay.js'
import {type StaticFileSpec, type StaticModel, writeStaticModel} from '../../test/support/static-hub.js'
import {makeTestCertificate} from '../../test/support/tls.js'
import {BIN, CDN_ROOT, WORK} from './config.js'
import {type Measured, type RunOptions, has, measure} from './measure.js'

export const HAVE_ARIA2 = has('aria2c')
export const HAVE_CURL = has('curl')

export function log(line: string): void {
  process.stderr.write(`${line}\n`)
}

/** The compiled CLI, as users run it. */
export function msResume(args: string[], o: Partial<RunOptions> = {}): Promise<Measured> {
  return measure(process.execPath, [BIN, ...args, '--quiet'], {cwd: WORK, ...o})
}

/** aria2c writing to `dir` as a plain download tool would (no preallocation, overwrite). */
export function aria2c(args: string[], o: Partial<RunOptions> = {}): Promise<Measured> {
  return measure('aria2c', ['-q', '--allow-overwrite=true', '--auto-file-renaming=false', '--file-allocation=none', ...args], {cwd: WORK, ...o})
}

export function curl(args: string[]): Promise<Measured> {
  return measure('curl', ['-s', '-f', '-L', ...args], {cwd: WORK})
}

/** A before() hook: `dir` empty. */
export const fresh = (dir: string) => async (): Promise<void> => {
  await fs.rm(dir, {recursive: true, force: true})
  await fs.mkdir(dir, {recursive: true})
}

export interface Cdn {
  /** What clients use: nginx's URL, or the relay's in front of it. */
  endpoint: string
  nginx: Nginx
  relay?: Relay
  model: StaticModel
  /** The CA file clients need with TLS. */
  certPath?: string
  stop(): Promise<void>
}

/** nginx over a static hub holding `model`, optionally with TLS and a relay in front. */
export async function startCdn(o: {
  model: {id: string; files: StaticFileSpec[]}
  tls?: boolean
  limitRateBytesPerSec?: number
  relay?: Omit<RelayOptions, 'targetPort'>
  accessLog?: boolean
}): Promise<Cdn> {
  const t0 = performance.now()
  const model = await writeStaticModel(CDN_ROOT, o.model)
  const seconds = (performance.now() - t0) / 1000
  if (seconds > 1) log(`  (wrote ${o.model.id} for the CDN in ${seconds.toFixed(1)} s)`)
  const cert = o.tls ? makeTestCertificate(path.join(WORK, 'tls')) : undefined
  const nginx = await Nginx.start({root: CDN_ROOT, tls: cert, limitRateBytesPerSec: o.limitRateBytesPerSec, accessLog: o.accessLog})
  const relay = o.relay ? await Relay.start({targetPort: nginx.port, ...o.relay}) : undefined
  const scheme = o.tls ? 'https' : 'http'
  return {
    endpoint: relay ? relay.url(scheme) : nginx.url,
    nginx,
    relay,
    model,
    certPath: cert?.certPath,
    async stop() {
      await relay?.stop()
      await nginx.stop()
    },
  }
}

/** Sum of body bytes nginx sent for file content since the log was last cleared. */
export async function contentBytesServed(nginx: Nginx): Promise<number> {
  return (await nginx.accessLog()).filter((e) => e.uri.startsWith('/blobs/')).reduce((sum, e) => sum + e.bodyBytes, 0)
}
