import os from 'node:os'
import path from 'node:path'
import {fileURLToPath} from 'node:url'

/** Every knob of `npm run bench`, read once: argv and BENCH_* (see BENCHMARKS.md, Method). */
const argv = process.argv.slice(2)
export const QUICK = argv.includes('--quick')
/** Keep the generated CDN tree (multi-GiB files) for the next run. */
export const KEEP = argv.includes('--keep')
/** Scenario names given on the command line (none: the default set). */
export const WANTED = argv.filter((a) => !a.startsWith('--'))

function knob(name: string, full: number, quick: number): number {
  const raw = process.env[name]
  const value = raw === undefined || raw === '' ? (QUICK ? quick : full) : Number(raw)
  if (!Number.isFinite(value) || value <= 0) throw new Error(`${name} must be a positive number, got ${JSON.stringify(raw)}`)
  return value
}

export const ROUNDS = Math.round(knob('BENCH_RUNS', 3, 1))
export const BIG_MIB = knob('BENCH_BIG_MIB', 1024, 128)
export const THROTTLED_MIB = knob('BENCH_THROTTLED_MIB', 256, 32)
export const THROTTLED_BPS = knob('BENCH_THROTTLED_BPS', 10_000_000, 10_000_000)
export const EDGE_MIB = knob('BENCH_EDGE_MIB', 192, 48)
export const EDGE_RTT_MS = knob('BENCH_EDGE_RTT_MS', 100, 100)
export const EDGE_BPS = knob('BENCH_EDGE_BPS', 4_000_000, 4_000_000)
export const LOSSY_MIB = knob('BENCH_LOSSY_MIB', 16, 8)
export const LOSSY_RTT_MS = knob('BENCH_LOSSY_RTT_MS', 200, 100)
export const LOSSY_BPS = knob('BENCH_LOSSY_BPS', 4_000_000, 4_000_000)
export const LOSSY_DROP_BYTES = knob('BENCH_LOSSY_DROP_BYTES', 700_000, 700_000)
export const MANY_FILES = Math.round(knob('BENCH_MANY_FILES', 3000, 300))
export const RESUME_MIB = knob('BENCH_RESUME_MIB', 4096, 256)
/** Model-sized, so that start-up (paid by both levels) does not hide the hashing. */
export const VERIFY_MIB = knob('BENCH_VERIFY_MIB', 4096, 128)
export const SCALE_COUNTS = (process.env.BENCH_SCALE_COUNTS ?? (QUICK ? '1000,10000' : '1000,10000,100000')).split(',').map((s) => {
  const n = Number(s)
  if (!Number.isSafeInteger(n) || n <= 0) throw new Error(`BENCH_SCALE_COUNTS must list positive integers, got ${JSON.stringify(s)}`)
  return n
})

export const REPO_ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..', '..')
export const BIN = path.join(REPO_ROOT, 'bin', 'run.js')
export const WORK = process.env.BENCH_DIR ?? path.join(os.tmpdir(), 'ms-resume-bench')
/** The static hub nginx serves; generated files are reused while their seed and size match. */
export const CDN_ROOT = path.join(WORK, 'cdn')
export const MiB = 1024 * 1024
