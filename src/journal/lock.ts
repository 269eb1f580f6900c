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
  let tookOverDead = false
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
      await writeOwner(stateDir).catch(() => {})
      return {
        lost: lost.signal,
        async release() {
          await fs.rm(path.join(stateDir, OWNER_FILE), {force: true}).catch(() => {})
          await release().catch(() => {})
        },
      }
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code !== 'ELOCKED') throw error
      // A holder SIGKILLed on this host cannot refresh its lock; rather than wait out the mtime
      // staleness (which exists for holders on other hosts of a network filesystem), age the lock
      // so proper-lockfile's own stale takeover runs on the next attempt.
      if (!tookOverDead && (await holderIsDeadHere(stateDir, lockPath))) {
        tookOverDead = true
        await fs.utimes(lockPath, new Date(0), new Date(0)).catch(() => {})
        continue
      }
      // Ctrl-C while waiting is an interruption (exit 130), not a lock failure (exit 6).
      if (opts.signal?.aborted) throw opts.signal.reason instanceof Error ? opts.signal.reason : new MsrError('E_INTERRUPTED', 'Interrupted while waiting for the model lock.', {hint: 'Run the same command again.'})
      const holder = await describeHolder(stateDir)
      if (Date.now() >= deadline) {
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

/** A fresh inode per holder, so its birth time tells which lock directory it belongs to. */
async function writeOwner(stateDir: string): Promise<void> {
  const tmp = path.join(stateDir, `.${OWNER_FILE}.${process.pid}.tmp`)
  await fs.writeFile(tmp, JSON.stringify({pid: process.pid, host: os.hostname(), since: new Date().toISOString()}), {mode: 0o600})
  await fs.rename(tmp, path.join(stateDir, OWNER_FILE))
}

/**
 * True only when the lock was provably taken by a process of this host that no longer exists: the
 * owner file was born after the lock directory (so it describes this lock, not an older one whose
 * owner file a new holder has not replaced yet) and its pid is gone. Anything uncertain: false,
 * and the ordinary mtime staleness applies.
 */
async function holderIsDeadHere(stateDir: string, lockPath: string): Promise<boolean> {
  try {
    const ownerPath = path.join(stateDir, OWNER_FILE)
    const [lockStat, ownerStat] = await Promise.all([fs.stat(lockPath), fs.stat(ownerPath)])
    if (!(lockStat.birthtimeMs > 0) || ownerStat.birthtimeMs < lockStat.birthtimeMs) return false
    const owner = JSON.parse(await fs.readFile(ownerPath, 'utf8')) as {pid: number; host: string}
    if (owner.host !== os.hostname() || !Number.isSafeInteger(owner.pid) || owner.pid === process.pid) return false
    process.kill(owner.pid, 0)
    return false
  } catch (error) {
    return (error as NodeJS.ErrnoException).code === 'ESRCH'
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

/**
 * Who holds the model lock, without taking it or writing anything (status, clean --dry-run);
 * undefined when nobody does, the lock is stale, or its holder on this host is dead.
 */
export async function peekModelLock(stateDir: string, staleMs = 10_000): Promise<string | undefined> {
  try {
    const locked = await lockfile.check(stateDir, {lockfilePath: path.join(stateDir, 'lock'), realpath: false, stale: staleMs})
    if (!locked || (await holderIsDeadHere(stateDir, path.join(stateDir, 'lock')))) return undefined
    return await describeHolder(stateDir)
  } catch {
    return undefined
  }
}
