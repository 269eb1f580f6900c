import {type ChildProcess, execFile, spawn} from 'node:child_process'
import fs from 'node:fs/promises'
import net from 'node:net'
import path from 'node:path'
import {promisify} from 'node:util'

import {BIN} from './cli.js'
import {skipBecause} from './process.js'

const exec = promisify(execFile)

/**
 * A missing tool skips the test on a laptop and fails it in CI (CI=true), where `.ci/run` installs
 * everything: a silent skip there would hide that the shared-cache guarantees went untested.
 */
export function needOrSkip(ctx: Mocha.Context, reason: string | undefined): void {
  if (reason) skipBecause(ctx, reason)
}

async function which(cmd: string): Promise<boolean> {
  return exec('sh', ['-c', `command -v ${cmd}`]).then(() => true, () => false)
}

/** Why the network-filesystem tests cannot run here, or undefined when they can. */
export async function sshfsUnavailable(): Promise<string | undefined> {
  if (process.getuid?.() !== 0) return 'sshd, FUSE and unshare need root'
  for (const f of ['/usr/sbin/sshd', '/dev/fuse']) {
    if (!(await fs.stat(f).then(() => true, () => false))) return `${f} is missing (apt-get install openssh-server sshfs)`
  }
  for (const cmd of ['sshfs', 'ssh-keygen', 'unshare']) if (!(await which(cmd))) return `${cmd} is not installed`
  return undefined
}

const LIBFAKETIME = ['/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1', '/usr/lib/aarch64-linux-gnu/faketime/libfaketime.so.1', '/usr/lib/faketime/libfaketime.so.1']

/** libfaketime's path, preloaded directly: the `faketime` wrapper's semaphore, named by pid, collides across pid namespaces. */
export async function findLibfaketime(): Promise<string | undefined> {
  for (const lib of LIBFAKETIME) if (await fs.stat(lib).then(() => true, () => false)) return lib
  return undefined
}

export async function faketimeUnavailable(): Promise<string | undefined> {
  return (await findLibfaketime()) ? undefined : 'libfaketime is not installed (apt-get install faketime)'
}

async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = net.createServer()
    server.once('error', reject)
    server.listen(0, '127.0.0.1', () => {
      const {port} = server.address() as net.AddressInfo
      server.close(() => resolve(port))
    })
  })
}

/**
 * One directory exported by an sshd on 127.0.0.1 (throwaway host and user keys, internal-sftp) and
 * mounted twice with sshfs: two clients of one network filesystem, each with its own attribute
 * cache, mtimes set by the server, and 1 s timestamp resolution (SFTP v3).
 */
export class SshfsPair {
  private constructor(readonly root: string, readonly exportDir: string, readonly mounts: [string, string], private readonly sshdPidFile: string) {}

  static async start(root: string): Promise<SshfsPair> {
    const exportDir = path.join(root, 'export')
    const mounts: [string, string] = [path.join(root, 'host-a'), path.join(root, 'host-b')]
    const keys = path.join(root, 'keys')
    for (const d of [exportDir, ...mounts, keys]) await fs.mkdir(d, {recursive: true})
    await fs.chmod(keys, 0o700)
    await exec('ssh-keygen', ['-q', '-t', 'ed25519', '-N', '', '-f', path.join(keys, 'host')])
    await exec('ssh-keygen', ['-q', '-t', 'ed25519', '-N', '', '-f', path.join(keys, 'user')])
    const port = await freePort()
    const pidFile = path.join(root, 'sshd.pid')
    const config = path.join(root, 'sshd_config')
    await fs.writeFile(config, [
      `Port ${port}`, 'ListenAddress 127.0.0.1', `HostKey ${path.join(keys, 'host')}`,
      `AuthorizedKeysFile ${path.join(keys, 'user.pub')}`, 'PermitRootLogin prohibit-password',
      'PasswordAuthentication no', 'KbdInteractiveAuthentication no', 'UsePAM no', 'StrictModes no',
      `PidFile ${pidFile}`, 'Subsystem sftp internal-sftp', '',
    ].join('\n'))
    await fs.mkdir('/run/sshd', {recursive: true}) // privilege separation directory sshd insists on
    await exec('/usr/sbin/sshd', ['-f', config, '-E', path.join(root, 'sshd.log')])
    const pair = new SshfsPair(root, exportDir, mounts, pidFile)
    try {
      for (const m of mounts) {
        await exec('sshfs', ['-F', '/dev/null', '-p', String(port), '-o',
          `IdentityFile=${path.join(keys, 'user')},StrictHostKeyChecking=no,UserKnownHostsFile=/dev/null,BatchMode=yes,LogLevel=ERROR`,
          `root@127.0.0.1:${exportDir}`, m])
      }
    } catch (error) {
      await pair.stop()
      throw error
    }
    return pair
  }

  async stop(): Promise<void> {
    for (const m of this.mounts) {
      for (const cmd of [['fusermount3', '-u', m], ['fusermount', '-u', m], ['umount', '-l', m]]) {
        if (await exec(cmd[0], cmd.slice(1)).then(() => true, () => false)) break
      }
    }
    const pid = Number((await fs.readFile(this.sshdPidFile, 'utf8').catch(() => '')).trim())
    if (Number.isSafeInteger(pid) && pid > 0) {
      try {
        process.kill(pid, 'SIGTERM')
      } catch {
        /* already gone */
      }
    }
  }
}

export interface HostOptions {
  hostname: string
  env: NodeJS.ProcessEnv
  /** Processes started (and ended) first in the new pid namespace, so the CLI's pid differs between "hosts". */
  burnPids?: number
  /** libfaketime and an offset for the CLI's clock, e.g. '+1h' (the kernel and the server keep the real time). */
  faketime?: {lib: string; offset: string}
}

/**
 * The CLI on another "host": its own host name and pid namespace (`unshare -u -p -f --kill-child
 * --mount-proc`), in its own process group: `signalGroup(child, 'SIGKILL')` kills everything on
 * that "host" at once, as a crash would; SIGSTOP / SIGCONT freeze and thaw it. The CLI does not run as pid 1 (a shell waits for it), so its pid is an ordinary one.
 */
export function startOnHost(args: string[], opts: HostOptions): ChildProcess {
  const argv = [process.execPath, BIN, ...args]
  const clock = opts.faketime ? ['env', `LD_PRELOAD=${opts.faketime.lib}`, `FAKETIME=${opts.faketime.offset}`, 'FAKETIME_DONT_FAKE_MONOTONIC=1'] : []
  const script = [
    'hostname "$1"', 'shift',
    `i=0; while [ $i -lt ${opts.burnPids ?? 0} ]; do /bin/true; i=$((i+1)); done`,
    '"$@"',
  ].join('\n')
  return spawn('unshare', ['-u', '-p', '-f', '--kill-child', '--mount-proc', 'sh', '-c', script, 'sh', opts.hostname, ...clock, ...argv], {
    env: opts.env, stdio: ['ignore', 'pipe', 'pipe'], detached: true,
  })
}

/**
 * The CLI as another user (runuser) with a umask. In its own process group: runuser forks, so
 * `signalGroup` is what reaches the CLI itself.
 */
export function startAs(user: string, umask: string, args: string[], env: NodeJS.ProcessEnv): ChildProcess {
  return spawn('runuser', ['-p', '-u', user, '--', 'sh', '-c', `umask ${umask}; exec "$@"`, 'sh', process.execPath, BIN, ...args], {
    env, stdio: ['ignore', 'pipe', 'pipe'], detached: true,
  })
}

/** A signal to every process of a child started in its own group (a "host", a runuser'd CLI). */
export function signalGroup(child: ChildProcess, signal: NodeJS.Signals): void {
  try {
    process.kill(-child.pid!, signal)
  } catch {
    /* already gone */
  }
}

/** Creates a group and users in it once per machine (names prefixed msr- so nothing real collides). */
export async function ensureTeam(group: string, users: string[], outsider: string): Promise<string | undefined> {
  if (process.getuid?.() !== 0) return 'creating users needs root'
  for (const cmd of ['useradd', 'groupadd', 'runuser']) if (!(await which(cmd))) return `${cmd} is not installed`
  if (!(await exec('getent', ['group', group]).then(() => true, () => false))) await exec('groupadd', [group])
  for (const u of [...users, outsider]) {
    if (await exec('id', [u]).then(() => true, () => false)) continue
    await exec('useradd', ['-M', '-s', '/usr/sbin/nologin', ...(users.includes(u) ? ['-G', group] : []), u])
  }
  return undefined
}
