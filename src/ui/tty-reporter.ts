import ora, {type Ora} from 'ora'

import type {MsrError} from '../errors.js'
import type {PullEvent} from '../events.js'
import {formatBytes} from '../format.js'
import {repoLabel} from '../store/layout.js'
import type {PullSummary} from '../pull/pull.js'
import {eventText, fileLineWanted, plural} from './event-text.js'
import {liveLines} from './live-view.js'
import {ProgressState} from './progress-state.js'
import type {Reporter} from './reporter.js'
import {summaryText} from './summary-text.js'
import {HIDE_CURSOR, SHOW_CURSOR, eraseRows, rowsOf} from './terminal.js'

/** What the reporter needs of stderr; a test passes a fake with isTTY and columns. */
export interface TtyStream {
  isTTY?: boolean
  columns?: number
  rows?: number
  write(chunk: string): boolean
}

export interface TtyReporterOptions {
  /** Time between two redraws of the live block: the redraw rate never exceeds 1000 / frameMs. */
  frameMs?: number
  now?: () => number
  unicode?: boolean
  /** Rows the live block may use for files (besides the overall line). */
  maxFileRows?: number
}

/**
 * A terminal's live view: an ora spinner while the hub lists the files, then a block with one line
 * per active file and an overall line, redrawn by a timer (never per event: a fast link emits
 * hundreds of progress events a second). Lines worth keeping (retries, resumes, finished files) are
 * printed above the block in the same write as the next redraw, so the block never tears. The block
 * is erased before the summary: the final screen holds only lines meant to stay.
 */
export class TtyReporter implements Reporter {
  private readonly state: ProgressState
  private readonly frameMs: number
  private readonly now: () => number
  private readonly unicode: boolean
  private readonly maxFileRows: number
  private spinner: Ora | undefined
  private timer: NodeJS.Timeout | undefined
  private pending: string[] = []
  private drawn: string[] = []
  private dirty = false
  private lastDrawAt = 0
  private readonly restoreCursor = () => {
    this.out.write(SHOW_CURSOR)
  }

  constructor(private readonly out: TtyStream = process.stderr, opts: TtyReporterOptions = {}) {
    this.frameMs = Math.max(50, opts.frameMs ?? 100)
    this.now = opts.now ?? Date.now
    this.unicode = opts.unicode ?? (process.platform !== 'win32' && process.env.TERM !== 'linux')
    this.maxFileRows = opts.maxFileRows ?? 8
    this.state = new ProgressState(this.now())
  }

  event(e: PullEvent): void {
    this.state.apply(e, this.now())
    switch (e.type) {
      case 'listing':
        this.startSpinner(`Listing ${repoLabel(e)}@${e.revision} on ${e.endpoint}`)
        return
      case 'waiting-lock':
        if (this.spinner) {
          this.spinner.text = eventText(e)!
          return
        }
        break
      case 'start':
        this.stopSpinner(`${repoLabel(e)}@${e.revision}: ${plural(e.files, 'file')}, ${formatBytes(e.totalBytes)} (${formatBytes(e.toDownloadBytes)} to fetch) into ${e.modelDir}`)
        this.startLive()
        return
      case 'file-start':
      case 'progress':
        this.dirty = true
        return
      case 'file-done':
        // A re-run over thousands of complete files must not scroll them all past, nor a dataset
        // of thousands of small files: they are counted in the overall line.
        if (e.reused || !fileLineWanted(e, this.state.files)) {
          this.dirty = true
          return
        }
        break
      default:
        break
    }
    const text = eventText(e)
    if (text) this.log(text)
  }

  summary(s: PullSummary, extra: {printPath?: boolean} = {}): void {
    this.close()
    this.out.write(summaryText(s, extra).map((l) => `${l}\n`).join(''))
  }

  failed(_error: MsrError, _original: unknown, summary?: PullSummary): void {
    if (summary) this.summary(summary)
    else this.close()
  }

  close(): void {
    this.stopSpinner()
    this.stopLive()
  }

  private log(text: string): void {
    if (this.timer) {
      this.pending.push(text)
      this.dirty = true
      return
    }
    // Under the spinner ora intercepts the write: it clears its line, lets ours through, redraws.
    this.out.write(`${text}\n`)
  }

  private startSpinner(text: string): void {
    if (this.spinner) {
      this.spinner.text = text
      return
    }
    this.spinner = ora({
      text,
      stream: this.out as unknown as NodeJS.WritableStream,
      isEnabled: true,
      // Discarding stdin puts it in raw mode; Ctrl-C must stay a plain SIGINT.
      discardStdin: false,
      interval: this.frameMs,
    }).start()
  }

  private stopSpinner(doneText?: string): void {
    if (!this.spinner) return
    if (doneText) this.spinner.succeed(doneText)
    else this.spinner.stop()
    this.spinner = undefined
  }

  private startLive(): void {
    if (this.timer) return
    // A second Ctrl-C exits at once, past every finally: the cursor must come back anyway.
    process.once('exit', this.restoreCursor)
    this.timer = setInterval(() => this.frame(), this.frameMs)
    this.timer.unref()
    this.dirty = true
    this.frame()
  }

  private frame(): void {
    const now = this.now()
    // Speeds and ETAs move even when no event came: redraw at least once a second.
    if (!this.dirty && now - this.lastDrawAt < 1000) return
    const columns = this.out.columns || 80
    const lines = liveLines(this.state.activeFiles(now), this.state.overall(now), {
      columns,
      maxFileRows: Math.max(1, Math.min(this.maxFileRows, (this.out.rows || 24) - 4)),
      unicode: this.unicode,
    })
    // One write per frame: the erase, the lines that stay, the new block (and the cursor hidden once).
    const hide = this.drawn.length === 0 ? HIDE_CURSOR : ''
    this.out.write(hide + eraseRows(rowsOf(this.drawn, columns)) + [...this.pending, ...lines].map((l) => `${l}\n`).join(''))
    this.drawn = lines
    this.pending = []
    this.dirty = false
    this.lastDrawAt = now
  }

  private stopLive(): void {
    if (!this.timer) return
    clearInterval(this.timer)
    this.timer = undefined
    const columns = this.out.columns || 80
    this.out.write(eraseRows(rowsOf(this.drawn, columns)) + this.pending.map((l) => `${l}\n`).join('') + SHOW_CURSOR)
    this.drawn = []
    this.pending = []
    process.off('exit', this.restoreCursor)
  }
}
