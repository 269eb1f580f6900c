import fs from 'node:fs/promises'
import os from 'node:os'
import path from 'node:path'

import lockfile from 'proper-lockfile'

import {MsrError} from '../errors.js'

/**
 * One lock per model. proper-lockfile takes it with mkdir (atomic on NFS and SMB, unlike flock),
 * refreshes its mtime while we hold it, and treats a lock not refreshed for `staleMs` as left by a
 * dead process, so a SIGKILLed pull never blocks the next one for long.
 */
export interface ModelLock {
  release(): Promise<void>
  /** Aborted when the lock was lost (e.g. another process took it over as stale). */
  readonly lost: AbortSignal
}

export interface LockOptions {
  /** How long to wait for another process; 0 = fail at once. */
  waitMs: number
  staleMs?: number
  onWait?: (holder: string) => void
  signal?: AbortSignal
}

const OWNER_FILE = 'lock-owner.json'

export async function acquireModelLock(stateDir: string, opts: LockOptions): Promise<ModelLock> {
  const lockPath = path.join(stateDir, 'lock')
  const lost = new AbortController()
  const staleMs = opts.staleMs ?? 10_000
  const deadline = Date.now() + opts.waitMs
  let warned = false
  for (;;) {
    try {
      const release = await lockfile.lock(stateDir, {
        lockfilePath: lockPath,
        realpath: false,
        retries: 0,
        stale: staleMs,
        update: Math.max(1000, Math.floor(staleMs / 4)),
        onCompromised: (error) => lost.abort(error),
      })
      await fs.writeFile(path.join(stateDir, OWNER_FILE), JSON.stringify({pid: process.pid, host: os.hostname(), since: new Date().toISOString()}), {mode: 0o600}).catch(() => {})
      return {
        lost: lost.signal,
        async release() {
          await fs.rm(path.join(stateDir, OWNER_FILE), {force: true}).catch(() => {})
          await release().catch(() => {})
        },
      }
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code !== 'ELOCKED') throw error
      const holder = await describeHolder(stateDir)
      if (Date.now() >= deadline || opts.signal?.aborted) {
        throw new MsrError('E_LOCKED', `Another ms-resume (${holder}) is pulling this model into the same place.`, {
          hint: opts.waitMs > 0 ? 'Wait for it to finish, or raise --lock-wait.' : 'Wait for it to finish, or run again with --lock-wait SECONDS to wait for it.',
        })
      }
      if (!warned) {
        opts.onWait?.(holder)
        warned = true
      }
      await new Promise((resolve) => setTimeout(resolve, 250 + Math.random() * 250))
    }
  }
}

async function describeHolder(stateDir: string): Promise<string> {
  try {
    const owner = JSON.parse(await fs.readFile(path.join(stateDir, OWNER_FILE), 'utf8')) as {pid: number; host: string}
    return `pid ${owner.pid} on ${owner.host}`
  } catch {
    return 'another process'
  }
}
