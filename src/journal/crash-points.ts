/**
 * Test hook: MS_RESUME_CRASH_AT="<point>[:<n>]" SIGKILLs this process the n-th time (default 1st)
 * it reaches the named point, so tests can prove a kill inside a checkpoint never tears state.
 * Points: after-data-fsync, after-journal-temp, before-journal-rename, before-finalize-rename.
 */
const spec = process.env.MS_RESUME_CRASH_AT
const [wantedPoint, wantedCount] = spec ? [spec.split(':')[0], Number(spec.split(':')[1] ?? 1)] : [undefined, 0]
let seen = 0

export function crashPoint(point: string): void {
  if (point !== wantedPoint) return
  seen++
  if (seen === wantedCount) process.kill(process.pid, 'SIGKILL')
}
