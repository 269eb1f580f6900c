import {formatBytes, formatDuration, formatRate} from '../format.js'
import type {PullSummary} from '../pull/pull.js'
import {PER_FILE_LINES_MAX, plural} from './event-text.js'
import type {OverallProgress} from './progress-state.js'

/** The end of a pull, for people: what came over the network, what was reused, how long, where. */
export function summaryText(s: PullSummary, opts: {printPath?: boolean} = {}): string[] {
  if (s.dryRun) {
    const plan = s.plan ?? []
    const lines = plan.slice(0, PER_FILE_LINES_MAX).map((f) => `${f.state.padEnd(8)} ${formatBytes(f.remainingBytes).padStart(10)}  ${f.path}`)
    if (plan.length > PER_FILE_LINES_MAX) lines.push(`… and ${plural(plan.length - PER_FILE_LINES_MAX, 'more file')} (--json lists every one)`)
    const remaining = plan.reduce((n, f) => n + f.remainingBytes, 0)
    lines.push(`dry run: ${plural(s.files, 'file')}, ${formatBytes(s.totalBytes)} in all, ${formatBytes(remaining)} would be downloaded; nothing was written`)
    if (s.sizeOnlyFiles) lines.push(sizeOnlyLine(s.sizeOnlyFiles, true))
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
  if (s.sizeOnlyFiles) lines.push(sizeOnlyLine(s.sizeOnlyFiles, false))
  if (s.failovers.length > 0) lines.push(`served by ${s.endpoint} after ${plural(s.failovers.length, 'failover')} (${s.failovers.map((f) => f.from).join(', ')})`)
  if (!opts.printPath) lines.push(`files are in ${s.modelDir}`)
  return lines
}

/** One line for all of them, never one per file. */
function sizeOnlyLine(n: number, dryRun: boolean): string {
  const verb = dryRun ? 'would be' : n === 1 ? 'was' : 'were'
  return `size only: ${plural(n, 'file')} ${n === 1 ? 'has' : 'have'} no SHA-256 in the hub's listing and ${verb} checked by size only` +
    `${dryRun ? '' : ' (the manifest records the hash of the bytes placed, which verify holds them to)'}`
}

/** The periodic line of the plain reporter. */
export function progressText(o: OverallProgress): string {
  const pct = o.totalBytes > 0 ? ` (${Math.floor((o.bytesDone / o.totalBytes) * 100)}%)` : ''
  return `progress: ${o.filesDone}/${o.files} files, ${formatBytes(o.bytesDone)} of ${formatBytes(o.totalBytes)}${pct}, ${formatRate(o.bytesPerSec)}, ETA ${o.etaMs === undefined ? '--' : formatDuration(o.etaMs)}`
}
