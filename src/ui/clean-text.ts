import type {CleanResult} from '../clean/clean.js'
import {formatBytes} from '../format.js'
import {repoLabel} from '../store/layout.js'

/** `ms-resume clean` for people: what went (or would go), model by model, then the total. */
export function cleanText(results: CleanResult[], searched: string, dryRun: boolean): string[] {
  const verb = dryRun ? 'would remove' : 'removed'
  const lines: string[] = []
  let freed = 0
  for (const r of results) {
    if (r.items.length === 0 && r.journalEntries.length === 0 && !r.journalProblem) continue
    lines.push(`${repoLabel(r)} (${r.modelDir})`)
    for (const item of r.items) {
      lines.push(`  ${verb} ${item.kind.padEnd(14)} ${formatBytes(item.bytes).padStart(10)}  ${item.file ?? item.target}`)
    }
    if (r.journalEntries.length > 0) lines.push(`  ${verb} ${r.journalEntries.length} journal ${r.journalEntries.length === 1 ? 'entry' : 'entries'} of files not complete: ${r.journalEntries.slice(0, 5).join(', ')}${r.journalEntries.length > 5 ? ', …' : ''}`)
    if (r.journalProblem) lines.push(`  left the journal alone: ${r.journalProblem} (the next pull moves it aside)`)
    freed += r.freedBytes
  }
  if (lines.length === 0) return [`nothing to clean in ${searched}`]
  lines.push(`${dryRun ? 'dry run: would free' : 'freed'} ${formatBytes(freed)}${dryRun ? '; nothing was deleted' : ''}`)
  return lines
}
