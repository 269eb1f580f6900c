import readline from 'node:readline'

import stringWidth from 'string-width'

/**
 * A stand-in for process.stderr on a terminal: isTTY, columns, rows, and every write captured with
 * its time. The cursor helpers ora calls write the same escape codes a tty.WriteStream writes.
 */
export class FakeTty {
  readonly isTTY = true
  readonly writes: Array<{atMs: number; text: string}> = []

  constructor(public columns = 80, public rows = 24) {}

  write(chunk: string | Uint8Array, encoding?: unknown, callback?: () => void): boolean {
    this.writes.push({atMs: performance.now(), text: typeof chunk === 'string' ? chunk : Buffer.from(chunk).toString('utf8')})
    const cb = typeof encoding === 'function' ? encoding : callback
    if (typeof cb === 'function') cb()
    return true
  }

  cursorTo(x: number, y?: number, cb?: () => void): boolean {
    return readline.cursorTo(this as unknown as NodeJS.WritableStream, x, y, cb)
  }

  moveCursor(dx: number, dy: number, cb?: () => void): boolean {
    return readline.moveCursor(this as unknown as NodeJS.WritableStream, dx, dy, cb)
  }

  clearLine(dir: -1 | 0 | 1, cb?: () => void): boolean {
    return readline.clearLine(this as unknown as NodeJS.WritableStream, dir, cb)
  }

  on(): this {
    return this
  }

  once(): this {
    return this
  }

  removeListener(): this {
    return this
  }

  get output(): string {
    return this.writes.map((w) => w.text).join('')
  }
}

export interface Screen {
  lines: string[]
  cursorRow: number
  cursorCol: number
  cursorVisible: boolean
  /** Times a printed character ran past the last column (a line the program let wrap). */
  wraps: number
}

/**
 * Plays terminal output onto a grid, as a terminal would: printable characters, \n, \r, and the
 * CSI sequences the reporters use (cursor up/down/column, erase line / to end of screen, cursor
 * visibility). SGR colours and synchronized-output markers are ignored; anything else throws, so a
 * new kind of escape code cannot sneak past the test.
 */
export function playTerminal(output: string, columns: number): Screen {
  const screen: Screen = {lines: [''], cursorRow: 0, cursorCol: 0, cursorVisible: true, wraps: 0}
  const line = () => {
    while (screen.lines.length <= screen.cursorRow) screen.lines.push('')
    return screen.lines[screen.cursorRow]
  }
  const setLine = (text: string) => {
    line()
    screen.lines[screen.cursorRow] = text
  }
  const chars = [...output]
  for (let i = 0; i < chars.length; i++) {
    const ch = chars[i]
    if (ch === '\u001B') {
      const rest = chars.slice(i + 1, i + 16).join('')
      const m = /^\[(\??)([\d;]*)([A-Za-z])/.exec(rest)
      if (!m) throw new Error(`unknown escape at ${i}: ${JSON.stringify(rest)}`)
      i += m[0].length
      const [, priv, params, op] = m
      const n = params === '' ? undefined : Number(params.split(';')[0])
      if (priv === '?') {
        if (params === '25') screen.cursorVisible = op === 'h'
        else if (params !== '2026') throw new Error(`unknown private mode ${params}`)
        continue
      }
      switch (op) {
        case 'm':
          break
        case 'A':
          screen.cursorRow = Math.max(0, screen.cursorRow - (n || 1))
          break
        case 'B':
          screen.cursorRow += n || 1
          break
        case 'C':
          screen.cursorCol += n || 1
          break
        case 'D':
          screen.cursorCol = Math.max(0, screen.cursorCol - (n || 1))
          break
        case 'G':
          screen.cursorCol = (n || 1) - 1
          break
        case 'K': {
          const text = line()
          if (!n) setLine(cellSlice(text, 0, screen.cursorCol))
          else if (n === 2) setLine('')
          else setLine(' '.repeat(screen.cursorCol) + cellSlice(text, screen.cursorCol + 1))
          break
        }
        case 'J':
          if (n) throw new Error(`unsupported erase ${n}J`)
          setLine(cellSlice(line(), 0, screen.cursorCol))
          screen.lines.length = screen.cursorRow + 1
          break
        default:
          throw new Error(`unknown CSI ${op}`)
      }
      continue
    }
    if (ch === '\n') {
      screen.cursorRow++
      screen.cursorCol = 0
      line()
      continue
    }
    if (ch === '\r') {
      screen.cursorCol = 0
      continue
    }
    const w = stringWidth(ch)
    if (screen.cursorCol + w > columns) {
      screen.wraps++
      screen.cursorRow++
      screen.cursorCol = 0
    }
    const text = line()
    const padded = text + ' '.repeat(Math.max(0, screen.cursorCol - stringWidth(text)))
    setLine(cellSlice(padded, 0, screen.cursorCol) + ch + cellSlice(padded, screen.cursorCol + w))
    screen.cursorCol += w
  }
  screen.lines = screen.lines.map((l) => l.trimEnd())
  return screen
}

function cellSlice(text: string, from: number, to = Number.POSITIVE_INFINITY): string {
  let col = 0
  let out = ''
  for (const ch of text) {
    const w = stringWidth(ch)
    if (col >= from && col + w <= to) out += ch
    col += w
  }
  return out
}
