import {type ChildProcess, execFile, spawn} from 'node:child_process'
import fs from 'node:fs/promises'
import path from 'node:path'
import {fileURLToPath} from 'node:url'
import {promisify} from 'node:util'

import {waitUntil} from './process.js'

const exec = promisify(execFile)
const DAEMON = path.join(path.dirname(fileURLToPath(import.meta.url)), 'forgetful_fs.py')
/** Debian's python3 (python3-fusepy installs there), not a pyenv one on the PATH. */
const PYTHON = '/usr/bin/python3'

/** Why a forgetful file system cannot be mounted here, or undefined when it can. */
export async function forgetfulFsUnavailable(): Promise<string | undefined> {
  if (process.getuid?.() !== 0) return 'mounting FUSE with allow_other needs root'
  if (!(await fs.stat('/dev/fuse').then(() => true, () => false))) return '/dev/fuse is missing'
  const probe = await exec(PYTHON, ['-c', 'import fusepy']).then(() => undefined, () => `${PYTHON} cannot import fusepy (apt-get install python3-fusepy)`)
  if (probe) return probe
  return exec('sh', ['-c', 'command -v fusermount']).then(() => undefined, () => 'fusermount is not installed (apt-get install fuse)')
}

async function mounted(dir: string): Promise<boolean> {
  const mounts = await fs.readFile('/proc/self/mounts', 'utf8')
  return mounts.split('\n').some((line) => line.split(' ')[1] === dir)
}

/**
 * A mount of test/support/forgetful_fs.py: `backing` seen at `mountPoint`, file data held in the
 * daemon's memory until fsync/fdatasync. `powerCut()` kills the daemon and detaches the mount: what
 * is left in `backing` is what a disk holds after a power cut; `mount()` again to go on.
 */
export class ForgetfulFs {
  private daemon: ChildProcess | undefined

  constructor(readonly backing: string, readonly mountPoint: string) {}

  async mount(): Promise<void> {
    await fs.mkdir(this.backing, {recursive: true})
    await fs.mkdir(this.mountPoint, {recursive: true})
    const daemon = spawn(PYTHON, [DAEMON, this.backing, this.mountPoint], {stdio: ['ignore', 'ignore', 'pipe']})
    let stderr = ''
    daemon.stderr?.on('data', (d: Buffer) => (stderr += d.toString()))
    this.daemon = daemon
    await waitUntil(async () => {
      if (daemon.exitCode !== null) throw new Error(`forgetful_fs.py exited: ${stderr}`)
      return mounted(this.mountPoint)
    }, 'the forgetful file system to mount', 10_000)
  }

  /** Everything not fsynced is gone (also how a test unmounts). */
  async powerCut(): Promise<void> {
    const daemon = this.daemon
    this.daemon = undefined
    if (daemon && daemon.exitCode === null) {
      const gone = new Promise((resolve) => daemon.once('exit', resolve))
      daemon.kill('SIGKILL')
      await gone
    }
    await exec('fusermount', ['-u', '-z', this.mountPoint]).catch(() => {})
  }
}
