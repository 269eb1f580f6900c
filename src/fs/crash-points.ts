import {knobs} from '../config.js'

/**
 * Test hook: MS_RESUME_CRASH_AT="<point>[:<n>]" SIGKILLs this process the n-th time (default 1st)
 * it reaches the named point, so tests can prove a kill inside a checkpoint never tears state.
 * Points: after-data-fsync, after-journal-temp, before-journal-rename (every durable file write:
 * journal snapshot, log reset, manifest), mid-journal-append (half a log batch written),
 * after-journal-append (a batch written, not yet fdatasynced), after-journal-snapshot (a compaction's
 * snapshot in place, the old log not yet replaced), before-finalize-rename.
 */
let seen = 0

/** Whether a test asked for a kill at `point` (to write in two halves around it, for one). */
export function crashPointArmed(point: string): boolean {
  return point === knobs.crashAt?.point
}

export function crashPoint(point: string): void {
  if (point !== knobs.crashAt?.point) return
  seen++
  if (seen === knobs.crashAt.count) process.kill(process.pid, 'SIGKILL')
}
