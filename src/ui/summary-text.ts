import {formatBytes, formatDuration, formatRate} from '../format.js'
import type {PullSummary} from '../pull/pull.js'
import {plural} from './event-text.js'
import type {OverallProgress} from './progress-state.js'

/** The end of a pull, for people: what came over the network, what was reused, how long, where. */
export function summaryText(s: PullSummary, opts: {printPath?: boolean} = {}): string[] {
  if (s.dryRun) {
    const lines = (s.plan ?? []).map((f) => `${f.state.padEnd(8)} ${formatBytes(f.remainingBytes).padStart(10)}  ${f.path}`)
    const remaining = (s.plan ?? []).reduce((n, f) => n + f.remainingBytes, 0)
    lines.push(`dry run: ${plural(s.files, 'file')}, ${formatBytes(s.totalBytes)} in all, ${formatBytes(remaining)} would be downloaded; nothing was written`)
    return lines
  }
  const secs = s.elapsedMs / 1000
  const counts = [
    `${s.downloadedFiles} downloaded`,
    `${s.reusedFiles} already here`,
    ...(s.repairedFiles ? [`${s.repairedFiles} repaired`] : []),
    ...(s.failedFiles ? [`${s.failedFiles} failed`] : []),
  ]
  const speed = secs > 0 && s.downloadedBytes > 0 ? ` at ${formatRate(s.downloadedBytes / secs)}` : ''
  const lines = [
    `${s.failedFiles ? 'incomplete' : 'complete'}: ${plural(s.files, 'file')} (${counts.join(', ')}), ` +
      `${formatBytes(s.downloadedBytes)} downloaded, ${formatBytes(s.reusedBytes)} reused, in ${formatDuration(s.elapsedMs)}${speed}, ${s.retries} ${s.retries === 1 ? 'retry' : 'retries'}`,
  ]
  if (s.failovers.length > 0) lines.push(`served by ${s.endpoint} after ${plural(s.failovers.length, 'failover')} (${s.failovers.map((f) => f.from).join(', ')})`)
  if (!opts.printPath) lines.push(`files are in ${s.modelDir}`)
  return lines
}

/** The periodic line of the plain reporter. */
export function progressText(o: OverallProgress): string {
  const pct = o.totalBytes > 0 ? ` (${Math.floor((o.bytesDone / o.totalBytes) * 100)}%)` : ''
  return `progress: ${o.filesDone}/${o.files} files, ${formatBytes(o.bytesDone)} of ${formatBytes(o.totalBytes)}${pct}, ${formatRate(o.bytesPerSec)}, ETA ${o.etaMs === undefined ? '--' : formatDuration(o.etaMs)}`
}
