/**
 * `npm run bench`: ms-resume side by side with the tools people use instead, on 127.0.0.1 against
 * the project's hub emulator. Tools alternate within each round (so machine noise hits all alike),
 * several rounds, medians, ratios against the baseline. Peak RSS from GNU time.
 *
 *   npm run bench                       all scenarios, 3 rounds
 *   npm run bench -- --quick            small sizes, 1 round (a smoke run)
 *   npm run bench -- big many           only some scenarios: big throttled many resume verify
 *   BENCH_RUNS=5 BENCH_BIG_MIB=2048 BENCH_VERIFY_MIB=1024 npm run bench
 */
import {spawn, spawnSync} from 'node:child_process'
import fs from 'node:fs/promises'
import os from 'node:os'
import path from 'node:path'
import {fileURLToPath} from 'node:url'

import {HubEmulator} from '../test/support/emulator.js'

const MiB = 1024 * 1024
const argv = process.argv.slice(2)
const quick = argv.includes('--quick')
const wanted = argv.filter((a) => !a.startsWith('--'))
const RUNS = Number(process.env.BENCH_RUNS ?? (quick ? 1 : 3))
const BIG_MIB = Number(process.env.BENCH_BIG_MIB ?? (quick ? 128 : 1024))
const THROTTLED_MIB = Number(process.env.BENCH_THROTTLED_MIB ?? (quick ? 32 : 256))
const MANY_FILES = Number(process.env.BENCH_MANY_FILES ?? (quick ? 300 : 3000))
/** Model-sized, so that start-up (about 0.35 s, paid by both levels) does not hide the hashing. */
const VERIFY_MIB = Number(process.env.BENCH_VERIFY_MIB ?? (quick ? 128 : 4096))
const THROTTLE_BPS = 10 * 1000 * 1000
const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..')
const bin = path.join(root, 'bin', 'run.js')
const work = path.join(os.tmpdir(), 'ms-resume-bench')

interface Measured {
  seconds: number
  rssMiB: number
  code: number | null
}

const has = (cmd: string) => spawnSync('sh', ['-c', `command -v ${cmd}`]).status === 0
const HAVE_ARIA2 = has('aria2c')
const HAVE_CURL = has('curl')
const HAVE_GNU_TIME = spawnSync('/usr/bin/time', ['-f', '%M', 'true']).status === 0

/** Runs a command under GNU time (peak RSS), returns wall seconds. */
function measure(cmd: string, args: string[], opts: {cwd?: string} = {}): Promise<Measured> {
  return new Promise((resolve) => {
    const rssFile = path.join(work, `rss-${process.pid}-${Math.random().toString(16).slice(2)}`)
    const [file, fileArgs] = HAVE_GNU_TIME ? ['/usr/bin/time', ['-f', '%M', '-o', rssFile, cmd, ...args]] : [cmd, args]
    const started = performance.now()
    const child = spawn(file, fileArgs, {cwd: opts.cwd ?? work, stdio: ['ignore', 'ignore', 'pipe']})
    let stderr = ''
    child.stderr.on('data', (d) => (stderr += d))
    child.on('close', async (code) => {
      const seconds = (performance.now() - started) / 1000
      let rssMiB = Number.NaN
      if (HAVE_GNU_TIME) {
        rssMiB = Number((await fs.readFile(rssFile, 'utf8').catch(() => '')).trim().split('\n').pop()) / 1024
        await fs.rm(rssFile, {force: true})
      }
      if (code !== 0) process.stderr.write(`  ! ${path.basename(cmd)} exited ${code}: ${stderr.slice(-400)}\n`)
      resolve({seconds, rssMiB, code})
    })
  })
}

function median(xs: number[]): number {
  const s = [...xs].filter((x) => Number.isFinite(x)).sort((a, b) => a - b)
  if (s.length === 0) return Number.NaN
  return s.length % 2 ? s[(s.length - 1) / 2] : (s[s.length / 2 - 1] + s[s.length / 2]) / 2
}

interface Row {
  scenario: string
  tool: string
  seconds: number
  rssMiB: number
  baseline?: string
  ratio?: number
  target?: string
}

const rows: Row[] = []

/** Alternates the tools round by round and records medians. */
async function compare(scenario: string, tools: Array<{name: string; run: () => Promise<Measured>; before?: () => Promise<void>}>, baseline: string, targets: Record<string, string> = {}): Promise<void> {
  const times = new Map<string, number[]>()
  const rss = new Map<string, number[]>()
  for (let round = 0; round < RUNS; round++) {
    const order = round % 2 === 0 ? tools : [...tools].reverse()
    for (const tool of order) {
      await tool.before?.()
      const m = await tool.run()
      if (m.code !== 0) continue
      times.set(tool.name, [...(times.get(tool.name) ?? []), m.seconds])
      rss.set(tool.name, [...(rss.get(tool.name) ?? []), m.rssMiB])
      process.stderr.write(`  ${scenario} round ${round + 1}: ${tool.name} ${m.seconds.toFixed(2)} s, ${m.rssMiB.toFixed(0)} MiB\n`)
    }
  }
  const base = median(times.get(baseline) ?? [])
  for (const tool of tools) {
    const t = median(times.get(tool.name) ?? [])
    rows.push({scenario, tool: tool.name, seconds: t, rssMiB: Math.max(...(rss.get(tool.name) ?? [Number.NaN])), baseline, ratio: tool.name === baseline ? undefined : t / base, target: targets[tool.name]})
  }
}

const msResume = (args: string[]) => measure(process.execPath, [bin, ...args, '--quiet'])
const fresh = (dir: string) => async () => {
  await fs.rm(dir, {recursive: true, force: true})
  await fs.mkdir(dir, {recursive: true})
}

async function scenarioBig(): Promise<void> {
  const model = 'bench/big'
  const file = 'model.safetensors'
  const emu = await HubEmulator.start({models: [{id: model, files: [{path: file, size: BIG_MIB * MiB}]}]})
  try {
    const sha = await emu.sha256OfAsync(model, file)
    const url = `${emu.url}/api/v1/models/${model}/repo?Revision=master&FilePath=${encodeURIComponent(file)}`
    const dir = path.join(work, 'big')
    const tools = [
      {name: 'ms-resume', before: fresh(dir), run: () => msResume(['pull', model, '--endpoint', emu.url, '--local-dir', dir])},
    ]
    if (HAVE_CURL) tools.push({name: 'curl -o (no hash)', before: fresh(dir), run: () => measure('curl', ['-s', '-f', '-L', '-o', path.join(dir, file), url])})
    if (HAVE_ARIA2) {
      tools.push({name: 'aria2c --checksum', before: fresh(dir), run: () => measure('aria2c', ['-q', '--allow-overwrite=true', '--auto-file-renaming=false', '--file-allocation=none', '-d', dir, '-o', file, `--checksum=sha-256=${sha}`, url])})
    }
    await compare(`${BIG_MIB} MiB, unthrottled`, tools, HAVE_CURL ? 'curl -o (no hash)' : 'ms-resume', {'ms-resume': '<= 1.3 x curl; <= 0.5 x aria2c+checksum'})
    if (HAVE_ARIA2) {
      const ms = rows.find((r) => r.scenario.startsWith(`${BIG_MIB} MiB`) && r.tool === 'ms-resume')!
      const aria = rows.find((r) => r.scenario.startsWith(`${BIG_MIB} MiB`) && r.tool === 'aria2c --checksum')!
      rows.push({scenario: `${BIG_MIB} MiB, unthrottled`, tool: 'ms-resume vs aria2c --checksum', seconds: ms.seconds, rssMiB: ms.rssMiB, baseline: 'aria2c --checksum', ratio: ms.seconds / aria.seconds, target: '<= 0.5'})
    }
  } finally {
    await emu.stop()
  }
}

async function scenarioThrottled(): Promise<void> {
  const model = 'bench/throttled'
  const file = 'model.safetensors'
  const emu = await HubEmulator.start({models: [{id: model, files: [{path: file, size: THROTTLED_MIB * MiB}]}], rateLimitBytesPerSec: THROTTLE_BPS})
  try {
    const url = `${emu.url}/api/v1/models/${model}/repo?Revision=master&FilePath=${encodeURIComponent(file)}`
    const dir = path.join(work, 'throttled')
    const tools = [{name: 'ms-resume --connections 8', before: fresh(dir), run: () => msResume(['pull', model, '--endpoint', emu.url, '--local-dir', dir, '--connections', '8'])}]
    if (HAVE_ARIA2) tools.push({name: 'aria2c -x8 -s8', before: fresh(dir), run: () => measure('aria2c', ['-q', '-x8', '-s8', '-k1M', '--allow-overwrite=true', '--file-allocation=none', '-d', dir, '-o', file, url])})
    else if (HAVE_CURL) tools.push({name: 'curl -o (1 connection)', before: fresh(dir), run: () => measure('curl', ['-s', '-f', '-L', '-o', path.join(dir, file), url])})
    await compare(`${THROTTLED_MIB} MiB, 10 MB/s per connection`, tools, HAVE_ARIA2 ? 'aria2c -x8 -s8' : 'curl -o (1 connection)', {'ms-resume --connections 8': '<= 1.0 x aria2c -x8 -s8'})
  } finally {
    await emu.stop()
  }
}

async function scenarioMany(): Promise<void> {
  const model = 'bench/many'
  const files = Array.from({length: MANY_FILES}, (_, i) => ({path: `shards/d${i % 30}/f${i}.bin`, size: 4096}))
  const emu = await HubEmulator.start({models: [{id: model, files}]})
  try {
    const dir = path.join(work, 'many')
    const list = path.join(work, 'many-urls.txt')
    await fs.writeFile(list, files.map((f) => `${emu.url}/api/v1/models/${model}/repo?Revision=master&FilePath=${encodeURIComponent(f.path)}\n  out=${f.path}\n`).join(''))
    const tools = [{name: 'ms-resume', before: fresh(dir), run: () => msResume(['pull', model, '--endpoint', emu.url, '--local-dir', dir, '--concurrency', '16'])}]
    if (HAVE_ARIA2) tools.push({name: 'aria2c -j16', before: fresh(dir), run: () => measure('aria2c', ['-q', '-j16', '--allow-overwrite=true', '--auto-file-renaming=false', '--file-allocation=none', '-d', dir, '-i', list])})
    await compare(`${MANY_FILES} files of 4 KiB`, tools, HAVE_ARIA2 ? 'aria2c -j16' : 'ms-resume', {'ms-resume': '<= 1.0 x aria2c -j16'})
  } finally {
    await emu.stop()
  }
}

/** Kill a pull at 90% (by the journal's durable bytes), then time the resume against a full pull. */
async function scenarioResume(): Promise<void> {
  const model = 'bench/resume'
  const file = 'model.safetensors'
  const size = BIG_MIB * MiB
  const emu = await HubEmulator.start({models: [{id: model, files: [{path: file, size}]}]})
  try {
    await emu.sha256OfAsync(model, file)
    const dir = path.join(work, 'resume')
    const args = ['pull', model, '--endpoint', emu.url, '--local-dir', dir, '--quiet']
    const full: number[] = []
    const resumed: number[] = []
    let rss = 0
    for (let round = 0; round < RUNS; round++) {
      await fresh(dir)()
      const m = await measure(process.execPath, [bin, ...args])
      full.push(m.seconds)
      await fresh(dir)()
      await killAtFraction(args, path.join(dir, '.ms-resume', 'journal-v1.json'), size, 0.9)
      const r = await measure(process.execPath, [bin, ...args])
      resumed.push(r.seconds)
      rss = Math.max(rss, r.rssMiB)
      process.stderr.write(`  resume round ${round + 1}: full ${m.seconds.toFixed(2)} s, resume after kill at 90% ${r.seconds.toFixed(2)} s\n`)
    }
    rows.push({scenario: `resume after kill at 90% of ${BIG_MIB} MiB`, tool: 'ms-resume full pull', seconds: median(full), rssMiB: Number.NaN})
    rows.push({scenario: `resume after kill at 90% of ${BIG_MIB} MiB`, tool: 'ms-resume resume', seconds: median(resumed), rssMiB: rss, baseline: 'ms-resume full pull', ratio: median(resumed) / median(full), target: '<= 0.15'})
  } finally {
    await emu.stop()
  }
}

async function killAtFraction(args: string[], journal: string, size: number, fraction: number): Promise<void> {
  const child = spawn(process.execPath, [bin, ...args], {stdio: 'ignore'})
  const exited = new Promise((resolve) => child.on('exit', resolve))
  for (;;) {
    await new Promise((r) => setTimeout(r, 20))
    try {
      const doc = JSON.parse(await fs.readFile(journal, 'utf8'))
      const r = Object.values(doc.files)[0] as {chunks: Array<string | null>; chunkSizeBytes: number}
      const durable = r.chunks.filter((c) => c !== null).length * r.chunkSizeBytes
      if (durable >= size * fraction) break
    } catch {
      // not written yet
    }
    if (child.exitCode !== null) break
  }
  child.kill('SIGKILL')
  await exited
}

/** verify --level full / fast against coreutils sha256sum over the same files. */
async function scenarioVerify(): Promise<void> {
  const dir = path.join(work, 'verify')
  const model = 'bench/verify'
  const files = Array.from({length: 4}, (_, i) => ({path: `model-0000${i}.safetensors`, size: Math.floor((VERIFY_MIB / 4) * MiB)}))
  const emu = await HubEmulator.start({models: [{id: model, files}]})
  try {
    await fresh(dir)()
    const pulled = await measure(process.execPath, [bin, 'pull', model, '--endpoint', emu.url, '--local-dir', dir, '--quiet'])
    if (pulled.code !== 0) return
  } finally {
    await emu.stop()
  }
  const paths = files.map((f) => f.path)
  // Pulls write large files with O_DIRECT (they are not in the page cache afterwards): read them
  // once so that every tool, in every round, reads from the page cache.
  for (const p of paths) await fs.readFile(path.join(dir, p)).then(() => undefined)
  const tools = [
    {name: 'sha256sum', run: () => measure('sha256sum', paths, {cwd: dir})},
    {name: 'ms-resume verify --level full', run: () => msResume(['verify', model, '--local-dir', dir, '--level', 'full'])},
    {name: 'ms-resume verify --level fast', run: () => msResume(['verify', model, '--local-dir', dir, '--level', 'fast'])},
  ]
  await compare(`verify ${VERIFY_MIB} MiB in 4 files (page cache warm)`, tools, 'sha256sum', {'ms-resume verify --level fast': 'several x faster than full'})
}

function fmt(n: number | undefined, digits = 2): string {
  return n === undefined || !Number.isFinite(n) ? '-' : n.toFixed(digits)
}

await fs.mkdir(work, {recursive: true})
const cpu = os.cpus()[0]?.model ?? 'unknown CPU'
process.stderr.write(`ms-resume bench: ${os.cpus().length} cores (${cpu}), node ${process.version}, ${RUNS} round(s); aria2c ${HAVE_ARIA2 ? 'yes' : 'not installed'}, curl ${HAVE_CURL ? 'yes' : 'no'}\n`)
const scenarios: Record<string, () => Promise<void>> = {big: scenarioBig, throttled: scenarioThrottled, many: scenarioMany, resume: scenarioResume, verify: scenarioVerify}
for (const [name, fn] of Object.entries(scenarios)) {
  if (wanted.length === 0 || wanted.includes(name)) await fn()
}
await fs.rm(work, {recursive: true, force: true})

const lines = [
  `Measured ${new Date().toISOString().slice(0, 10)} on ${os.cpus().length} cores (${cpu}), ${Math.round(os.totalmem() / 1024 ** 3)} GiB, node ${process.version}, load ${os.loadavg().map((l) => l.toFixed(1)).join(' ')}; medians of ${RUNS} alternating round(s); loopback.`,
  '',
  '| scenario | tool | median s | ratio | vs | target | peak RSS MiB |',
  '|---|---|---:|---:|---|---|---:|',
  ...rows.map((r) => `| ${r.scenario} | ${r.tool} | ${fmt(r.seconds)} | ${fmt(r.ratio)} | ${r.ratio === undefined ? '' : r.baseline} | ${r.target ?? ''} | ${fmt(r.rssMiB, 0)} |`),
]
process.stdout.write(`${lines.join('\n')}\n`)
