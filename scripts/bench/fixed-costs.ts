import {spawn} from 'node:child_process'
import fs from 'node:fs/promises'
import path from 'node:path'

import {downloadUrl} from '../../test/support/static-hub.js'
import {BIN, MANY_FILES, MiB, RESUME_MIB, ROUNDS, SCALE_COUNTS, WORK} from './config.js'
import {type Measured, measure, median} from './measure.js'
import {type Tool, compare, rows} from './report.js'
import {HAVE_ARIA2, aria2c, contentBytesServed, fresh, log, msResume, startCdn} from './tools.js'

/** What users pay on every call: many small files, a no-op pull, a resume, growth with file count. */

const opts = {rounds: ROUNDS, log}
const smallFiles = (n: number, dirs: number) => Array.from({length: n}, (_, i) => ({path: `shards/d${i % dirs}/f${i}.bin`, size: 4096}))
const cpuPerFile = (runs: Measured[], n: number) => {
  const ok = runs.filter((m) => m.code === 0)
  const cpu = median(ok.map((m) => m.cpuSeconds))
  const user = median(ok.map((m) => m.userSeconds))
  return Number.isFinite(cpu) ? `${((cpu / n) * 1000).toFixed(2)} ms CPU per file (user ${((user / n) * 1000).toFixed(2)})` : ''
}

/** (e) 3,000 files of 4 KiB from nginx, against aria2c -j16 on the same hub URLs (302 included). */
export async function many(): Promise<void> {
  const files = smallFiles(MANY_FILES, 30)
  const cdn = await startCdn({model: {id: 'bench/many', files}})
  try {
    const dir = path.join(WORK, 'many')
    const list = path.join(WORK, 'many-urls.txt')
    await fs.writeFile(list, files.map((f) => `${downloadUrl(cdn.endpoint, cdn.model.id, f.path)}\n  out=${f.path}\n`).join(''))
    const tools: Tool[] = [{
      name: 'ms-resume --concurrency 16', before: fresh(dir), target: '<= 0.8 x aria2c -j16; <= 0.5 ms CPU per file; RSS < 150 MiB',
      run: () => msResume(['pull', cdn.model.id, '--endpoint', cdn.endpoint, '--local-dir', dir, '--concurrency', '16']),
      extra: (_m, runs) => cpuPerFile(runs, MANY_FILES),
    }]
    if (HAVE_ARIA2) tools.push({name: 'aria2c -j16', before: fresh(dir), run: () => aria2c(['-j16', '-d', dir, '-i', list]), extra: (_m, runs) => cpuPerFile(runs, MANY_FILES)})
    await compare(`${MANY_FILES} files of 4 KiB`, tools, HAVE_ARIA2 ? 'aria2c -j16' : undefined, opts)
  } finally {
    await cdn.stop()
  }
}

/**
 * The official Python client is not installable here (no PyPI); its no-op snapshot_download of a
 * complete 9-file model took 0.39-0.46 s on these machines (library-notes.md). The ratio to that
 * range, beside the measured ratio to node -e 0.
 */
const PYTHON_NOOP_SECONDS = [0.39, 0.46]
function pythonRatio(runs: Measured[]): string {
  const s = median(runs.filter((m) => m.code === 0).map((m) => m.seconds))
  return Number.isFinite(s) ? `${(s / PYTHON_NOOP_SECONDS[1]).toFixed(2)}-${(s / PYTHON_NOOP_SECONDS[0]).toFixed(2)} x the Python client's 0.39-0.46 s` : ''
}

/** (f) A pull of a model that is complete in the cache (what a training job runs before it starts). */
export async function noop(): Promise<void> {
  const shard = (i: number) => ({path: `model-0000${i}-of-00004.safetensors`, size: MiB + i})
  const files = [
    {path: 'config.json', content: '{"architectures": ["BenchModel"], "hidden_size": 64}\n'},
    {path: 'configuration.json', content: '{"framework": "pytorch", "task": "text-generation"}\n'},
    {path: 'generation_config.json', content: '{"do_sample": true}\n'},
    ...[1, 2, 3, 4].map(shard),
    {path: 'model.safetensors.index.json', content: JSON.stringify({weight_map: Object.fromEntries([1, 2, 3, 4].map((i) => [`layer.${i}`, shard(i).path]))})},
    {path: 'tokenizer.json', size: 64 * 1024},
  ]
  const cdn = await startCdn({model: {id: 'bench/noop', files}})
  try {
    const home = path.join(WORK, 'noop-home')
    await fresh(home)()
    const env = {...process.env, HOME: home, MODELSCOPE_CACHE: path.join(home, 'cache')}
    const args = ['pull', cdn.model.id, '--endpoint', cdn.endpoint]
    const first = await msResume(args, {env})
    if (first.code !== 0) throw new Error(`no-op scenario: the first pull failed (exit ${first.code}): ${first.stderr.slice(-300)}`)
    await compare(`no-op pull of a complete ${files.length}-file model (cache layout)`, [
      {
        name: 'ms-resume pull', run: () => msResume(args, {env}), target: '<= 0.25 s (0.6 x the Python client: 0.39-0.46 s), about 2 x node -e 0',
        extra: (_m, runs) => pythonRatio(runs),
      },
      {name: 'node -e 0', run: () => measure(process.execPath, ['-e', '0'], {cwd: WORK})},
    ], 'node -e 0', opts)
  } finally {
    await cdn.stop()
  }
}

/** Bytes allocated on disk below `dir` (what a pull has written so far; sparse parts count nothing). */
async function allocatedBytes(dir: string): Promise<number> {
  let total = 0
  for (const entry of await fs.readdir(dir, {withFileTypes: true, recursive: true}).catch(() => [])) {
    if (!entry.isFile()) continue
    const st = await fs.stat(path.join(entry.parentPath ?? entry.path, entry.name)).catch(() => undefined)
    total += (st?.blocks ?? 0) * 512
  }
  return total
}

/**
 * SIGKILLs a pull once `fraction` of `size` is written below `dir` (allocated blocks: the tool does
 * not preallocate; its journal's format is its own business). Returns the fraction written then.
 */
async function killAtFraction(args: string[], dir: string, size: number, fraction: number): Promise<number> {
  const child = spawn(process.execPath, [BIN, ...args], {stdio: 'ignore', cwd: WORK})
  const exited = new Promise((resolve) => child.on('exit', resolve))
  let written = 0
  while (child.exitCode === null && child.signalCode === null) {
    await new Promise((r) => setTimeout(r, 20))
    written = await allocatedBytes(dir)
    if (written >= size * fraction) break
  }
  child.kill('SIGKILL')
  await exited
  return written / size
}

/** (g) Resume after a SIGKILL at 90 % of a model-sized file, against a full pull of it. */
export async function resume(): Promise<void> {
  const size = Math.round(RESUME_MIB * MiB)
  const cdn = await startCdn({model: {id: 'bench/resume', files: [{path: 'model.safetensors', size}]}, accessLog: true})
  try {
    const dir = path.join(WORK, 'resume')
    const args = ['pull', cdn.model.id, '--endpoint', cdn.endpoint, '--local-dir', dir, '--quiet']
    const full: Measured[] = []
    const resumed: Measured[] = []
    const killedAt: number[] = []
    const refetched: number[] = []
    for (let round = 0; round < ROUNDS; round++) {
      await fresh(dir)()
      const f = await msResume(args.slice(0, -1))
      await fresh(dir)()
      killedAt.push(await killAtFraction(args, dir, size, 0.9))
      await cdn.nginx.clearAccessLog()
      const r = await msResume(args.slice(0, -1))
      refetched.push(await contentBytesServed(cdn.nginx))
      log(`  resume round ${round + 1}: full pull ${f.seconds.toFixed(2)} s (exit ${f.code}), killed at ${(killedAt[round] * 100).toFixed(0)} % written, resume ${r.seconds.toFixed(2)} s (exit ${r.code}), fetched ${(refetched[round] / MiB).toFixed(0)} MiB`)
      if (f.code === 0) full.push(f)
      if (r.code === 0) resumed.push(r)
    }
    const scenario = `resume after SIGKILL at 90 % of ${RESUME_MIB} MiB`
    const sec = (ms: Measured[]) => median(ms.map((m) => m.seconds))
    const cpu = (ms: Measured[]) => median(ms.map((m) => m.cpuSeconds))
    const rss = (ms: Measured[]) => Math.max(...ms.map((m) => m.rssMiB), 0) || Number.NaN
    rows.push({scenario, tool: 'ms-resume full pull', seconds: sec(full), cpuSeconds: cpu(full), rssMiB: rss(full)})
    rows.push({
      scenario, tool: 'ms-resume resume', seconds: sec(resumed), cpuSeconds: cpu(resumed), rssMiB: rss(resumed),
      baseline: 'ms-resume full pull', ratio: sec(resumed) / sec(full), target: '<= 0.15',
      extra: `killed at ${(median(killedAt) * 100).toFixed(0)} % written; resume fetched ${(median(refetched) / MiB).toFixed(0)} MiB`,
    })
  } finally {
    await cdn.stop()
  }
}

/** (h) CPU and peak RSS against the file count (slow: only when asked for by name). */
export async function scale(): Promise<void> {
  for (const n of SCALE_COUNTS) {
    const cdn = await startCdn({model: {id: `bench/scale-${n}`, files: smallFiles(n, 100)}})
    try {
      const dir = path.join(WORK, 'scale')
      await compare(`${n} files of 4 KiB (scale)`, [{
        name: 'ms-resume --concurrency 16', before: fresh(dir), target: 'RSS < 150 MiB; CPU per file flat',
        run: () => msResume(['pull', cdn.model.id, '--endpoint', cdn.endpoint, '--local-dir', dir, '--concurrency', '16']),
        extra: (_m, runs) => cpuPerFile(runs, n),
      }], undefined, {rounds: 1, log})
    } finally {
      await cdn.stop()
      await fresh(path.join(WORK, 'scale'))()
    }
  }
}
