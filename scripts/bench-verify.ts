/**
 * How fast `ms-resume verify` checks a model, against coreutils' sha256sum:
 *
 *   npx tsc -p . && npx tsx scripts/bench-verify.ts [--gib 2] [--files 8] [--runs 3] [--keep]
 *
 * Writes --files files of random bytes (--gib GiB in all) and their manifest to a temp dir, then
 * times the real CLI (bin/run.js, so Node's ~0.3 s start-up is included) at each level with its
 * default number of threads and with the other choice (--jobs 1, or one worker per core), and
 * `sha256sum` over the same files. Before every timed run the files are read once, so all rows
 * see a warm page cache (this VM's DAMON reclaim evicts cold pages, which otherwise makes the
 * order of the rows decide the figures). Prints the median of --runs, in seconds, MB/s (1e6 B/s)
 * and as ratios.
 */
import {spawn} from 'node:child_process'
import {randomBytes} from 'node:crypto'
import {once} from 'node:events'
import fs from 'node:fs/promises'
import os from 'node:os'
import path from 'node:path'
import {fileURLToPath} from 'node:url'

import {chunkSizeFor} from '../src/integrity/chunks.js'
import {buildManifest, writeManifest} from '../src/integrity/manifest.js'
import {sha256FileHex} from '../src/integrity/sha256.js'
import {chunkSumsOfFile} from '../src/pull/file-job.js'
import {defaultThreads} from '../src/verify/check-pool.js'

function arg(name: string, fallback: number): number {
  const i = process.argv.indexOf(`--${name}`)
  const value = i >= 0 ? Number(process.argv[i + 1]) : fallback
  if (!Number.isFinite(value) || value <= 0) throw new Error(`--${name} needs a positive number`)
  return value
}

const MiB = 1024 * 1024
const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..')
const bin = path.join(root, 'bin', 'run.js')
const totalBytes = Math.round(arg('gib', 2) * 1024 * MiB)
const fileCount = Math.round(arg('files', 8))
const runs = Math.round(arg('runs', 3))
const keep = process.argv.includes('--keep')

async function run(cmd: string, args: string[], okCodes = [0]): Promise<number> {
  const t0 = performance.now()
  const child = spawn(cmd, args, {stdio: ['ignore', 'ignore', 'inherit']})
  const [code] = (await once(child, 'close')) as [number | null]
  const seconds = (performance.now() - t0) / 1000
  if (!okCodes.includes(code ?? -1)) throw new Error(`${cmd} ${args.join(' ')} exited ${code}`)
  return seconds
}

async function generate(modelDir: string): Promise<string[]> {
  await fs.mkdir(modelDir, {recursive: true})
  const names: string[] = []
  const block = randomBytes(64 * MiB)
  const perFile = Math.floor(totalBytes / fileCount)
  for (let i = 0; i < fileCount; i++) {
    const name = `model-${String(i + 1).padStart(5, '0')}-of-${String(fileCount).padStart(5, '0')}.safetensors`
    const fh = await fs.open(path.join(modelDir, name), 'w')
    for (let written = 0; written < perFile;) {
      block.writeUInt32LE(i, 0)
      block.writeUInt32LE(written / MiB, 4)
      const n = Math.min(block.length, perFile - written)
      await fh.write(block, 0, n)
      written += n
    }
    await fh.close()
    names.push(name)
  }
  return names
}

async function warm(files: string[]): Promise<void> {
  const buf = Buffer.allocUnsafe(8 * MiB)
  for (const f of files) {
    const fh = await fs.open(f, 'r')
    while ((await fh.read(buf, 0, buf.length)).bytesRead > 0) {
      // reading is the point
    }
    await fh.close()
  }
}

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b)
  return s[Math.floor(s.length / 2)]
}

const tmp = await fs.mkdtemp(path.join(os.tmpdir(), 'msr-bench-verify-'))
try {
  const modelDir = path.join(tmp, 'model')
  process.stderr.write(`writing ${fileCount} files, ${(totalBytes / MiB / 1024).toFixed(2)} GiB in all, to ${modelDir} ...\n`)
  const names = await generate(modelDir)
  const files = names.map((n) => path.join(modelDir, n))
  const manifestFile = path.join(tmp, 'bench.manifest.json')
  const entries = []
  for (const name of names) {
    const file = path.join(modelDir, name)
    const size = (await fs.stat(file)).size
    const record = {path: name, size, sha256: await sha256FileHex(file), chunkSizeBytes: chunkSizeFor(size)}
    entries.push({...record, commit: '0'.repeat(40), xxh64: await chunkSumsOfFile(file, record)})
  }
  await writeManifest(manifestFile, buildManifest({hub: 'modelscope', endpoint: 'http://127.0.0.1', modelId: 'bench/model', revision: 'master', files: entries}))

  const verify = (level: string, jobs: number) => ['node', [bin, 'verify', '--manifest', manifestFile, '--local-dir', modelDir, '--level', level, '--jobs', String(jobs), '--quiet']] as const
  // Each level with its default thread count and with the other choice (one thread / one per core).
  const other = (level: 'full' | 'fast') => (defaultThreads(level) > 1 ? 1 : Math.max(2, os.availableParallelism()))
  const rows: Array<{name: string; cmd: readonly [string, readonly string[]]}> = [
    {name: `verify --level full (default: ${defaultThreads('full')} thr.)`, cmd: verify('full', 0)},
    {name: `verify --level full --jobs ${other('full')}`, cmd: verify('full', other('full'))},
    {name: `verify --level fast (default: ${defaultThreads('fast')} thr.)`, cmd: verify('fast', 0)},
    {name: `verify --level fast --jobs ${other('fast')}`, cmd: verify('fast', other('fast'))},
    {name: 'verify --level size', cmd: verify('size', 0)},
    {name: 'sha256sum (coreutils)', cmd: ['sha256sum', files]},
  ]
  const times = new Map<string, number[]>(rows.map((r) => [r.name, []]))
  // Interleaved, so a noisy neighbour hurts every row alike.
  for (let i = 0; i < runs; i++) {
    for (const row of rows) {
      await warm(files)
      times.get(row.name)!.push(await run(row.cmd[0], [...row.cmd[1]]))
    }
  }

  const seconds = new Map([...times].map(([k, v]) => [k, median(v)]))
  const full = seconds.get(rows[0].name)!
  const sha256sum = seconds.get('sha256sum (coreutils)')!
  // `--level size` reads no content: its time is the CLI's start-up plus a stat per file.
  const startup = seconds.get('verify --level size')!
  const net = (name: string) => (name.startsWith('verify') && !name.includes('size') ? Math.max(0.001, seconds.get(name)! - startup) : seconds.get(name)!)
  const mb = totalBytes / 1e6
  console.log(`\n${fileCount} files, ${(totalBytes / MiB / 1024).toFixed(2)} GiB, warm page cache, median of ${runs} runs, ${os.availableParallelism()} cores (${os.cpus()[0]?.model ?? 'unknown CPU'})`)
  console.log('"hashing s" = seconds minus the start-up measured by --level size; MB/s and "hashing vs full" use it.\n')
  console.log(`| ${'command'.padEnd(38)} | seconds | hashing s |   MB/s | vs sha256sum | vs full | hashing vs full |`)
  console.log(`|${'-'.repeat(40)}|--------:|----------:|-------:|-------------:|--------:|----------------:|`)
  for (const row of rows) {
    const s = seconds.get(row.name)!
    const isSize = row.name.includes('size')
    const rate = isSize ? '-' : (mb / net(row.name)).toFixed(0)
    const hashing = isSize ? '-' : net(row.name).toFixed(2)
    const hashingVsFull = isSize ? '-' : `${(net(rows[0].name) / net(row.name)).toFixed(1)}x`
    console.log(`| ${row.name.padEnd(38)} | ${s.toFixed(2).padStart(7)} | ${hashing.padStart(9)} | ${rate.padStart(6)} | ${`${(sha256sum / s).toFixed(1)}x`.padStart(12)} | ${`${(full / s).toFixed(1)}x`.padStart(7)} | ${hashingVsFull.padStart(15)} |`)
  }
  console.log(`\nall runs (s): ${[...times].map(([k, v]) => `${k}: ${v.map((x) => x.toFixed(2)).join(' ')}`).join('; ')}`)
} finally {
  if (keep) process.stderr.write(`kept ${tmp}\n`)
  else await fs.rm(tmp, {recursive: true, force: true})
}
