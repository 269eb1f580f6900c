import {MsrError} from '../errors.js'
import type {EndpointFailover} from '../events.js'
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
  revision: string
  modelDir: string
  files: number
  downloadedFiles: number
  reusedFiles: number
  repairedFiles: number
  failedFiles: number
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
export function emptySummary(o: {modelId: string; revision: string; modelDir: string; files: number; totalBytes: number; dryRun: boolean; endpoint: string; failovers: EndpointFailover[]}): PullSummary {
  return {
    ...o, downloadedFiles: 0, reusedFiles: 0, repairedFiles: 0, failedFiles: 0,
    downloadedBytes: 0, reusedBytes: 0, retries: 0, elapsedMs: 0, errors: [],
  }
}

/** Folds the files' outcomes (an MsrError for a file that failed) into the summary; pure. */
export function summarize(start: PullSummary, outcomes: ReadonlyArray<FileOutcome | MsrError>, retries: number, elapsedMs: number): PullSummary {
  const s: PullSummary = {...start, errors: [...start.errors], retries, elapsedMs: Math.round(elapsedMs)}
  for (const o of outcomes) {
    if (o instanceof MsrError) {
      s.failedFiles++
      s.errors.push({path: o.path ?? '', code: o.code, message: o.message})
      continue
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
  return s
}
