import type {MsrError} from '../errors.js'
import type {PullEvent} from '../events.js'
import type {PullSummary} from '../pull/pull.js'
import {eventText, fileLineWanted} from './event-text.js'
import {ProgressState} from './progress-state.js'
import type {Reporter} from './reporter.js'
import {progressText, summaryText} from './summary-text.js'

/**
 * For logs and pipes: whole lines only (no carriage returns, no escape codes), one per finished
 * file (up to PER_FILE_LINES_MAX files; beyond, they are counted) and notable event, and a
 * progress line every `everyMs` so a CI log shows the pull is alive.
 */
export class PlainReporter implements Reporter {
  private readonly state = new ProgressState(Date.now())
  private timer: NodeJS.Timeout | undefined

  constructor(private readonly out: NodeJS.WritableStream = process.stderr, private readonly everyMs = 10_000) {}

  event(e: PullEvent): void {
    this.state.apply(e, Date.now())
    const text = fileLineWanted(e, this.state.files) ? eventText(e) : undefined
    if (text) this.line(text)
    if (e.type === 'start' && !this.timer) {
      this.timer = setInterval(() => this.line(progressText(this.state.overall(Date.now()))), this.everyMs)
      this.timer.unref()
    }
  }

  summary(s: PullSummary, extra: {printPath?: boolean} = {}): void {
    this.stopTimer()
    for (const text of summaryText(s, extra)) this.line(text)
  }

  /** The error line itself is printed last, by the command's error handler. */
  failed(_error: MsrError, _original: unknown, summary?: PullSummary): void {
    if (summary) this.summary(summary)
  }

  close(): void {
    this.stopTimer()
  }

  private stopTimer(): void {
    if (this.timer) clearInterval(this.timer)
    this.timer = undefined
  }

  private line(text: string): void {
    this.out.write(`${text}\n`)
  }
}
