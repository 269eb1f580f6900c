/**
 * `npm run bench`: ms-resume side by side with the tools people use instead, on 127.0.0.1, with
 * nginx (Debian's nginx-light, our own process) as the hub and CDN and a relay in front of it for
 * long and lossy links. Method, knobs and targets: BENCHMARKS.md.
 *
 *   npm run bench                        the default scenarios, 3 alternating rounds, medians
 *   npm run bench -- --quick             small sizes, 1 round (a smoke run)
 *   npm run bench -- edge lossy          only these scenarios (scale runs only when named)
 *   npm run bench -- --keep              keep the generated CDN files for the next run
 *   BENCH_RUNS=5 BENCH_BIG_MIB=2048 npm run bench -- big
 */
import fs from 'node:fs/promises'
import os from 'node:os'

import {NGINX_BIN} from '../test/support/nginx.js'
import {CDN_ROOT, KEEP, QUICK, ROUNDS, WANTED, WORK} from './bench/config.js'
import {edge, big, lossy, throttled} from './bench/transfer.js'
import {many, noop, resume, scale} from './bench/fixed-costs.js'
import {has, HAVE_GNU_TIME} from './bench/measure.js'
import {table} from './bench/report.js'
import {HAVE_ARIA2, HAVE_CURL, log} from './bench/tools.js'
import {verify} from './bench/verify.js'

const scenarios: Record<string, () => Promise<void>> = {big, throttled, edge, lossy, many, noop, resume, verify, scale}
const byDefault = ['big', 'throttled', 'edge', 'lossy', 'many', 'noop', 'resume', 'verify']
const unknown = WANTED.filter((w) => !(w in scenarios))
if (unknown.length > 0) {
  log(`unknown scenario ${unknown.join(', ')}; pick from: ${Object.keys(scenarios).join(' ')}`)
  process.exit(2)
}
if (!has(NGINX_BIN)) {
  log(`nginx (${NGINX_BIN}) is needed as the hub and CDN: apt-get install nginx-light (or set MSR_NGINX).`)
  process.exit(2)
}

await fs.mkdir(WORK, {recursive: true})
const cpu = os.cpus()[0]?.model ?? 'unknown CPU'
log(`ms-resume bench: ${os.cpus().length} cores (${cpu}), node ${process.version}, ${ROUNDS} round(s)${QUICK ? ', quick sizes' : ''}; aria2c ${HAVE_ARIA2 ? 'yes' : 'not installed'}, curl ${HAVE_CURL ? 'yes' : 'no'}, GNU time ${HAVE_GNU_TIME ? 'yes' : 'no (no RSS, no CPU)'}; work dir ${WORK}`)
const load0 = os.loadavg()
try {
  for (const name of WANTED.length > 0 ? WANTED : byDefault) {
    log(`${name}:`)
    try {
      await scenarios[name]()
    } catch (error) {
      log(`  ${name} did not run: ${error instanceof Error ? error.message : String(error)}`)
    }
  }
} finally {
  if (KEEP) {
    for (const entry of await fs.readdir(WORK)) if (`${WORK}/${entry}` !== CDN_ROOT) await fs.rm(`${WORK}/${entry}`, {recursive: true, force: true})
  } else {
    await fs.rm(WORK, {recursive: true, force: true})
  }
}

const load = (l: number[]) => l.map((x) => x.toFixed(1)).join(' ')
process.stdout.write(`${table(`Measured ${new Date().toISOString().slice(0, 10)} on ${os.cpus().length} cores (${cpu}), ${Math.round(os.totalmem() / 1024 ** 3)} GiB, node ${process.version}; load ${load(load0)} before, ${load(os.loadavg())} after; medians of ${ROUNDS} alternating round(s); nginx ${NGINX_BIN} on 127.0.0.1.`)}\n`)
