import stringWidth from 'string-width'

/** The few escape sequences the live view needs (ECMA-48; every terminal emulator in use has them). */
export const HIDE_CURSOR = '\u001B[?25l'
export const SHOW_CURSOR = '\u001B[?25h'

/** Moves up over `rows` rows drawn earlier and erases from there to the end of the screen. */
export function eraseRows(rows: number): string {
  return rows > 0 ? `\u001B[${rows}A\r\u001B[J` : ''
}

/** Terminal cells a line occupies once printed (wide CJK characters count two). */
export function rowsOf(lines: string[], columns: number): number {
  const cols = Math.max(1, columns)
  return lines.reduce((n, line) => n + Math.max(1, Math.ceil(stringWidth(line) / cols)), 0)
}

export function widthOf(text: string): number {
  return stringWidth(text)
}

/**
 * Cuts `text` to at most `width` cells. A line as wide as the terminal makes some terminals wrap
 * early, which would throw the live view's row count off: callers pass columns - 1.
 */
export function fitEnd(text: string, width: number): string {
  if (stringWidth(text) <= width) return text
  let out = ''
  for (const ch of text) {
    if (stringWidth(out + ch) > width - 1) break
    out += ch
  }
  return `${out}…`
}

/** Like fitEnd but keeps the end (a file name is told apart by its last segments). */
export function fitStart(text: string, width: number): string {
  if (width <= 0) return ''
  if (stringWidth(text) <= width) return text
  const chars = [...text]
  let out = ''
  for (let i = chars.length - 1; i >= 0; i--) {
    if (stringWidth(chars[i] + out) > width - 1) break
    out = chars[i] + out
  }
  return `…${out}`
}

export function padEndCells(text: string, width: number): string {
  return text + ' '.repeat(Math.max(0, width - stringWidth(text)))
}
