import path from 'node:path'

import {downloadUrl} from '../../test/support/static-hub.js'
import {BIG_MIB, EDGE_BPS, EDGE_MIB, EDGE_RTT_MS, LOSSY_BPS, LOSSY_DROP_BYTES, LOSSY_MIB, LOSSY_RTT_MS, MiB, ROUNDS, THROTTLED_BPS, THROTTLED_MIB, WORK} from './config.js'
import {measure} from './measure.js'
import {type Spread, type Tool, compare, rows, spread} from './report.js'
import {HAVE_ARIA2, HAVE_CURL, aria2c, curl, fresh, log, msResume, startCdn} from './tools.js'

/** Large-file scenarios: one file from nginx, on loopback or through the relay. */

const FILE = 'model.safetensors'
const opts = {rounds: ROUNDS, log}
const mb = (bps: number) => `${bps / 1e6} MB/s`

/** (a) 1 GiB on loopback, unthrottled: against curl (no hash) and aria2c (hash after download). */
export async function big(): Promise<void> {
  const cdn = await startCdn({model: {id: 'bench/big', files: [{path: FILE, size: BIG_MIB * MiB}]}})
  try {
    const dir = path.join(WORK, 'big')
    const url = downloadUrl(cdn.endpoint, cdn.model.id, FILE)
    const sha = cdn.model.files[0].sha256
    const tools: Tool[] = [{name: 'ms-resume', before: fresh(dir), run: () => msResume(['pull', cdn.model.id, '--endpoint', cdn.endpoint, '--local-dir', dir]), target: '<= 1.3 x curl; <= 0.5 x aria2c --checksum'}]
    if (HAVE_CURL) tools.push({name: 'curl -o (no hash)', before: fresh(dir), run: () => curl(['-o', path.join(dir, FILE), url])})
    // What the disk allows a download that is durable when it ends, as ms-resume's are (its data is
    // fsynced before the journal claims it and before the rename): curl's file, then fdatasync.
    if (HAVE_CURL) {
      tools.push({
        name: 'curl -o, then fdatasync (durable, no hash)', before: fresh(dir),
        run: () => measure('sh', ['-c', 'curl -s -f -L -o "$1" "$2" && sync -d "$1"', 'sh', path.join(dir, FILE), url], {cwd: WORK}),
      })
    }
    if (HAVE_ARIA2) tools.push({name: 'aria2c --checksum', before: fresh(dir), run: () => aria2c(['-d', dir, '-o', FILE, `--checksum=sha-256=${sha}`, url])})
    const scenario = `${BIG_MIB} MiB, loopback`
    const added = await compare(scenario, tools, HAVE_CURL ? 'curl -o (no hash)' : undefined, opts)
    const ms = added.find((r) => r.tool === 'ms-resume')!
    const aria = added.find((r) => r.tool === 'aria2c --checksum')
    if (aria) rows.push({...ms, tool: 'ms-resume vs aria2c --checksum', baseline: aria.tool, ratio: ms.seconds / aria.seconds, target: '<= 0.5', extra: ''})
    const durable = added.find((r) => r.tool.startsWith('curl -o, then fdatasync'))
    if (durable) rows.push({...ms, tool: 'ms-resume vs curl -o + fdatasync', baseline: durable.tool, ratio: ms.seconds / durable.seconds, target: '(no target: the disk\'s share)', extra: ''})
  } finally {
    await cdn.stop()
  }
}

/** (b) Loopback with nginx's limit_rate per connection: 8 connections each. */
export async function throttled(): Promise<void> {
  const cdn = await startCdn({model: {id: 'bench/throttled', files: [{path: FILE, size: THROTTLED_MIB * MiB}]}, limitRateBytesPerSec: THROTTLED_BPS})
  try {
    const dir = path.join(WORK, 'throttled')
    const url = downloadUrl(cdn.endpoint, cdn.model.id, FILE)
    const tools: Tool[] = [{name: 'ms-resume --connections 8', before: fresh(dir), run: () => msResume(['pull', cdn.model.id, '--endpoint', cdn.endpoint, '--local-dir', dir, '--connections', '8']), target: '<= 1.0 x aria2c -x8 -s8'}]
    if (HAVE_ARIA2) tools.push({name: 'aria2c -x8 -s8', before: fresh(dir), run: () => aria2c(['-x8', '-s8', '-k1M', '-d', dir, '-o', FILE, url])})
    await compare(`${THROTTLED_MIB} MiB, loopback, ${mb(THROTTLED_BPS)} per connection`, tools, HAVE_ARIA2 ? 'aria2c -x8 -s8' : undefined, opts)
  } finally {
    await cdn.stop()
  }
}

/**
 * (c) An edge link: TLS, a round trip through the relay, nginx's limit_rate per connection. Automatic
 * connections are judged by what the relay counted: aria2c's connections + 4 at most.
 */
export async function edge(): Promise<void> {
  const cdn = await startCdn({
    model: {id: 'bench/edge', files: [{path: FILE, size: EDGE_MIB * MiB}]},
    tls: true,
    limitRateBytesPerSec: EDGE_BPS,
    relay: {rttMs: EDGE_RTT_MS},
  })
  try {
    const relay = cdn.relay!
    const dir = path.join(WORK, 'edge')
    const url = downloadUrl(cdn.endpoint, cdn.model.id, FILE)
    const before = async () => {
      await fresh(dir)()
      relay.resetCounters()
    }
    const observe = () => ({connections: relay.connections, concurrent: relay.maxConcurrent})
    const extra = (m: Record<string, Spread>) => `${spread(m.connections)} connections, ${spread(m.concurrent)} at once`
    const tools: Tool[] = [{
      name: 'ms-resume (automatic connections)', before, observe, extra, target: '<= 1.0 x aria2c -x8; connections <= aria2c + 4',
      run: () => msResume(['pull', cdn.model.id, '--endpoint', cdn.endpoint, '--local-dir', dir], {env: {...process.env, NODE_EXTRA_CA_CERTS: cdn.certPath}}),
    }]
    if (HAVE_ARIA2) tools.push({name: 'aria2c -x8 -s8', before, observe, extra, run: () => aria2c(['-x8', '-s8', `--ca-certificate=${cdn.certPath}`, '-d', dir, '-o', FILE, url])})
    await compare(`${EDGE_MIB} MiB, edge link: TLS, ${EDGE_RTT_MS} ms RTT, ${mb(EDGE_BPS)} per connection`, tools, HAVE_ARIA2 ? 'aria2c -x8 -s8' : undefined, opts)
  } finally {
    await cdn.stop()
  }
}

/**
 * (d) A lossy link (issue 16): every connection is closed after LOSSY_DROP_BYTES, behind a round
 * trip, at a per-connection rate. What matters besides time: the bytes sent over the link per byte
 * of the file (a client that throws away what it received pays it again).
 */
export async function lossy(): Promise<void> {
  const size = Math.round(LOSSY_MIB * MiB)
  const cdn = await startCdn({
    model: {id: 'bench/lossy', files: [{path: FILE, size}]},
    limitRateBytesPerSec: LOSSY_BPS,
    relay: {rttMs: LOSSY_RTT_MS, dropAfterBytes: LOSSY_DROP_BYTES},
  })
  try {
    const relay = cdn.relay!
    const dir = path.join(WORK, 'lossy')
    const url = downloadUrl(cdn.endpoint, cdn.model.id, FILE)
    const before = async () => {
      await fresh(dir)()
      relay.resetCounters()
    }
    const observe = () => ({bytesRatio: relay.bytesToClient / size, connections: relay.connections})
    const extra = (m: Record<string, Spread>) => `${spread(m.bytesRatio, 2)} x the file relayed, ${spread(m.connections)} connections`
    const tools: Tool[] = [{
      name: 'ms-resume', before, observe, extra, target: '<= 1.1 x aria2c; bytes <= 1.02 x file',
      run: () => msResume(['pull', cdn.model.id, '--endpoint', cdn.endpoint, '--local-dir', dir]),
    }]
    if (HAVE_ARIA2) {
      tools.push({
        name: 'aria2c -x1 (retries forever)', before, observe, extra,
        run: () => aria2c(['-x1', '-s1', '--max-tries=0', '--retry-wait=0', '-d', dir, '-o', FILE, url]),
      })
    }
    const kb = Math.round(LOSSY_DROP_BYTES / 1000)
    await compare(`${LOSSY_MIB} MiB, lossy link: ${LOSSY_RTT_MS} ms RTT, ${mb(LOSSY_BPS)}, drop every ${kb} KB`, tools, HAVE_ARIA2 ? 'aria2c -x1 (retries forever)' : undefined, opts)
  } finally {
    await cdn.stop()
  }
}
