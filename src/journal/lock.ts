import {randomBytes} from 'node:crypto'
import {readFileSync, renameSync, rmSync} from 'node:fs'
import fs from 'node:fs/promises'
import path from 'node:path'

import {knobs} from '../config.js'
import {MsrError, isMsrError} from '../errors.js'
import {fromFsError} from '../fs/fs-errors.js'
import {DIR_MODE} from '../fs/file-modes.js'
import {CLOCK_PROBE, fsNowMs} from './fs-clock.js'
import {hostIdentity, samePidSpace} from './host-identity.js'
import {
  HEARTBEAT_BYTES, HEARTBEAT_FILE, LEGACY_OWNER_FILE, LEGACY_OWNER_TEMP, LOCK_ASIDE, LOCK_DIR, type LockOwner, type LockSighting, OWNER_FILE,
  createSynced, heartbeatRecord, parseHeartbeat, readHeartbeat, readLegacyOwner, sightLock, syncTolerant,
} from './lock-files.js'
import {type LockTiming, StalenessJudge, lockTiming} from './lock-staleness.js'

/**
 * One lock per model, made to be shared by many users and hosts on a network filesystem
 * (docs/shared-cache.md). Taking it is a rename of a directory built aside; holding it is a
 * heartbeat the filesystem stamps; losing it (another process took it over as stale) aborts `lost`,
 * and from then on the holder writes nothing: `assertHeld()` guards every journal write.
 */
export interface ModelLock {
  release(): Promise<void>
  /** Throws E_LOCKED unless the lock on disk is still ours (a takeover is noticed before a write). */
  assertHeld(): Promise<void>
  /** Aborted when the lock was lost (another process took it over as stale). */
  readonly lost: AbortSignal
}

export interface LockOptions {
  /** How long to wait for another process; 0 = fail at once. */
  waitMs: number
  /** Default: MS_RESUME_LOCK_STALE_MS or 10 s. */
  staleMs?: number
  onWait?: (holder: string) => void
  signal?: AbortSignal
}

export async function acquireModelLock(stateDir: string, opts: LockOptions): Promise<ModelLock> {
  const timing = lockTiming(opts.staleMs ?? knobs.lockStaleMs)
  const lockDir = path.join(stateDir, LOCK_DIR)
  const judge = new StalenessJudge(timing)
  const deadline = performance.now() + opts.waitMs
  let warned = false
  for (;;) {
    let seen = await lookAtLock(stateDir)
    if (!seen) {
      const held = await tryTake(stateDir, timing)
      if (held) {
        await sweepLeftovers(stateDir)
        return held
      }
      // The server says a lock is there: judge it as it is (an older version's without its owner file).
      seen = await sightLock(lockDir)
      if (!seen) {
        await sleep(20)
        continue
      }
    }
    // A holder SIGKILLed in this very pid namespace cannot beat any more; waiting out the staleness
    // (which is there for holders elsewhere) would only cost time.
    if (holderGoneHere(seen.owner)) {
      await moveAside(stateDir, seen, 'stale')
      continue
    }
    const nowMs = await fsNowMs(stateDir).catch(() => undefined)
    const verdict = judge.observe(seen.fingerprint, nowMs === undefined ? undefined : nowMs - seen.heartbeatMs, performance.now())
    if (verdict === 'stale') {
      await moveAside(stateDir, seen, 'stale')
      continue
    }
    // Ctrl-C while waiting is an interruption (exit 130), not a lock failure (exit 6).
    if (opts.signal?.aborted) throw opts.signal.reason instanceof Error ? opts.signal.reason : new MsrError('E_INTERRUPTED', 'Interrupted while waiting for the model lock.', {hint: 'Run the same command again.'})
    const holder = await describeHolder(stateDir, seen)
    // A suspect lock gets one confirmation time past the deadline: a dead holder's lock found at the
    // last moment is still taken over, a live one (its counter moves) is not waited for forever.
    if (performance.now() >= deadline + (verdict === 'suspect' ? timing.confirmMs : 0)) {
      throw new MsrError('E_LOCKED', `Another ms-resume (${holder}) is pulling this model into the same place.`, {
        hint: opts.waitMs > 0 ? 'Wait for it to finish, or raise --lock-wait.' : 'Wait for it to finish, or run again with --lock-wait SECONDS to wait for it.',
      })
    }
    if (!warned) {
      opts.onWait?.(holder)
      warned = true
    }
    await sleep(Math.min(500, timing.beatMs / 2) * (0.75 + Math.random() / 2))
  }
}

/**
 * The lock, if there is one. Its heartbeat and owner files are opened, which asks the server; the
 * directory itself may be a ghost of a client cache (sshfs answers a directory open from its cache
 * for 20 s after another host removed it). So a directory with no heartbeat counts only as the lock
 * of an older ms-resume, whose owner file beside it says so; otherwise there is no lock.
 */
async function lookAtLock(stateDir: string): Promise<LockSighting | undefined> {
  const seen = await sightLock(path.join(stateDir, LOCK_DIR))
  if (!seen || seen.heartbeat) return seen
  const legacyOwner = await readLegacyOwner(stateDir)
  return legacyOwner ? seen : undefined
}

/** Failures of the final rename that mean "there is a lock there" (sshfs says EPERM for ENOTEMPTY). */
const TARGET_TAKEN = new Set(['EEXIST', 'ENOTEMPTY', 'EPERM', 'EACCES', 'EISDIR'])

/**
 * Builds the lock under a unique name (owner record and first heartbeat inside), then renames it to
 * `lock`: the rename fails when a lock is there, so a lock is never seen half made. Not mkdir of
 * `lock` itself: over sshfs a mkdir is refused with EEXIST from the client's directory cache for up
 * to 20 s after another host released the lock, while a rename asks the server. Undefined when
 * another process got there first.
 */
async function tryTake(stateDir: string, timing: LockTiming): Promise<HeldLock | undefined> {
  const lockDir = path.join(stateDir, LOCK_DIR)
  const building = path.join(stateDir, `lock.new-${randomBytes(6).toString('hex')}`)
  try {
    await fs.mkdir(building, {mode: DIR_MODE})
  } catch (error) {
    throw mapFsError(error, 'taking the model lock', stateDir)
  }
  const nonce = randomBytes(16).toString('hex')
  const owner: LockOwner = {nonce, pid: process.pid, ...hostIdentity(), startedAt: new Date().toISOString()}
  try {
    await createSynced(path.join(building, OWNER_FILE), JSON.stringify(owner))
    await createSynced(path.join(building, HEARTBEAT_FILE), heartbeatRecord(nonce, 0))
    await fs.rename(building, lockDir)
  } catch (error) {
    await fs.rm(building, {recursive: true, force: true}).catch(() => {})
    const code = (error as NodeJS.ErrnoException).code ?? ''
    // ENOENT: a new holder swept our half-built directory; someone has the lock.
    if (code === 'ENOENT' || code === 'EEXIST' || code === 'ENOTEMPTY') return undefined
    if (TARGET_TAKEN.has(code) && (await sightLock(lockDir).catch(() => undefined))) return undefined
    throw mapFsError(error, 'taking the model lock', lockDir)
  }
  return new HeldLock(stateDir, nonce, timing)
}

class HeldLock implements ModelLock {
  private readonly lostController = new AbortController()
  private counter = 0
  private timer: NodeJS.Timeout | undefined
  private lastBeatOkMs = performance.now()
  /** When the heartbeat at the lock's path last showed our nonce. */
  private confirmedAtMs = performance.now()
  private released = false
  private beating: Promise<void> = Promise.resolve()
  private readonly heartbeatPath: string

  constructor(private readonly stateDir: string, private readonly nonce: string, private readonly timing: LockTiming) {
    this.heartbeatPath = path.join(stateDir, LOCK_DIR, HEARTBEAT_FILE)
    this.schedule()
    heldLocks.add(this)
  }

  /**
   * At process exit (a second Ctrl-C exits at once): remove the lock if it is still ours, so the
   * next pull on another host does not wait out the staleness.
   */
  releaseAtExit(): void {
    if (this.released || this.lost.aborted) return
    this.released = true
    try {
      if (parseHeartbeat(readFileSync(this.heartbeatPath))?.nonce !== this.nonce) return
      const aside = path.join(this.stateDir, `lock.gone-${randomBytes(6).toString('hex')}`)
      renameSync(path.join(this.stateDir, LOCK_DIR), aside)
      rmSync(aside, {recursive: true, force: true})
    } catch {
      /* the next holder's sweep, or the staleness, takes care of it */
    }
  }

  get lost(): AbortSignal {
    return this.lostController.signal
  }

  /**
   * Reads the heartbeat only when the last proof of ownership (a beat, or an earlier look) is older
   * than one beat: nobody can take a lock over while its beats land, and a look on every journal
   * write queued behind hashing and data writes on the thread pool and slowed checkpoints. A process
   * that was frozen finds its proof old (the monotonic clock ran on) and looks.
   */
  async assertHeld(): Promise<void> {
    if (!this.lost.aborted && performance.now() - this.confirmedAtMs >= this.timing.beatMs) {
      const owner = await this.ownerOnDisk()
      if (owner === this.nonce) this.confirmedAtMs = performance.now()
      else this.lose(owner === undefined ? 'the lock directory is gone' : 'another process took it over')
    }
    if (this.lost.aborted) throw this.lost.reason
  }

  async release(): Promise<void> {
    if (this.released) return
    this.released = true
    heldLocks.delete(this)
    this.stop()
    // A heartbeat in flight would change the counter under the check below and leave the lock behind.
    await this.beating
    if (this.lost.aborted) return
    // Whatever happens, never remove a lock that is not ours: a holder that lost it leaves it be.
    const seen = await sightLock(path.join(this.stateDir, LOCK_DIR)).catch(() => undefined)
    if (seen?.heartbeat?.nonce === this.nonce) await moveAside(this.stateDir, seen, 'gone').catch(() => {})
  }

  private schedule(): void {
    this.timer = setTimeout(() => {
      this.beating = this.beat()
    }, this.timing.beatMs)
    this.timer.unref()
  }

  private stop(): void {
    if (this.timer) clearTimeout(this.timer)
    this.timer = undefined
  }

  /**
   * Rewrites the heartbeat in place (the filesystem stamps its mtime) after checking it is still
   * ours. A heartbeat that cannot be written for longer than the staleness means others may
   * rightly have taken the lock: it counts as lost.
   */
  private async beat(): Promise<void> {
    this.timer = undefined
    if (this.released || this.lost.aborted) return
    try {
      const fh = await fs.open(this.heartbeatPath, fs.constants.O_RDWR | fs.constants.O_NOFOLLOW)
      try {
        const buf = Buffer.alloc(HEARTBEAT_BYTES)
        await fh.read(buf, 0, HEARTBEAT_BYTES, 0)
        if (parseHeartbeat(buf)?.nonce !== this.nonce) {
          this.lose('another process took it over')
          return
        }
        const readAtMs = performance.now()
        await fh.write(heartbeatRecord(this.nonce, ++this.counter), 0, HEARTBEAT_BYTES, 0)
        await syncTolerant(fh)
        this.confirmedAtMs = readAtMs
      } finally {
        await fh.close().catch(() => {})
      }
      this.lastBeatOkMs = performance.now()
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code === 'ENOENT' && (await this.ownerOnDisk()) !== this.nonce) {
        this.lose('the lock directory is gone')
        return
      }
      if (performance.now() - this.lastBeatOkMs > this.timing.staleMs) {
        this.lose(`its heartbeat could not be written for ${Math.round(this.timing.staleMs / 1000)} s (${(error as Error).message})`)
        return
      }
    }
    if (!this.released && !this.lost.aborted) this.schedule()
  }

  /**
   * The nonce in the heartbeat at the lock's path. A takeover that moved our lock aside by mistake
   * puts it back within milliseconds: one missing look is asked again before it counts.
   */
  private async ownerOnDisk(): Promise<string | undefined> {
    for (let attempt = 0; ; attempt++) {
      const heartbeat = await readHeartbeat(this.heartbeatPath).catch(() => undefined)
      if (heartbeat || attempt >= 1) return heartbeat?.nonce
      await sleep(200)
    }
  }

  private lose(why: string): void {
    this.stop()
    this.lostController.abort(new MsrError('E_LOCKED', `Lost the model lock: ${why}. Stopped without writing more.`, {
      hint: 'Another ms-resume took over this model (this one was stalled or cut off for longer than the lock staleness); let it finish, or run again.',
    }))
  }
}

const heldLocks = new Set<HeldLock>()
process.once('exit', () => {
  for (const lock of heldLocks) lock.releaseAtExit()
})

/**
 * Takes a lock out of the way with one rename, then checks that what moved is the lock that was
 * judged (same heartbeat counter, or the same directory): a holder that beat in between, or a lock
 * another process took meanwhile, is put back. A lock that cannot be put back (a third process made
 * a new one) stays lost to its holder, which notices at its next look and stops.
 */
async function moveAside(stateDir: string, seen: LockSighting, why: 'stale' | 'gone'): Promise<void> {
  const lockDir = path.join(stateDir, LOCK_DIR)
  const aside = path.join(stateDir, `lock.${why}-${randomBytes(6).toString('hex')}`)
  try {
    await fs.rename(lockDir, aside)
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'ENOENT') return
    throw mapFsError(error, 'taking over a stale model lock', lockDir)
  }
  const moved = await sightLock(aside).catch(() => undefined)
  const same = moved !== undefined && (seen.heartbeat ? moved.fingerprint === seen.fingerprint : !moved.heartbeat && moved.dirIno === seen.dirIno)
  if (!same) {
    try {
      await fs.rename(aside, lockDir)
      return
    } catch {
      /* a new lock is there already */
    }
  }
  await fs.rm(aside, {recursive: true, force: true}).catch(() => {})
}

/** True only when the holder ran in this pid namespace of this boot, and its pid is gone. */
function holderGoneHere(owner: LockOwner | undefined): boolean {
  if (!owner || owner.pid === process.pid || !samePidSpace(owner)) return false
  try {
    process.kill(owner.pid, 0)
    return false
  } catch (error) {
    return (error as NodeJS.ErrnoException).code === 'ESRCH'
  }
}

/**
 * What a holder (dead or alive) left that no one needs: lock directories moved aside, clock probes,
 * and the owner file and temp files of older versions. Only the lock holder sweeps, in the
 * background; nothing here is worth failing a pull for.
 */
async function sweepLeftovers(stateDir: string): Promise<void> {
  let names: string[]
  try {
    names = await fs.readdir(stateDir)
  } catch {
    return
  }
  for (const name of names) {
    const target = path.join(stateDir, name)
    if (LOCK_ASIDE.test(name)) await fs.rm(target, {recursive: true, force: true}).catch(() => {})
    else if (name === LEGACY_OWNER_FILE || LEGACY_OWNER_TEMP.test(name) || CLOCK_PROBE.test(name)) await unlinkFile(target)
  }
}

/** Unlinks a regular file; never a directory, never through a symlink (unlink removes the link). */
async function unlinkFile(target: string): Promise<void> {
  const stat = await fs.lstat(target).catch(() => undefined)
  if (stat && !stat.isDirectory()) await fs.unlink(target).catch(() => {})
}

function describeOwner(owner: {pid: number; host: string; user?: string}): string {
  return `pid ${owner.pid} on ${owner.host}${'user' in owner && owner.user ? ` (${owner.user})` : ''}`
}

async function describeHolder(stateDir: string, seen: LockSighting): Promise<string> {
  if (seen.owner) return describeOwner(seen.owner)
  const legacy = await readLegacyOwner(stateDir)
  return legacy && !seen.heartbeat ? describeOwner(legacy) : 'another process'
}

/** The lock as `status` shows it. Times are the filesystem's. */
export interface LockInfo {
  /** `pid N on HOST (user)`, or `another process` when the holder did not say. */
  holder: string
  host?: string
  pid?: number
  user?: string
  /** When the lock was taken. */
  since: string
  /** The holder's last heartbeat. */
  heartbeatAt: string
  /** By the filesystem's clock; absent when that clock cannot be read (no write access here). */
  heartbeatAgeMs?: number
  /** The next pull takes it over: its holder is gone from this host, or its heartbeat is older than the staleness. */
  stale: boolean
}

/**
 * Who holds the model lock, without taking it (status, clean --dry-run). Reading the filesystem's
 * clock writes a probe file for a moment, and only when there is a lock; a reader who cannot write
 * gets the facts without an age.
 */
export async function inspectModelLock(stateDir: string, staleMs = knobs.lockStaleMs): Promise<LockInfo | undefined> {
  const seen = await lookAtLock(stateDir).catch(() => undefined)
  if (!seen) return undefined
  const nowMs = await fsNowMs(stateDir).catch(() => undefined)
  const ageMs = nowMs === undefined ? undefined : Math.max(0, nowMs - seen.heartbeatMs)
  const legacy = seen.owner ? undefined : await readLegacyOwner(stateDir)
  const who = seen.owner ?? (seen.heartbeat ? undefined : legacy)
  return {
    holder: await describeHolder(stateDir, seen),
    ...(who ? {host: who.host, pid: who.pid} : {}),
    ...(seen.owner?.user ? {user: seen.owner.user} : {}),
    since: new Date(seen.sinceMs).toISOString(),
    heartbeatAt: new Date(seen.heartbeatMs).toISOString(),
    ...(ageMs === undefined ? {} : {heartbeatAgeMs: Math.round(ageMs)}),
    stale: holderGoneHere(seen.owner) || (ageMs !== undefined && ageMs > staleMs),
  }
}

/** `pid N on HOST` while a live holder has the lock; undefined when nobody does or it is stale. */
export async function peekModelLock(stateDir: string, staleMs?: number): Promise<string | undefined> {
  const info = await inspectModelLock(stateDir, staleMs)
  return info && !info.stale ? info.holder : undefined
}

function mapFsError(error: unknown, what: string, where: string): unknown {
  if (isMsrError(error)) return error
  return fromFsError(error, what, where)
}

function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms))
}
