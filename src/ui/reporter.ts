import type {PullEvent} from '../events.js'
import type {PullSummary} from '../pull/pull.js'
import {formatBytes, formatDuration, formatRate} from '../format.js'

export interface Reporter {
  event(e: PullEvent): void
  summary(s: PullSummary, extra?: {printPath?: boolean}): void
  close(): void
}

export type OutputMode = 'tty' | 'plain' | 'json' | 'quiet'

export function outputMode(flags: {json?: boolean; quiet?: boolean}, stream: NodeJS.WriteStream = process.stderr): OutputMode {
  if (flags.json) return 'json'
  if (flags.quiet) return 'quiet'
  // ora loops on a terminal that reports 0 columns; CI logs get plain lines.
  if (stream.isTTY && (stream.columns ?? 0) > 0 && !process.env.CI) return 'tty'
  return 'plain'
}

/** NDJSON on stdout: every event, progress throttled per file, summary last. */
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

  close(): void {}

  private write(obj: object): void {
    this.out.write(`${JSON.stringify(obj)}\n`)
  }
}

/** Plain lines for logs and pipes: no carriage returns, no colours; a summary line every 10 s. */
export class PlainReporter implements Reporter {
  private doneBytes = new Map<string, number>()
  private sizes = new Map<string, number>()
  private filesDone = 0
  private files = 0
  private totalBytes = 0
  private startedAt = Date.now()
  private timer: NodeJS.Timeout | undefined

  constructor(private readonly out: NodeJS.WritableStream = process.stderr, private readonly everyMs = 10_000) {}

  event(e: PullEvent): void {
    switch (e.type) {
      case 'start':
        this.files = e.files
        this.totalBytes = e.totalBytes
        this.startedAt = Date.now()
        this.line(`pulling ${e.modelId}@${e.revision}: ${e.files} files, ${formatBytes(e.totalBytes)} (${formatBytes(e.toDownloadBytes)} to fetch) into ${e.modelDir}`)
        this.timer = setInterval(() => this.periodic(), this.everyMs)
        this.timer.unref()
        break
      case 'waiting-lock':
        this.line(`waiting: another ms-resume (${e.holder}) is pulling this model`)
        break
      case 'recovered-journal':
        this.line(`warning: the journal was unreadable (${e.reason}); kept it as ${e.movedTo} and re-checking files on disk`)
        break
      case 'resume':
        this.line(`resumed ${e.path}: ${formatBytes(e.offsetBytes)} of ${formatBytes(e.size)} already here`)
        break
      case 'rehash':
        this.line(`re-hashing ${formatBytes(e.bytes)} of ${e.path} from disk (${e.reason})`)
        break
      case 'progress':
        this.doneBytes.set(e.path, e.bytesDone)
        this.sizes.set(e.path, e.size)
        break
      case 'retry':
        this.line(`retry ${e.attempt}/${e.maxRetries} in ${formatDuration(e.delayMs)}${e.path ? ` (${e.path})` : ''}: ${e.reason}`)
        break
      case 'integrity-retry':
        this.line(`integrity: ${e.path} hashed to ${e.found.slice(0, 16)}…, expected ${e.expected.slice(0, 16)}…; downloading it again (${e.attempt})`)
        break
      case 'remote-changed':
        this.line(`remote changed: ${e.reason}; starting that file over`)
        break
      case 'file-done':
        this.filesDone++
        this.doneBytes.set(e.path, e.size)
        this.line(`${e.reused ? 'ok  ' : e.repaired ? 'fixed' : 'done'} ${e.path} (${formatBytes(e.size)}${e.reused ? ', already here' : ''})`)
        break
      case 'file-error':
        this.line(`failed ${e.path}: ${e.message} [${e.code}]`)
        break
      case 'warning':
        this.line(`warning: ${e.message}`)
        break
    }
  }

  summary(s: PullSummary, extra: {printPath?: boolean} = {}): void {
    if (s.dryRun) {
      for (const f of s.plan ?? []) this.line(`${f.state.padEnd(8)} ${formatBytes(f.remainingBytes).padStart(10)}  ${f.path}`)
      const remaining = (s.plan ?? []).reduce((n, f) => n + f.remainingBytes, 0)
      this.line(`dry run: ${s.files} files, ${formatBytes(s.totalBytes)} in all, ${formatBytes(remaining)} would be downloaded; nothing was written`)
      return
    }
    const secs = s.elapsedMs / 1000
    this.line(
      `${s.failedFiles ? 'incomplete' : 'complete'}: ${s.files} files (${s.downloadedFiles} downloaded, ${s.reusedFiles} already here${s.repairedFiles ? `, ${s.repairedFiles} repaired` : ''}${s.failedFiles ? `, ${s.failedFiles} failed` : ''}), ` +
        `${formatBytes(s.downloadedBytes)} downloaded, ${formatBytes(s.reusedBytes)} reused, in ${formatDuration(s.elapsedMs)}` +
        `${secs > 0 && s.downloadedBytes > 0 ? ` at ${formatRate(s.downloadedBytes / secs)}` : ''}, ${s.retries} retries`,
    )
    if (!extra.printPath) this.line(`files are in ${s.modelDir}`)
  }

  close(): void {
    if (this.timer) clearInterval(this.timer)
  }

  private periodic(): void {
    const done = [...this.doneBytes.values()].reduce((a, b) => a + b, 0)
    const elapsed = (Date.now() - this.startedAt) / 1000
    const rate = elapsed > 0 ? done / elapsed : 0
    this.line(`progress: ${this.filesDone}/${this.files} files, ${formatBytes(done)} of ${formatBytes(this.totalBytes)}, ${formatRate(rate)}, ETA ${rate > 0 ? formatDuration(((this.totalBytes - done) / rate) * 1000) : '--'}`)
  }

  private line(text: string): void {
    this.out.write(`${text}\n`)
  }
}

export class QuietReporter implements Reporter {
  event(): void {}
  summary(): void {}
  close(): void {}
}

export async function createReporter(mode: OutputMode): Promise<Reporter> {
  if (mode === 'json') return new JsonReporter()
  if (mode === 'quiet') return new QuietReporter()
  if (mode === 'tty') {
    const {TtyReporter} = await import('./tty-reporter.js')
    return new TtyReporter()
  }
  return new PlainReporter()
}
