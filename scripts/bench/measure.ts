import {type ChildProcess, spawn, spawnSync} from 'node:child_process'
import fs from 'node:fs/promises'
import path from 'node:path'

/** One run of one command: wall time, peak RSS and CPU (user + system, children included). */
export interface Measured {
  seconds: number
  rssMiB: number
  cpuSeconds: number
  /** The user-mode part of cpuSeconds (the "user CPU"; system time is the kernel's, and VMs differ most there). */
  userSeconds: number
  code: number | null
  stderr: string
}

export const has = (cmd: string): boolean => spawnSync('sh', ['-c', 'command -v "$1"', 'sh', cmd], {stdio: 'ignore'}).status === 0
export const HAVE_GNU_TIME = spawnSync('/usr/bin/time', ['-f', '%M', 'true'], {stdio: 'ignore'}).status === 0

export interface RunOptions {
  cwd: string
  env?: NodeJS.ProcessEnv
  /** Called with the child as soon as it runs (to kill it at a moment of the caller's choosing). */
  onSpawn?: (child: ChildProcess) => void
}

/**
 * Runs a command under GNU time (`%M %U %S`: peak RSS and CPU from wait4, so a tool's own children
 * count too) and times it from spawn to exit. Without GNU time, RSS and CPU are NaN.
 */
export function measure(cmd: string, args: string[], o: RunOptions): Promise<Measured> {
  return new Promise((resolve) => {
    const statsFile = path.join(o.cwd, `.time-${process.pid}-${Math.random().toString(16).slice(2)}`)
    const [file, fileArgs] = HAVE_GNU_TIME ? ['/usr/bin/time', ['-f', '%M %U %S', '-o', statsFile, cmd, ...args]] : [cmd, args]
    const started = performance.now()
    const child = spawn(file, fileArgs, {cwd: o.cwd, env: o.env ?? process.env, stdio: ['ignore', 'ignore', 'pipe']})
    o.onSpawn?.(child)
    let stderr = ''
    child.stderr!.on('data', (d) => (stderr = (stderr + d).slice(-4000)))
    child.on('close', async (code) => {
      const seconds = (performance.now() - started) / 1000
      let rssMiB = Number.NaN
      let cpuSeconds = Number.NaN
      let userSeconds = Number.NaN
      if (HAVE_GNU_TIME) {
        // GNU time writes "Command exited with non-zero status N" (or "terminated by signal") first.
        const last = (await fs.readFile(statsFile, 'utf8').catch(() => '')).trim().split('\n').pop() ?? ''
        const [kb, user, sys] = last.split(' ').map(Number)
        rssMiB = kb / 1024
        cpuSeconds = user + sys
        userSeconds = user
        await fs.rm(statsFile, {force: true})
      }
      resolve({seconds, rssMiB, cpuSeconds, userSeconds, code, stderr})
    })
  })
}

export function median(xs: number[]): number {
  const s = xs.filter((x) => Number.isFinite(x)).sort((a, b) => a - b)
  if (s.length === 0) return Number.NaN
  return s.length % 2 ? s[(s.length - 1) / 2] : (s[s.length / 2 - 1] + s[s.length / 2]) / 2
}
