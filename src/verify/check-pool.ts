import os from 'node:os'
import {Worker} from 'node:worker_threads'

import {type ErrorCode, ErrorCodes, MsrError} from '../errors.js'
import {fromFsError} from '../fs/fs-errors.js'
import {type CheckLevel, type ExpectedFile, type FileCheck, checkFile} from '../integrity/check.js'
import {runPool} from '../pool.js'
import type {CheckReply, CheckRequest} from './check-worker.js'

export interface CheckJob {
  /** Absolute path on disk. */
  filePath: string
  expected: ExpectedFile
  level: CheckLevel
}

export interface CheckFilesOptions {
  /** Files hashed at once, each in its own worker thread; 1 = all in this thread. */
  threads: number
  signal?: AbortSignal
}

/**
 * Files checked at once when the user does not say (--jobs). Checking one file already keeps more
 * than one core busy: this thread hashes while libuv's pool copies the next read out of the page
 * cache. At `full` the SHA-256 (about 0.7 ns a byte with SHA-NI) dwarfs the copy, so a second core
 * is mostly idle and a worker per core pays; at `fast` xxh64 costs about what the copy does, one
 * file keeps two cores busy, and more threads only contend. Measured with scripts/bench-verify.ts
 * on 2 cores (2 GiB in 8 files, 4 runs): two workers at `full` were 10-25% faster in 3 runs of 4,
 * at `fast` 10-25% slower in all 4.
 */
export function defaultThreads(level: CheckLevel): number {
  const cores = Math.max(1, os.availableParallelism())
  return level === 'full' ? cores : Math.max(1, Math.floor(cores / 2))
}

/**
 * Below this many bytes to read, starting workers (about 30 ms each, plus loading the wasm
 * xxh64) costs more than it saves.
 */
export const MIN_BYTES_FOR_WORKERS = 64 * 1024 * 1024

/**
 * checkFile over every job, results in input order. Node's SHA-256 and xxh64 run on the calling
 * thread, so one thread hashes at one core's speed however many files are in flight; with
 * `threads` > 1 each worker thread takes a whole file at a time (biggest first, so one huge file
 * does not start last). Small jobs, a single file, `size` checks, and code running from TypeScript
 * sources (tests under tsx: a worker cannot load a .ts file there) stay in this thread.
 */
export async function checkFiles(jobs: CheckJob[], opts: CheckFilesOptions): Promise<FileCheck[]> {
  const reading = jobs.filter((j) => j.level !== 'size')
  const bytes = reading.reduce((n, j) => n + j.expected.size, 0)
  const threads = Math.min(opts.threads, reading.length)
  if (threads < 2 || bytes < MIN_BYTES_FOR_WORKERS || !workerScript()) return checkInThread(jobs, opts.signal)
  return checkInWorkers(jobs, threads, opts.signal)
}

function workerScript(): URL | undefined {
  if (!import.meta.url.endsWith('.js')) return undefined
  return new URL('./check-worker.js', import.meta.url)
}

async function checkInThread(jobs: CheckJob[], signal?: AbortSignal): Promise<FileCheck[]> {
  const results: FileCheck[] = []
  for (const job of jobs) {
    signal?.throwIfAborted()
    try {
      results.push(await checkFile(job.filePath, job.expected, job.level))
    } catch (error) {
      throw fsProblem(error, job)
    }
  }
  return results
}

async function checkInWorkers(jobs: CheckJob[], threads: number, signal?: AbortSignal): Promise<FileCheck[]> {
  const results: FileCheck[] = new Array(jobs.length)
  const order = jobs.map((_, i) => i).sort((a, b) => jobs[b].expected.size - jobs[a].expected.size)
  const workers = Array.from({length: threads}, () => new Worker(workerScript()!))
  try {
    await runPool(order, threads, signal ?? new AbortController().signal, async (id, lane) => {
      results[id] = await ask(workers[lane.index], id, jobs[id], lane.signal)
    })
    signal?.throwIfAborted()
    return results
  } finally {
    for (const w of workers) void w.terminate()
  }
}

/** One job on one worker thread; rejects at once when `signal` aborts (another lane failed, Ctrl-C). */
function ask(worker: Worker, id: number, job: CheckJob, signal: AbortSignal): Promise<FileCheck> {
  return new Promise<FileCheck>((resolve, reject) => {
    const done = (settle: () => void) => {
      worker.off('message', onMessage).off('error', onError).off('exit', onExit)
      signal.removeEventListener('abort', onAbort)
      settle()
    }
    const onMessage = (reply: CheckReply) => {
      if (reply.id !== id) return
      done(() => ('error' in reply ? reject(replyError(reply.error, job)) : resolve(reply.result)))
    }
    const onError = (error: Error) => done(() => reject(new MsrError('E_LOCAL', `A verification thread failed: ${error.message}`, {cause: error})))
    const onExit = (code: number) => done(() => reject(new MsrError('E_LOCAL', `A verification thread exited early (code ${code}).`)))
    const onAbort = () => done(() => reject(signal.reason))
    if (signal.aborted) return onAbort()
    worker.on('message', onMessage).on('error', onError).on('exit', onExit)
    signal.addEventListener('abort', onAbort, {once: true})
    worker.postMessage({id, job} satisfies CheckRequest)
  })
}

function replyError(e: {message: string; code?: string; msr: boolean}, job: CheckJob): unknown {
  if (e.msr && e.code && e.code in ErrorCodes) return new MsrError(e.code as ErrorCode, e.message, {path: job.expected.path})
  return fsProblem(Object.assign(new Error(e.message), {code: e.code}), job)
}

function fsProblem(error: unknown, job: CheckJob): unknown {
  if (error instanceof MsrError) return error
  const mapped = fromFsError(error, `reading ${job.expected.path}`, job.filePath)
  if (mapped instanceof MsrError) return mapped
  return new MsrError('E_LOCAL', `Cannot check ${job.filePath}: ${(error as Error)?.message ?? String(error)}.`, {path: job.expected.path, cause: error})
}
