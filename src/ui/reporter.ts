import type {MsrError} from '../errors.js'
import type {PullEvent} from '../events.js'
import type {PullSummary} from '../pull/pull.js'

/** Turns a pull's events into output; one per output mode. */
export interface Reporter {
  event(e: PullEvent): void
  summary(s: PullSummary, extra?: {printPath?: boolean}): void
  /**
   * The pull failed with `error` (`original` is what was thrown). JSON prints the error event and
   * then the summary; the others print the summary and leave the error line to the command.
   */
  failed(error: MsrError, original: unknown, summary?: PullSummary): void
  close(): void
}

export type OutputMode = 'tty' | 'plain' | 'json' | 'quiet'

export interface ModeStream {
  isTTY?: boolean
  columns?: number
}

export function outputMode(flags: {json?: boolean; quiet?: boolean}, stream: ModeStream = process.stderr, env: NodeJS.ProcessEnv = process.env): OutputMode {
  if (flags.json) return 'json'
  if (flags.quiet) return 'quiet'
  // ora loops on a terminal that reports 0 columns; CI logs and dumb terminals get plain lines.
  if (stream.isTTY && (stream.columns ?? 0) > 0 && !env.CI && env.TERM !== 'dumb') return 'tty'
  return 'plain'
}

/** --quiet: nothing but the error, which the command prints. */
export class QuietReporter implements Reporter {
  event(): void {}
  summary(): void {}
  failed(): void {}
  close(): void {}
}

export async function createReporter(mode: OutputMode): Promise<Reporter> {
  if (mode === 'json') {
    const {JsonReporter} = await import('./json-reporter.js')
    return new JsonReporter()
  }
  if (mode === 'quiet') return new QuietReporter()
  if (mode === 'tty') {
    const {TtyReporter} = await import('./tty-reporter.js')
    return new TtyReporter()
  }
  const {PlainReporter} = await import('./plain-reporter.js')
  return new PlainReporter()
}
