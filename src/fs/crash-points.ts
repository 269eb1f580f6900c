import {knobs} from '../config.js'

/**
 * Test hook: MS_RESUME_CRASH_AT="<point>[:<n>]" SIGKILLs this process the n-th time (default 1st)
 * it reaches the named point, so tests can prove a kill inside a checkpoint never tears state.
 * Points: after-data-fsync, after-journal-temp, before-journal-rename, before-finalize-rename.
 */
let seen = 0

export function crashPoint(point: string): void {
  if (point !== knobs.crashAt?.point) return
  seen++
  if (seen === knobs.crashAt.count) process.kill(process.pid, 'SIGKILL')
}
