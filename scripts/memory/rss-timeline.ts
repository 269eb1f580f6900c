/**
 * An RSS timeline of any Node process, loaded before its code:
 *
 *   npm run build
 *   MEMLOG_FILE=/tmp/mem.txt MEMLOG_MS=50 node --import ./dist/scripts/memory/rss-timeline.js bin/run.js pull ...
 *
 * Writes, at exit, one line per sample: milliseconds since start, then RSS, V8 heapTotal, heapUsed,
 * external and arrayBuffers in MiB (process.memoryUsage()). A sample needs the event loop: a gap in
 * the times is a synchronous block (a parse, a compile). GNU time's peak (`%M`) catches what falls
 * between samples. Used for BENCHMARKS.md, session 7.
 */
import fs from 'node:fs'

const file = process.env.MEMLOG_FILE ?? `/tmp/rss-timeline-${process.pid}.txt`
const everyMs = Number(process.env.MEMLOG_MS) || 200
const started = Date.now()
const lines: string[] = []
const MiB = 1024 * 1024

setInterval(() => {
  const m = process.memoryUsage()
  lines.push([Date.now() - started, ...[m.rss, m.heapTotal, m.heapUsed, m.external, m.arrayBuffers].map((b) => (b / MiB).toFixed(1))].join(' '))
}, everyMs).unref()

process.on('exit', () => {
  fs.writeFileSync(file, `ms rss heapTotal heapUsed external arrayBuffers\n${lines.join('\n')}\n`)
})
