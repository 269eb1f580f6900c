import {formatBytes, formatDuration} from '../format.js'
import type {DamagedRange} from '../integrity/check.js'
import type {FileReport, VerifyReport} from '../verify/verify.js'

/**
 * `ms-resume verify` for people: one line per file that is not ok (and per extra file, upstream
 * change and repair), then one summary line. Nothing for files that are fine.
 */
export function verifyReportLines(report: VerifyReport): string[] {
  const lines: string[] = []
  for (const f of report.files) {
    if (f.repaired) lines.push(`repaired        ${f.path} (was ${problem({status: f.repaired.from, size: f.size, foundSize: f.repaired.foundSize, damaged: f.repaired.damaged})}; ${formatBytes(f.repaired.downloadedBytes)} fetched)`)
    else if (f.status !== 'ok') lines.push(`${f.status.padEnd(15)} ${f.path}${detail(f)}`)
  }
  for (const p of report.extra) lines.push(`extra           ${p} (not in the manifest; left in place)`)
  if (report.remote) {
    for (const f of report.remote.failovers ?? []) lines.push(`failover        ${f.from} failed (${f.reason}) [${f.code}]; went on with ${f.to}`)
    for (const c of report.remote.changed) {
      lines.push(`upstream        ${c.path} changed on the hub: sha256 ${c.manifest.sha256.slice(0, 12)}… → ${c.hub.sha256.slice(0, 12)}…, ${formatBytes(c.manifest.size)} → ${formatBytes(c.hub.size)}`)
    }
    for (const p of report.remote.removed) lines.push(`upstream        ${p} is no longer on the hub`)
    for (const p of report.remote.added) lines.push(`upstream        ${p} is on the hub but not in the manifest`)
    if (report.remote.changed.length + report.remote.removed.length + report.remote.added.length === 0) {
      lines.push(`upstream        the hub still lists exactly these files at ${report.remote.revision}`)
    }
  }
  if (report.repair?.error) lines.push(`repair failed: ${report.repair.error.message} [${report.repair.error.code}]`)
  lines.push(summaryLine(report))
  return lines
}

export function summaryLine(report: VerifyReport): string {
  const c = report.counts
  const parts = [`${c.ok} ok`]
  if (c.repaired) parts.push(`${c.repaired} repaired`)
  if (c.missing) parts.push(`${c.missing} missing`)
  if (c.wrongSize) parts.push(`${c.wrongSize} wrong size`)
  if (c.damaged) parts.push(`${c.damaged} damaged`)
  if (c.sha256Mismatch) parts.push(`${c.sha256Mismatch} sha256 mismatch`)
  if (c.notAFile) parts.push(`${c.notAFile} not a file`)
  if (c.extra) parts.push(`${c.extra} extra`)
  const repaired = report.repair && report.repair.files > 0 ? `, ${formatBytes(report.repair.downloadedBytes)} downloaded to repair` : ''
  return `${report.ok ? 'verified' : 'NOT verified'}: ${report.modelId}@${report.revision}, ${c.files} files (${parts.join(', ')}) at level ${report.level}, ` +
    `${formatBytes(report.checkedBytes)} read in ${formatDuration(report.elapsedMs)}${repaired}; ${report.modelDir}`
}

function detail(f: FileReport): string {
  const text = problem(f)
  return text === f.status ? '' : ` (${text})`
}

function problem(f: Pick<FileReport, 'status' | 'size' | 'foundSize' | 'damaged' | 'expectedSha256' | 'foundSha256'>): string {
  switch (f.status) {
    case 'wrong-size':
      return `${f.size} bytes expected, ${f.foundSize ?? '?'} found${f.damaged ? `; ${ranges(f.damaged)}` : ''}`
    case 'damaged':
      return ranges(f.damaged ?? [])
    case 'sha256-mismatch':
      return `sha256 ${f.foundSha256?.slice(0, 16) ?? '?'}…, expected ${f.expectedSha256?.slice(0, 16) ?? '?'}…${f.damaged ? `; ${ranges(f.damaged)}` : ''}`
    default:
      return f.status
  }
}

/** "chunks 3, 7 (bytes 3145728-4194303, 7340032-8388607)", shortened past a few. */
function ranges(damaged: DamagedRange[]): string {
  if (damaged.length === 0) return 'damage not localised by the chunk sums'
  const shown = damaged.slice(0, 4)
  const more = damaged.length > shown.length ? `, … ${damaged.length - shown.length} more` : ''
  return `${damaged.length === 1 ? 'chunk' : 'chunks'} ${shown.map((d) => d.chunk).join(', ')}${more}: bytes ${shown.map((d) => `${d.start}-${d.end - 1}`).join(', ')}${more ? ', …' : ''}`
}
