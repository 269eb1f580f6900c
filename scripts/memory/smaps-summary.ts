/**
 * Where a running process's resident memory is, by kind of mapping (Linux):
 *
 *   node dist/scripts/memory/smaps-summary.js PID
 *
 * The kinds: the V8 heap's pages (anonymous mappings below the 0x7f.. range, where V8 reserves its
 * cage), malloc's main heap ([heap]), other anonymous mappings (thread stacks, malloc's per-thread
 * arenas), and each file mapped (the node binary's code and ICU data count as RSS too).
 */
import fs from 'node:fs'

const pid = process.argv[2]
if (!pid || !/^\d+$/.test(pid)) {
  process.stderr.write('usage: smaps-summary PID\n')
  process.exit(2)
}
const byKind = new Map<string, {kb: number; maps: number}>()
let kind: string | undefined
for (const line of fs.readFileSync(`/proc/${pid}/smaps`, 'utf8').split('\n')) {
  const head = /^([0-9a-f]+)-([0-9a-f]+) \S+ \S+ \S+ \S+\s*(.*)$/.exec(line)
  if (head) {
    const start = BigInt(`0x${head[1]}`)
    const name = head[3].trim()
    kind = name || (start >= 0x7f0000000000n ? 'anonymous (stacks, malloc arenas)' : 'anonymous (V8 heap)')
    continue
  }
  const rss = /^Rss:\s+(\d+) kB/.exec(line)
  if (rss && kind) {
    const k = byKind.get(kind) ?? {kb: 0, maps: 0}
    k.kb += Number(rss[1])
    k.maps++
    byKind.set(kind, k)
  }
}
for (const [name, {kb, maps}] of [...byKind].sort((a, b) => b[1].kb - a[1].kb).slice(0, 12)) {
  process.stdout.write(`${(kb / 1024).toFixed(1).padStart(8)} MiB ${String(maps).padStart(5)} maps  ${name}\n`)
}
