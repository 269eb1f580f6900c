import {type Measured, median} from './measure.js'

/** One line of the table. */
export interface Row {
  scenario: string
  tool: string
  seconds: number
  cpuSeconds: number
  rssMiB: number
  baseline?: string
  ratio?: number
  target?: string
  extra?: string
}

export const rows: Row[] = []

/** One observed figure over the runs of a tool. */
export interface Spread {
  median: number
  min: number
  max: number
}

/** "37" when every run saw the same, else "37 (35-109)": outliers stay visible beside the median. */
export function spread(s: Spread | undefined, digits = 0): string {
  if (!s || !Number.isFinite(s.median)) return '-'
  const f = (n: number) => n.toFixed(digits)
  return f(s.min) === f(s.max) ? f(s.median) : `${f(s.median)} (${f(s.min)}-${f(s.max)})`
}

export interface Tool {
  name: string
  /** Runs before every run of this tool (a fresh output directory, counters reset). */
  before?: () => Promise<void>
  run: () => Promise<Measured>
  /** Figures read after every run, failed ones included (connections, bytes relayed). */
  observe?: (m: Measured) => Promise<Record<string, number>> | Record<string, number>
  /** The extra column from the observed figures (median, and range over the runs) and the runs. */
  extra?: (seen: Record<string, Spread>, runs: Measured[]) => string
  target?: string
}

export interface CompareOptions {
  rounds: number
  log: (line: string) => void
}

/**
 * Runs every tool once per round, alternating the order round by round so machine noise hits all
 * alike, and adds one row per tool with medians over the successful runs. A tool that never
 * succeeded gets no time, and the extra column says how it failed.
 */
export async function compare(scenario: string, tools: Tool[], baseline: string | undefined, o: CompareOptions): Promise<Row[]> {
  const runs = new Map<string, Measured[]>()
  const observed = new Map<string, Array<Record<string, number>>>()
  for (let round = 0; round < o.rounds; round++) {
    const order = round % 2 === 0 ? tools : [...tools].reverse()
    for (const tool of order) {
      await tool.before?.()
      const m = await tool.run()
      const seen = (await tool.observe?.(m)) ?? {}
      runs.set(tool.name, [...(runs.get(tool.name) ?? []), m])
      observed.set(tool.name, [...(observed.get(tool.name) ?? []), seen])
      const figures = Object.entries(seen).map(([k, v]) => `${k} ${Number.isInteger(v) ? v : v.toFixed(2)}`)
      const status = m.code === 0 ? '' : ` FAILED (exit ${m.code}): ${m.stderr.trim().split('\n').slice(-2).join(' | ').slice(0, 300)}`
      o.log(`  ${scenario} round ${round + 1}: ${tool.name} ${m.seconds.toFixed(2)} s, CPU ${m.cpuSeconds.toFixed(2)} s, ${m.rssMiB.toFixed(0)} MiB${figures.length ? `, ${figures.join(', ')}` : ''}${status}`)
    }
  }
  const ok = (name: string) => (runs.get(name) ?? []).filter((m) => m.code === 0)
  const base = baseline === undefined ? Number.NaN : median(ok(baseline).map((m) => m.seconds))
  const added: Row[] = []
  for (const tool of tools) {
    const all = runs.get(tool.name) ?? []
    const good = ok(tool.name)
    const seen = observed.get(tool.name) ?? []
    const figures: Record<string, Spread> = {}
    for (const key of new Set(seen.flatMap((s) => Object.keys(s)))) {
      const xs = seen.map((s) => s[key]).filter(Number.isFinite)
      figures[key] = {median: median(xs), min: Math.min(...xs), max: Math.max(...xs)}
    }
    const notes = [tool.extra?.(figures, all) ?? '']
    const failed = all.filter((m) => m.code !== 0)
    if (failed.length > 0) {
      const codes = [...new Set(failed.map((m) => m.code))].join('/')
      notes.push(`${failed.length} of ${all.length} runs failed (exit ${codes}, after ${median(failed.map((m) => m.seconds)).toFixed(1)} s)`)
    }
    const seconds = median(good.map((m) => m.seconds))
    const row: Row = {
      scenario,
      tool: tool.name,
      seconds,
      cpuSeconds: median(good.map((m) => m.cpuSeconds)),
      rssMiB: maxOf(all.map((m) => m.rssMiB)),
      baseline: tool.name === baseline ? undefined : baseline,
      ratio: tool.name === baseline || baseline === undefined ? undefined : seconds / base,
      target: tool.target,
      extra: notes.filter((n) => n !== '').join('; '),
    }
    rows.push(row)
    added.push(row)
  }
  return added
}

function maxOf(xs: number[]): number {
  const finite = xs.filter(Number.isFinite)
  return finite.length === 0 ? Number.NaN : Math.max(...finite)
}

function fmt(n: number | undefined, digits = 2): string {
  return n === undefined || !Number.isFinite(n) ? '-' : n.toFixed(digits)
}

export function table(header: string): string {
  return [
    header,
    '',
    '| scenario | tool | median s | ratio | vs | target | CPU s | peak RSS MiB | extra |',
    '|---|---|---:|---:|---|---|---:|---:|---|',
    ...rows.map((r) => `| ${r.scenario} | ${r.tool} | ${fmt(r.seconds)} | ${fmt(r.ratio)} | ${r.ratio === undefined ? '' : (r.baseline ?? '')} | ${r.target ?? ''} | ${fmt(r.cpuSeconds)} | ${fmt(r.rssMiB, 0)} | ${r.extra ?? ''} |`),
  ].join('\n')
}
