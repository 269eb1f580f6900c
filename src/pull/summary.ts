import {MsrError} from '../errors.js'
import type {EndpointFailover} from '../events.js'
import type {RepoKind} from '../store/layout.js'
import type {FileOutcome} from './file-job.js'

export interface PlannedFile {
  path: string
  size: number
  /** Bytes still to fetch (0 when complete). */
  remainingBytes: number
  state: 'complete' | 'partial' | 'new'
}

export interface PullSummary {
  modelId: string
  repoKind: RepoKind
  revision: string
  modelDir: string
  files: number
  downloadedFiles: number
  reusedFiles: number
  repairedFiles: number
  failedFiles: number
  /** Files the hub listed without a SHA-256: held to their size only (their hash is ours, in the manifest). */
  sizeOnlyFiles: number
  totalBytes: number
  /** Bytes received over the network. */
  downloadedBytes: number
  reusedBytes: number
  retries: number
  elapsedMs: number
  dryRun: boolean
  plan?: PlannedFile[]
  errors: Array<{path: string; code: string; message: string}>
  /** The endpoint in use at the end (the last one failed over to). */
  endpoint: string
  failovers: EndpointFailover[]
}

/** A summary before any file ran. */
export function emptySummary(o: {modelId: string; repoKind: RepoKind; revision: string; modelDir: string; files: number; sizeOnlyFiles: number; totalBytes: number; dryRun: boolean; endpoint: string; failovers: EndpointFailover[]}): PullSummary {
  return {
    ...o, downloadedFiles: 0, reusedFiles: 0, repairedFiles: 0, failedFiles: 0,
    downloadedBytes: 0, reusedBytes: 0, retries: 0, elapsedMs: 0, errors: [],
  }
}

/**
 * Folds files' outcomes into a summary as they arrive: a pull of 100,000 files kept an outcome
 * object per file until the end only to count them (10 MB). Failures are kept (few, and reported)
 * with their file's position, so the summary lists them, and names the first, in the files' order
 * whatever order they ended in.
 */
export class SummaryTally {
  private readonly s: PullSummary
  private readonly failures: Array<{at: number; error: MsrError}> = []

  constructor(start: PullSummary) {
    this.s = {...start, errors: [...start.errors]}
  }

  add(o: FileOutcome | MsrError, at: number): void {
    const s = this.s
    if (o instanceof MsrError) {
      s.failedFiles++
      this.failures.push({at, error: o})
      return
    }
    s.downloadedBytes += o.downloadedBytes
    if (o.reused) {
      s.reusedFiles++
      s.reusedBytes += o.size
    } else {
      s.downloadedFiles++
      s.reusedBytes += Math.max(0, o.size - o.downloadedBytes)
    }
    if (o.repaired) s.repairedFiles++
  }

  /** The failure of the earliest file, if any failed. */
  firstError(): MsrError | undefined {
    return this.ordered()[0]
  }

  result(retries: number, elapsedMs: number): PullSummary {
    const errors = this.ordered().map((e) => ({path: e.path ?? '', code: e.code, message: e.message}))
    return {...this.s, errors: [...this.s.errors, ...errors], retries, elapsedMs: Math.round(elapsedMs)}
  }

  private ordered(): MsrError[] {
    return this.failures.sort((a, b) => a.at - b.at).map((f) => f.error)
  }
}
