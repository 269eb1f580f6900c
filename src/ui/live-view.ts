import {formatBytes, formatDuration, formatRate} from '../format.js'
import type {ActiveFile, OverallProgress} from './progress-state.js'
import {fitEnd, fitStart, padEndCells} from './terminal.js'

export interface LiveViewOptions {
  columns: number
  /** Rows for files; the rest are summarised in one line. */
  maxFileRows: number
  unicode: boolean
}

const BYTES_CELLS = 19
const MIN_NAME_CELLS = 12

/**
 * The block the terminal reporter redraws: one line per active file (name, bar, bytes, percent,
 * speed, ETA) and an overall line. Pure: lines never wider than columns - 1, so none ever wraps.
 */
export function liveLines(files: ActiveFile[], overall: OverallProgress, opts: LiveViewOptions): string[] {
  const width = Math.max(1, opts.columns - 1)
  const shown = files.slice(0, Math.max(1, opts.maxFileRows))
  const lines = shown.map((f) => row(f.path, {done: f.bytesDone, total: f.size, bytesPerSec: f.bytesPerSec, etaMs: f.etaMs}, width, opts.unicode))
  if (files.length > shown.length) lines.push(fitEnd(`  … and ${files.length - shown.length} more`, width))
  const label = `${overall.filesDone}/${overall.files} files${overall.filesFailed ? `, ${overall.filesFailed} failed` : ''}`
  lines.push(row(label, {done: overall.bytesDone, total: overall.totalBytes, bytesPerSec: overall.bytesPerSec, etaMs: overall.etaMs}, width, opts.unicode))
  return lines
}

interface RowNumbers {
  done: number
  total: number
  bytesPerSec: number
  etaMs?: number
}

function row(name: string, {done, total, bytesPerSec, etaMs}: RowNumbers, width: number, unicode: boolean): string {
  const pct = total > 0 ? Math.min(100, Math.floor((done / total) * 100)) : 100
  const bytes = `${formatBytes(done)} / ${formatBytes(total)}`.padStart(BYTES_CELLS)
  const stats = ` ${bytes} ${`${pct}%`.padStart(4)} ${formatRate(bytesPerSec).padStart(10)} ${`ETA ${etaMs === undefined ? '--' : formatDuration(etaMs)}`.padEnd(9)}`
  const room = width - stats.length - 2
  const barCells = room - MIN_NAME_CELLS >= 12 ? Math.min(24, room - MIN_NAME_CELLS - 1) : 0
  const nameCells = Math.max(1, room - (barCells ? barCells + 1 : 0))
  const bar = barCells ? ` ${drawBar(pct, barCells, unicode)}` : ''
  return fitEnd(`  ${padEndCells(fitStart(name, nameCells), nameCells)}${bar}${stats}`.trimEnd(), width)
}

function drawBar(pct: number, cells: number, unicode: boolean): string {
  const full = Math.round((pct / 100) * cells)
  return unicode ? '█'.repeat(full) + '░'.repeat(cells - full) : `${'#'.repeat(full)}${'.'.repeat(cells - full)}`
}
