import {getHeapSpaceStatistics, setFlagsFromString} from 'node:v8'

/**
 * V8 flags set while a command runs, never at start-up: a V8 flag set at run time changes the flag
 * hash that Node's built-in modules' code cache is checked against, and every built-in loaded
 * afterwards is compiled from source (set before a no-op pull loaded http, crypto and the rest:
 * 14 ms, 240 -> 254 ms, 25 runs interleaved). The bundle's own code cache was checked before.
 */

/** The young generation stops growing at this size (two semi-spaces of half of it). */
const NEW_SPACE_CAP_BYTES = 8 * 1024 * 1024
/** From this old generation on, it may grow by 30 % of its live size between collections. */
const OLD_SPACE_BOUND_BYTES = 12 * 1024 * 1024

/**
 * V8's defaults let a pull of 100,000 small files reach 400 MB of RSS holding 60 MB of live data:
 * semi-spaces grown to 16 MiB each, and an old generation allowed to double between collections.
 * The young generation stops growing at 8 MiB (1 MiB kept request-scoped objects too short a time
 * and promoted them), and the old generation may grow by 30 % of its live size. Measured on 3,000
 * small files: peak RSS 155-163 -> 122-127 MB, CPU within noise (+0.1 s of 3.5). 50 % let a pull of
 * 100,000 files hold 157 MB before its end; 30 %: 145 MB.
 *
 * Each flag is set once its space has grown that far, never at start-up (see above).
 */
export function boundHeap(set: (flags: string) => void = setFlagsFromString, spaces = getHeapSpaceStatistics): NodeJS.Timeout {
  let young = false
  let old = false
  const cap = setInterval(() => {
    for (const s of spaces()) {
      if (!young && s.space_name === 'new_space' && s.space_size >= NEW_SPACE_CAP_BYTES) {
        set('--semi-space-growth-factor=1')
        young = true
      }
      if (!old && s.space_name === 'old_space' && s.space_size >= OLD_SPACE_BOUND_BYTES) {
        set('--heap-growing-percent=30')
        old = true
      }
    }
    if (young && old) clearInterval(cap)
  }, 50)
  cap.unref()
  return cap
}

/**
 * V8 optimises a function once it has run about 66 KB of bytecode (--interrupt-budget). A pull of
 * 3,000 small files runs a hundred functions a few thousand times each: just enough for each to
 * be optimised, at 1-5 ms of compiling apiece, code that then runs for three seconds. That was a
 * fifth of the pull's CPU (perf: 0.31 of 1.58 s). Sixteen times the budget leaves optimising to
 * the functions that run for real (a large file's loops still get there in milliseconds): user
 * CPU of the 3,000-file pull 1.47 -> 1.29 s, median of 12 interleaved runs (8 x: 1.39 s).
 * Set when a pull starts downloading: a no-op pull loads every built-in it needs first.
 */
export const LONG_RUN_FLAGS = '--interrupt-budget=1081344'

let longRun = false

/** The flags for a command that will run for a while (LONG_RUN_FLAGS); once per process. */
export function tuneForLongRun(set: (flags: string) => void = setFlagsFromString): boolean {
  if (longRun) return false
  longRun = true
  set(LONG_RUN_FLAGS)
  return true
}
