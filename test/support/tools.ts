import {spawnSync} from 'node:child_process'

import {skipBecause} from './process.js'

/** Whether `cmd` runs here (an absolute path, or a name on PATH). */
export function haveCommand(cmd: string): boolean {
  return spawnSync('sh', ['-c', 'command -v "$1"', 'sh', cmd], {stdio: 'ignore'}).status === 0
}

/**
 * Skips a test whose tool is missing on a laptop, but fails it under CI=true: there `.ci/run` installs
 * the tool, and a skip would let a broken install pass unnoticed. `ctx` is mocha's `this`.
 */
export function requireTool(ctx: Pick<Mocha.Context, 'skip' | 'test'>, cmd: string, aptPackage: string): void {
  if (!haveCommand(cmd)) skipBecause(ctx, `${cmd} is missing: .ci/run must install ${aptPackage}`)
}
