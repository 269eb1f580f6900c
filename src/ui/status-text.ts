import {formatBytes} from '../format.js'
import type {LockInfo} from '../journal/lock.js'
import type {ModelStatus} from '../status/model-status.js'
import {repoLabel} from '../store/layout.js'
import {plural} from './event-text.js'

/** `ms-resume status` for people: one block per model. */
export function statusText(models: ModelStatus[], searched: string): string[] {
  if (models.length === 0) return [`no models or datasets with ms-resume state in ${searched}`]
  const lines: string[] = []
  for (const m of models) {
    if (lines.length > 0) lines.push('')
    lines.push(...modelBlock(m))
  }
  return lines
}

function modelBlock(m: ModelStatus): string[] {
  const state = m.lockedBy ? `in use by ${m.lockedBy}` : m.journal === 'missing' ? 'nothing pulled here' : m.journal === 'unreadable' ? 'journal unreadable' : m.complete ? 'complete' : 'incomplete'
  const lines = [`${repoLabel(m)}${m.revision ? `@${m.revision}` : ''}: ${state}`, `  where:      ${m.modelDir}`]
  if (m.lock) lines.push(`  lock:       ${lockLine(m.lock)}`)
  if (m.problem) lines.push(`  journal:    ${m.problem} (the next pull moves it aside and re-checks the files on disk)`)
  if (m.journal === 'ok') {
    const f = m.files
    const parts = [`${f.complete} complete`, ...(f.partial ? [`${f.partial} partial`] : []), ...(f.pending ? [`${f.pending} not started`] : []), ...(f.failed ? [`${f.failed} failed`] : [])]
    lines.push(`  files:      ${parts.join(', ')} (of ${plural(f.known, 'file')} the journal knows)`)
    lines.push(`  bytes:      ${formatBytes(m.bytes.complete + m.bytes.partial)} of ${formatBytes(m.bytes.known)} on disk${m.bytes.partial ? ` (${formatBytes(m.bytes.partial)} in partial files)` : ''}`)
  }
  const l = m.leftovers
  if (l.partialFiles || l.quarantinedFiles) {
    lines.push(`  leftovers:  ${plural(l.partialFiles, 'partial download')} (${formatBytes(l.partialBytes)}), ${l.quarantinedFiles} quarantined (${formatBytes(l.quarantinedBytes)}); \`ms-resume clean\` removes them`)
  }
  if (m.lastError) lines.push(`  last error: ${m.lastError.path}: ${m.lastError.message} [${m.lastError.code}] at ${m.lastError.at}`)
  if (m.updatedAt) lines.push(`  updated:    ${m.updatedAt}`)
  for (const f of m.fileList ?? []) {
    if (f.status === 'complete') continue
    lines.push(`  ${f.status.padEnd(8)} ${formatBytes(f.bytesOnDisk).padStart(10)} of ${formatBytes(f.size).padEnd(10)} ${f.path}${f.lastError ? `  [${f.lastError.code}]` : ''}`)
  }
  return lines
}

/** Times are the filesystem's (the server's, on a network filesystem), shown in UTC. */
function lockLine(l: LockInfo): string {
  const age = l.heartbeatAgeMs === undefined ? `last heartbeat ${l.heartbeatAt}` : `last heartbeat ${Math.round(l.heartbeatAgeMs / 1000)} s ago`
  const head = l.stale ? `stale, left by ${l.holder} (the next pull takes it over)` : `held by ${l.holder}`
  return `${head} since ${l.since}, ${age}`
}
