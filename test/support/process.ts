import {type ChildProcess, execFile} from 'node:child_process'
import fs from 'node:fs/promises'
import path from 'node:path'
import {promisify} from 'node:util'

import {type CliResult, startCli} from './cli.js'
import {readJournalOnDisk} from './journal-read.js'
import {statePaths} from './state-paths.js'

const exec = promisify(execFile)

/** Small seeded PRNG so a failing seed can be replayed. */
export function mulberry32(seed: number): () => number {
  let a = seed >>> 0
  return () => {
    a = (a + 0x6d2b79f5) >>> 0
    let t = a
    t = Math.imul(t ^ (t >>> 15), t | 1)
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61)
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296
  }
}

export interface JsonEvent {
  type: string
  [key: string]: unknown
}

/**
 * A CLI run in --json mode whose NDJSON events are parsed as they arrive, so a test can act at a
 * precise moment (after `start`, after N bytes, on `waiting-lock`) instead of guessing with sleeps.
 */
export class RunningCli {
  readonly events: JsonEvent[] = []
  stdout = ''
  stderr = ''
  readonly done: Promise<CliResult>
  private pending = ''
  private readonly waiters = new Set<() => void>()

  constructor(readonly child: ChildProcess) {
    child.stdout!.on('data', (d: Buffer) => {
      this.stdout += d
      this.pending += d
      let nl
      while ((nl = this.pending.indexOf('\n')) >= 0) {
        const line = this.pending.slice(0, nl)
        this.pending = this.pending.slice(nl + 1)
        try {
          this.events.push(JSON.parse(line) as JsonEvent)
        } catch {
          /* not an event line */
        }
      }
      for (const w of this.waiters) w()
    })
    child.stderr!.on('data', (d: Buffer) => (this.stderr += d))
    this.done = new Promise((resolve, reject) => {
      child.on('error', reject)
      child.on('close', (code, signal) => {
        for (const w of this.waiters) w()
        resolve({code, signal, stdout: this.stdout, stderr: this.stderr})
      })
    })
  }

  get exited(): boolean {
    return this.child.exitCode !== null || this.child.signalCode !== null
  }

  /** Resolves with the first event matching `pred` (already seen or still to come). */
  waitForEvent(pred: (e: JsonEvent) => boolean, timeoutMs = 30_000): Promise<JsonEvent> {
    return new Promise((resolve, reject) => {
      const check = () => {
        const hit = this.events.find(pred)
        if (hit) return finish(() => resolve(hit))
        if (this.exited) return finish(() => reject(new Error(`exited (${this.child.exitCode ?? this.child.signalCode}) before the awaited event; stderr: ${this.stderr}`)))
      }
      const timer = setTimeout(() => finish(() => reject(new Error(`no matching event within ${timeoutMs} ms; stderr: ${this.stderr}`))), timeoutMs)
      const finish = (fn: () => void) => {
        clearTimeout(timer)
        this.waiters.delete(check)
        fn()
      }
      this.waiters.add(check)
      check()
    })
  }

  async kill(signal: NodeJS.Signals): Promise<CliResult> {
    if (!this.exited) this.child.kill(signal)
    return this.done
  }
}

export function startJsonCli(args: string[], env: NodeJS.ProcessEnv): RunningCli {
  return new RunningCli(startCli([...args, '--json'], {env}))
}

/** Polls `probe` until it returns a truthy value; throws after `timeoutMs`. */
export async function waitUntil<T>(probe: () => Promise<T | undefined | null | false>, what: string, timeoutMs = 30_000, everyMs = 40): Promise<T> {
  const deadline = Date.now() + timeoutMs
  for (;;) {
    const value = await probe()
    if (value) return value
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`)
    await new Promise((resolve) => setTimeout(resolve, everyMs))
  }
}

export interface JournalRecordView {
  path: string
  size: number
  status: string
  chunkSizeBytes: number
  chunks: Array<string | null>
  partialName?: string
  sha256State?: {engine: string; offsetBytes: number; stateB64: string}
  [key: string]: unknown
}

export interface JournalView {
  version: number
  files: Record<string, JournalRecordView>
  [key: string]: unknown
}

export function journalPath(modelDir: string): string {
  return statePaths(modelDir).journal
}

/** The journal as it is on disk now (snapshot and log), or undefined when absent or (mid-test) unreadable. */
export async function readJournal(modelDir: string): Promise<JournalView | undefined> {
  try {
    return (await readJournalOnDisk<JournalView>(modelDir))?.doc
  } catch {
    return undefined
  }
}

/** The journal's files as they are (snapshot, then log): equal bytes mean an unchanged journal. */
export async function journalBytes(modelDir: string): Promise<Buffer> {
  const read = (file: string) => fs.readFile(file).catch(() => Buffer.alloc(0))
  const paths = statePaths(modelDir)
  const [snapshot, log] = await Promise.all([read(paths.journal), read(paths.journalLog)])
  return Buffer.concat([Buffer.from(`${snapshot.length}:`), snapshot, log])
}

/** Makes `doc` the whole journal: the snapshot, without a log (tests that alter the journal). */
export async function writeJournal(modelDir: string, doc: JournalView): Promise<void> {
  const {logId: _logId, ...snapshot} = doc
  await fs.writeFile(journalPath(modelDir), JSON.stringify(snapshot), {mode: 0o600})
  await fs.rm(statePaths(modelDir).journalLog, {force: true})
}

export function partialPath(modelDir: string, record: JournalRecordView): string {
  return statePaths(modelDir).partial(record.partialName ?? '')
}

/** Indices of the chunks a record claims as durable. */
export function durableChunkIndices(record: JournalRecordView | undefined): number[] {
  return (record?.chunks ?? []).flatMap((c, i) => (c === null ? [] : [i]))
}

/** Bytes [0, n) claimed in a row: consecutive whole chunks, then the first bytes of a partial chunk. */
export function durablePrefixBytes(record: JournalRecordView | undefined): number {
  if (!record) return 0
  let i = 0
  while (i < record.chunks.length && record.chunks[i] !== null) i++
  const partials = (record.partialChunks ?? []) as Array<{index: number; bytes: number}>
  return Math.min(record.size, i * record.chunkSizeBytes + (partials.find((p) => p.index === i)?.bytes ?? 0))
}

/**
 * Starts a pull and SIGKILLs it as soon as the journal on disk satisfies `ready` (polled), so a
 * test gets a partial state of a known shape without sleeping for a guessed time.
 */
export async function pullAndKillWhen(args: string[], env: NodeJS.ProcessEnv, modelDir: string, ready: (doc: JournalView) => boolean, timeoutMs = 30_000): Promise<JournalView> {
  const run = new RunningCli(startCli(args, {env}))
  try {
    await waitUntil(async () => {
      if (run.exited) throw new Error(`the pull ended before the awaited state: ${run.stderr}`)
      const doc = await readJournal(modelDir)
      return doc && ready(doc)
    }, 'the journal state to kill at', timeoutMs, 20)
  } finally {
    await run.kill('SIGKILL')
  }
  return (await readJournal(modelDir))!
}

/** Names of temp files a durable writer may leave behind (`.<name>.<pid>.<rand>.tmp`). */
export async function strayTempFiles(dir: string): Promise<string[]> {
  return (await fs.readdir(dir)).filter((n) => n.startsWith('.') && n.endsWith('.tmp'))
}

/**
 * Mounts a tmpfs (root only). Returns undefined when mounted, else the reason it could not be, which
 * the caller turns into a skipped test with that reason.
 */
export async function mountTmpfs(dir: string, options: string): Promise<string | undefined> {
  await fs.mkdir(dir, {recursive: true})
  try {
    await exec('mount', ['-t', 'tmpfs', '-o', options, 'tmpfs', dir])
    return undefined
  } catch (error) {
    return `cannot mount a tmpfs here (${(error as {stderr?: string}).stderr?.trim() || (error as Error).message}); needs root and mount permission`
  }
}

/** Remounts an existing directory read-only through a bind mount. Returns a reason on failure. */
export async function bindReadOnly(dir: string): Promise<string | undefined> {
  try {
    await exec('mount', ['--bind', dir, dir])
  } catch (error) {
    return `cannot bind-mount (${(error as {stderr?: string}).stderr?.trim() || (error as Error).message}); needs root and mount permission`
  }
  try {
    await exec('mount', ['-o', 'remount,ro,bind', dir])
    return undefined
  } catch (error) {
    await unmount(dir)
    return `cannot remount read-only (${(error as {stderr?: string}).stderr?.trim() || (error as Error).message})`
  }
}

export async function unmount(dir: string): Promise<void> {
  for (let i = 0; i < 20; i++) {
    try {
      await exec('umount', [dir])
      return
    } catch (error) {
      const msg = (error as {stderr?: string}).stderr ?? ''
      if (/not mounted|no mount point/i.test(msg)) return
      await new Promise((resolve) => setTimeout(resolve, 100)) // busy: a child still closing files
    }
  }
  await exec('umount', ['-l', dir]).catch(() => {})
}

/** Whether this run is CI: CI set to anything but empty, 0 or false (runners say true, 1, True ...). */
export function inCi(): boolean {
  const ci = (process.env.CI ?? '').trim().toLowerCase()
  return ci !== '' && ci !== '0' && ci !== 'false'
}

/**
 * Skips a test whose tool or condition is missing on a laptop, with the reason in mocha's output.
 * In CI it fails instead: .ci/run installs what the tests need, and a skip there would hide a
 * missing install step. The only place a test may skip.
 */
export function skipBecause(ctx: Pick<Mocha.Context, 'skip' | 'test'>, reason: string): never {
  if (inCi()) throw new Error(`cannot run under CI=true: ${reason} (.ci/run must provide it)`)
  if (ctx.test) ctx.test.title += ` (skipped: ${reason})`
  ctx.skip()
}
