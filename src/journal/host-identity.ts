import {readFileSync, readlinkSync} from 'node:fs'
import os from 'node:os'

/**
 * What a pid means only together with: the host name, the pid namespace and the boot. Two
 * containers with one host name (`--network host`, Kubernetes `hostNetwork`) share caches but not
 * pids: a pid that does not exist here may be a live pull in the other container.
 */
export interface HostIdentity {
  host: string
  /** `pid:[inode]` of /proc/self/ns/pid; undefined where there is no /proc. */
  pidNs?: string
  /** /proc/sys/kernel/random/boot_id: a pid of an earlier boot is nobody's now. */
  bootId?: string
  user?: string
}

export const PID_NS = /^pid:\[\d{1,20}\]$/
export const BOOT_ID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/

let cached: HostIdentity | undefined

export function hostIdentity(): HostIdentity {
  if (cached) return cached
  const pidNs = tryRead(() => readlinkSync('/proc/self/ns/pid'))
  const bootId = tryRead(() => readFileSync('/proc/sys/kernel/random/boot_id', 'utf8').trim())
  cached = {
    host: os.hostname(),
    pidNs: pidNs && PID_NS.test(pidNs) ? pidNs : undefined,
    bootId: bootId && BOOT_ID.test(bootId) ? bootId : undefined,
    user: tryRead(() => os.userInfo().username),
  }
  return cached
}

/**
 * True when a pid recorded by `other` can be looked up with kill(pid, 0) here. On Linux both
 * namespace and boot must be known and equal; elsewhere (no /proc, no containers sharing a host
 * name) the host name has to do.
 */
export function samePidSpace(other: {host: string; pidNs?: string; bootId?: string}, me: HostIdentity = hostIdentity()): boolean {
  if (other.host !== me.host) return false
  if (process.platform === 'linux' && (me.pidNs === undefined || me.bootId === undefined)) return false
  return other.pidNs === me.pidNs && other.bootId === me.bootId
}

function tryRead(read: () => string): string | undefined {
  try {
    return read()
  } catch {
    return undefined
  }
}
