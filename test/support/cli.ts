import {spawn, type ChildProcess} from 'node:child_process'
import fs from 'node:fs/promises'
import os from 'node:os'
import path from 'node:path'
import {fileURLToPath} from 'node:url'

export const REPO_ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..')
export const BIN = path.join(REPO_ROOT, 'bin', 'run.js')

export interface CliResult {
  code: number | null
  signal: NodeJS.Signals | null
  stdout: string
  stderr: string
}

export interface CliOptions {
  env?: Record<string, string | undefined>
  timeoutMs?: number
  cwd?: string
}

/** Environment for a CLI under test: its own HOME and cache, fast backoff, no CI/TTY surprises. */
export function testEnv(home: string, extra: Record<string, string | undefined> = {}): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = {
    ...process.env,
    HOME: home,
    MODELSCOPE_CACHE: path.join(home, 'cache'),
    MS_RESUME_RETRY_BASE_MS: '20',
    MODELSCOPE_API_TOKEN: undefined,
    MODELSCOPE_ENDPOINT: undefined,
    MODELSCOPE_DOMAIN: undefined,
    MODELSCOPE_ENABLE_DEFAULT_HASH_VALIDATION: undefined,
    DEBUG: undefined,
    ...extra,
  }
  for (const k of Object.keys(env)) if (env[k] === undefined) delete env[k]
  return env
}

export function startCli(args: string[], opts: CliOptions = {}): ChildProcess {
  return spawn(process.execPath, [BIN, ...args], {cwd: opts.cwd ?? REPO_ROOT, env: opts.env as NodeJS.ProcessEnv, stdio: ['ignore', 'pipe', 'pipe']})
}

export function runCli(args: string[], opts: CliOptions = {}): Promise<CliResult> {
  return new Promise((resolve, reject) => {
    const child = startCli(args, opts)
    let stdout = ''
    let stderr = ''
    child.stdout!.on('data', (d) => (stdout += d))
    child.stderr!.on('data', (d) => (stderr += d))
    const timer = setTimeout(() => child.kill('SIGKILL'), opts.timeoutMs ?? 60_000)
    child.on('error', reject)
    child.on('close', (code, signal) => {
      clearTimeout(timer)
      resolve({code, signal, stdout, stderr})
    })
  })
}

export async function makeTmpDir(prefix = 'msr-test-'): Promise<string> {
  return fs.mkdtemp(path.join(os.tmpdir(), prefix))
}

export async function exists(p: string): Promise<boolean> {
  try {
    await fs.lstat(p)
    return true
  } catch {
    return false
  }
}

/** Every regular file below dir (relative, '/'-separated), skipping ms-resume's state directory. */
export async function listFiles(dir: string, skip = new Set(['.ms-resume'])): Promise<string[]> {
  const out: string[] = []
  async function walk(rel: string): Promise<void> {
    for (const entry of await fs.readdir(path.join(dir, rel), {withFileTypes: true})) {
      if (rel === '' && skip.has(entry.name)) continue
      const child = rel ? `${rel}/${entry.name}` : entry.name
      if (entry.isDirectory()) await walk(child)
      else out.push(child)
    }
  }
  await walk('')
  return out.sort()
}

/** Runs the CLI, timing it and sampling its peak resident memory (VmHWM) from /proc. */
export async function runMeasured(args: string[], env: NodeJS.ProcessEnv, timeoutMs: number): Promise<CliResult & {peakRssBytes: number; ms: number}> {
  const started = performance.now()
  const child = startCli(args, {env})
  let stdout = ''
  let stderr = ''
  let peakRssBytes = 0
  child.stdout!.on('data', (d) => (stdout += d))
  child.stderr!.on('data', (d) => (stderr += d))
  const sample = async () => {
    const kb = /VmHWM:\s+(\d+) kB/.exec(await fs.readFile(`/proc/${child.pid}/status`, 'utf8').catch(() => ''))
    if (kb) peakRssBytes = Math.max(peakRssBytes, Number(kb[1]) * 1024)
  }
  const sampler = setInterval(() => void sample(), 200)
  const killer = setTimeout(() => child.kill('SIGKILL'), timeoutMs)
  const [code, signal] = await new Promise<[number | null, NodeJS.Signals | null]>((resolve) => child.on('close', (c, s) => resolve([c, s])))
  clearInterval(sampler)
  clearTimeout(killer)
  return {code, signal, stdout, stderr, peakRssBytes, ms: Math.round(performance.now() - started)}
}
