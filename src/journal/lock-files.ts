import fs from 'node:fs/promises'
import path from 'node:path'

import {MsrError} from '../errors.js'
import {fromFsError} from '../fs/fs-errors.js'
import {FILE_MODE} from '../fs/file-modes.js'
import {BOOT_ID, type HostIdentity, PID_NS} from './host-identity.js'

/**
 * The model lock on disk:
 *
 *   .ms-resume/lock/             built as lock.new-<hex>, then renamed to `lock`: the rename is atomic
 *                                and fails when a lock is there (local disks, NFS, CephFS, Lustre, sshfs)
 *   .ms-resume/lock/owner.json   who holds it (host, pid, pid namespace, boot id, user), written once
 *   .ms-resume/lock/heartbeat    HEARTBEAT_BYTES rewritten in place every beat: nonce and counter
 *
 * Owner and heartbeat live inside the lock directory, so they always describe that lock: a holder
 * never deletes the owner record of the next one, and no temp file is ever left beside it. An
 * ms-resume before these files made an empty `lock/` (and `lock-owner.json` beside it); such a
 * lock is judged by the directory's own mtime.
 */
export const LOCK_DIR = 'lock'
export const OWNER_FILE = 'owner.json'
export const HEARTBEAT_FILE = 'heartbeat'
/** Fixed size: a reader whose cached size is old still reads the whole record (sshfs does that). */
export const HEARTBEAT_BYTES = 64
/** Lock directories being built, or moved aside by a takeover or a release; gone within moments, or swept by the next holder. */
export const LOCK_ASIDE = /^lock\.(new|stale|gone)-[0-9a-f]{12}$/
/** What older versions left beside the lock. */
export const LEGACY_OWNER_FILE = 'lock-owner.json'
export const LEGACY_OWNER_TEMP = /^\.lock-owner\.json\.\d+\.tmp$/

const NONCE = /^[0-9a-f]{32}$/
const HEARTBEAT = /^v1 ([0-9a-f]{32}) (\d{12}) *\n$/
const MAX_OWNER_BYTES = 4096

export interface LockOwner extends HostIdentity {
  nonce: string
  pid: number
  /** The holder's own clock; shown, never compared with anything. */
  startedAt?: string
}

export interface Heartbeat {
  nonce: string
  counter: number
}

/** What a look at a lock directory found. */
export interface LockSighting {
  /** Changes on every heartbeat, and between two locks: `hb:<nonce>:<counter>` or `dir:<ino>:<mtime>`. */
  fingerprint: string
  heartbeat?: Heartbeat
  /** Last sign of life by the filesystem's clock: the heartbeat's mtime, else the directory's. */
  heartbeatMs: number
  /** When the lock was taken, by the filesystem's clock (the owner file's mtime, else the directory's). */
  sinceMs: number
  dirIno: number
  owner?: LockOwner
}

export function heartbeatRecord(nonce: string, counter: number): Buffer {
  const text = `v1 ${nonce} ${String(counter % 1e12).padStart(12, '0')}`
  return Buffer.from(`${text.padEnd(HEARTBEAT_BYTES - 1)}\n`)
}

export function parseHeartbeat(buf: Buffer): Heartbeat | undefined {
  const m = HEARTBEAT.exec(buf.toString('latin1'))
  return m ? {nonce: m[1], counter: Number(m[2])} : undefined
}

/** An owner record is input like any state file: every field checked before it is shown or used. */
export function parseOwner(text: string): LockOwner | undefined {
  let doc: unknown
  try {
    doc = JSON.parse(text)
  } catch {
    return undefined
  }
  if (typeof doc !== 'object' || doc === null || Array.isArray(doc)) return undefined
  const o = doc as Record<string, unknown>
  if (typeof o.nonce !== 'string' || !NONCE.test(o.nonce)) return undefined
  if (typeof o.pid !== 'number' || !Number.isSafeInteger(o.pid) || o.pid <= 0 || o.pid > 0x3fffffff) return undefined
  if (!isName(o.host)) return undefined
  return {
    nonce: o.nonce,
    pid: o.pid,
    host: o.host,
    pidNs: typeof o.pidNs === 'string' && PID_NS.test(o.pidNs) ? o.pidNs : undefined,
    bootId: typeof o.bootId === 'string' && BOOT_ID.test(o.bootId) ? o.bootId : undefined,
    user: isName(o.user) ? o.user : undefined,
    startedAt: typeof o.startedAt === 'string' && !Number.isNaN(Date.parse(o.startedAt)) && o.startedAt.length <= 40 ? o.startedAt : undefined,
  }
}

/** The legacy `lock-owner.json` ({pid, host}); shown only, never used to judge a lock. */
export function parseLegacyOwner(text: string): {pid: number; host: string} | undefined {
  try {
    const o = JSON.parse(text) as Record<string, unknown>
    if (typeof o.pid === 'number' && Number.isSafeInteger(o.pid) && o.pid > 0 && isName(o.host)) return {pid: o.pid, host: o.host}
  } catch {
    /* unreadable: nobody to name */
  }
  return undefined
}

/** The legacy owner file beside the lock (never a FIFO or a symlink, at most 4 KiB); undefined when absent or unreadable. */
export async function readLegacyOwner(stateDir: string): Promise<{pid: number; host: string} | undefined> {
  const file = await readSmallFile(path.join(stateDir, LEGACY_OWNER_FILE), MAX_OWNER_BYTES).catch(() => undefined)
  return file ? parseLegacyOwner(file.data.toString('utf8')) : undefined
}

/** Printable, no control characters, bounded: it ends up in messages and on terminals. */
function isName(v: unknown): v is string {
  return typeof v === 'string' && v.length > 0 && v.length <= 255 && !/[\u0000-\u001f\u007f]/.test(v)
}

/** The heartbeat at `file` (one open and one read: a holder asks before every journal write). */
export async function readHeartbeat(file: string): Promise<Heartbeat | undefined> {
  const hb = await readSmallFile(file, HEARTBEAT_BYTES)
  return hb ? parseHeartbeat(hb.data) : undefined
}

/**
 * Looks at a lock directory without writing: undefined when there is none. Every file is opened
 * (not just stat()ed): on NFS an open revalidates cached attributes (close-to-open), and sshfs
 * answers a bare stat() from a cache that can be 20 s old.
 */
export async function sightLock(dir: string): Promise<LockSighting | undefined> {
  let dirStat
  try {
    const dh = await fs.open(dir, fs.constants.O_RDONLY | fs.constants.O_DIRECTORY | fs.constants.O_NOFOLLOW)
    try {
      dirStat = await dh.stat()
    } finally {
      await dh.close()
    }
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code
    if (code === 'ENOENT') return undefined
    if (code === 'ENOTDIR' || code === 'ELOOP') {
      throw new MsrError('E_LOCAL', `${dir} is not a directory: ms-resume's lock cannot work with it there.`, {path: dir, hint: 'Remove it (ms-resume never makes it), then run again.'})
    }
    throw error
  }
  const hb = await readSmallFile(path.join(dir, HEARTBEAT_FILE), HEARTBEAT_BYTES)
  const heartbeat = hb ? parseHeartbeat(hb.data) : undefined
  const own = await readSmallFile(path.join(dir, OWNER_FILE), MAX_OWNER_BYTES)
  const owner = own ? parseOwner(own.data.toString('utf8')) : undefined
  return {
    fingerprint: heartbeat && hb ? `hb:${heartbeat.nonce}:${heartbeat.counter}` : `dir:${dirStat.ino}:${dirStat.mtimeMs}`,
    heartbeat,
    heartbeatMs: heartbeat && hb ? hb.mtimeMs : dirStat.mtimeMs,
    sinceMs: own && owner ? own.mtimeMs : dirStat.mtimeMs,
    dirIno: dirStat.ino,
    owner: owner && heartbeat && owner.nonce !== heartbeat.nonce ? undefined : owner,
  }
}

/**
 * A regular file's first `max` bytes and mtime; undefined when absent, not a file, or a symlink.
 * No permission to read it is said (E_PERMISSION): a lock whose heartbeat cannot be read would
 * otherwise look like no lock, or a dead one.
 */
async function readSmallFile(file: string, max: number): Promise<{data: Buffer; mtimeMs: number} | undefined> {
  let fh
  try {
    fh = await fs.open(file, fs.constants.O_RDONLY | fs.constants.O_NOFOLLOW | fs.constants.O_NONBLOCK)
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code
    if (code === 'EACCES' || code === 'EPERM') throw fromFsError(error, 'reading the model lock', file)
    return undefined
  }
  try {
    const stat = await fh.stat()
    if (!stat.isFile()) return undefined
    const buf = Buffer.alloc(max)
    const {bytesRead} = await fh.read(buf, 0, max, 0)
    return {data: buf.subarray(0, bytesRead), mtimeMs: stat.mtimeMs}
  } catch {
    return undefined
  } finally {
    await fh.close().catch(() => {})
  }
}

/** Creates a file that must not exist yet (O_EXCL, no symlink followed), writes it and syncs it. */
export async function createSynced(file: string, data: Buffer | string): Promise<void> {
  const fh = await fs.open(file, fs.constants.O_WRONLY | fs.constants.O_CREAT | fs.constants.O_EXCL | fs.constants.O_NOFOLLOW, FILE_MODE)
  try {
    await fh.writeFile(data)
    await syncTolerant(fh)
  } finally {
    await fh.close()
  }
}

/** fsync, except where a filesystem refuses it (EINVAL and kin on some network filesystems). */
export async function syncTolerant(fh: fs.FileHandle): Promise<void> {
  try {
    await fh.sync()
  } catch (error) {
    if (!['EINVAL', 'ENOTSUP', 'EOPNOTSUPP', 'ENOSYS'].includes((error as NodeJS.ErrnoException).code ?? '')) throw error
  }
}
