import type {MsrError} from '../errors.js'
import type {PullEvent} from '../events.js'
import type {PullSummary} from '../pull/pull.js'
import {errorEvent, markReported} from './errors.js'
import type {Reporter} from './reporter.js'

/**
 * Every event type a pull can print with --json. Typed against the event union, so a new event
 * cannot be added without deciding here (and in docs/json-output.md, which a test holds to this).
 */
export const JSON_EVENT_TYPES: Record<PullEvent['type'] | 'error' | 'summary', true> = {
  listing: true, start: true, 'waiting-lock': true, 'recovered-journal': true, 'file-start': true, resume: true,
  rehash: true, progress: true, retry: true, 'integrity-retry': true, 'remote-changed': true, 'file-done': true,
  'file-error': true, warning: true, failover: true, error: true, summary: true,
}

/**
 * NDJSON on stdout, one event per line with an ISO `time`: progress throttled per file (its last
 * step always printed), then `summary` as the last line whenever the pull got far enough to have one
 * (also when it failed: the `error` event comes just before it).
 */
export class JsonReporter implements Reporter {
  private lastProgress = new Map<string, number>()
  constructor(private readonly out: NodeJS.WritableStream = process.stdout, private readonly progressEveryMs = 500) {}

  event(e: PullEvent): void {
    if (e.type === 'progress') {
      const now = Date.now()
      if (now - (this.lastProgress.get(e.path) ?? 0) < this.progressEveryMs && e.bytesDone < e.size) return
      this.lastProgress.set(e.path, now)
    }
    this.write({...e, time: new Date().toISOString()})
  }

  summary(s: PullSummary): void {
    this.write({type: 'summary', ...s, time: new Date().toISOString()})
  }

  failed(error: MsrError, original: unknown, summary?: PullSummary): void {
    this.write(errorEvent(error))
    markReported(original)
    if (summary) this.summary(summary)
  }

  close(): void {}

  private write(obj: object): void {
    this.out.write(`${JSON.stringify(obj)}\n`)
  }
}
