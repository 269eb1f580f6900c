/**
 * What a V8 heap snapshot holds, summed, and who holds it:
 *
 *   node --heapsnapshot-signal=SIGUSR2 bin/run.js pull ...     then kill -USR2 <pid> at the moment to see
 *   node --max-old-space-size=4000 dist/scripts/memory/heap-summary.js Heap.*.heapsnapshot [--retainers PROP]
 *
 * Prints the self size by node type and constructor, the plain objects by shape (their property
 * names: a journal record and a listing entry are told apart), and the strings by shape (digits and
 * hex runs folded: 100,000 paths or hashes show as one line). With --retainers PROP, the path from a
 * GC root to the first object that has a property PROP (a leak's chain). Used for BENCHMARKS.md,
 * session 7: the listing's entries held through axios's config were found this way.
 */
import fs from 'node:fs'

interface Snapshot {
  snapshot: {meta: {node_fields: string[]; node_types: [string[]]; edge_fields: string[]; edge_types: [string[]]}}
  nodes: number[]
  edges: number[]
  strings: string[]
}

const [file, flag, prop] = process.argv.slice(2)
if (!file || (flag !== undefined && (flag !== '--retainers' || !prop))) {
  process.stderr.write('usage: heap-summary SNAPSHOT [--retainers PROPERTY]\n')
  process.exit(2)
}
const snap = JSON.parse(fs.readFileSync(file, 'utf8')) as Snapshot
const {meta} = snap.snapshot
const N = meta.node_fields.length
const E = meta.edge_fields.length
const [TYPE, NAME, SIZE, EDGES] = ['type', 'name', 'self_size', 'edge_count'].map((f) => meta.node_fields.indexOf(f))
const [ETYPE, ENAME, ETO] = ['type', 'name_or_index', 'to_node'].map((f) => meta.edge_fields.indexOf(f))
const nodeTypes = meta.node_types[0]
const edgeTypes = meta.edge_types[0]
const count = snap.nodes.length / N
const typeOf = (n: number) => nodeTypes[snap.nodes[n * N + TYPE]]
const nameOf = (n: number) => snap.strings[snap.nodes[n * N + NAME]]
const firstEdge = new Uint32Array(count + 1)
for (let n = 0, e = 0; n < count; n++) {
  firstEdge[n] = e
  e += snap.nodes[n * N + EDGES] * E
}
firstEdge[count] = snap.edges.length
const propertiesOf = (n: number) => {
  const names: string[] = []
  for (let e = firstEdge[n]; e < firstEdge[n + 1]; e += E) if (edgeTypes[snap.edges[e + ETYPE]] === 'property') names.push(snap.strings[snap.edges[e + ENAME]])
  return names
}

function top(title: string, sums: Map<string, {bytes: number; count: number}>, n = 15): void {
  process.stdout.write(`${title}\n`)
  for (const [key, {bytes, count: c}] of [...sums].sort((a, b) => b[1].bytes - a[1].bytes).slice(0, n)) {
    process.stdout.write(`${(bytes / 1048576).toFixed(2).padStart(9)} MiB ${String(c).padStart(8)}  ${key.slice(0, 120)}\n`)
  }
}
const add = (sums: Map<string, {bytes: number; count: number}>, key: string, bytes: number) => {
  const s = sums.get(key) ?? {bytes: 0, count: 0}
  s.bytes += bytes
  s.count++
  sums.set(key, s)
}

if (!flag) {
  const byType = new Map<string, {bytes: number; count: number}>()
  const byShape = new Map<string, {bytes: number; count: number}>()
  const strings = new Map<string, {bytes: number; count: number}>()
  let total = 0
  for (let n = 0; n < count; n++) {
    const type = typeOf(n)
    const size = snap.nodes[n * N + SIZE]
    total += size
    add(byType, type === 'object' || type === 'closure' || type === 'native' ? `${type}: ${nameOf(n).slice(0, 40)}` : type, size)
    if (type === 'object' && (nameOf(n) === 'Object' || nameOf(n) === 'Array')) add(byShape, `${nameOf(n)} {${propertiesOf(n).join(', ')}}`, size)
    if (type.includes('string')) add(strings, JSON.stringify(nameOf(n).slice(0, 60).replace(/[0-9a-f]{16,}/g, (h) => `<hex${h.length}>`).replace(/\d+/g, 'N')), size)
  }
  process.stdout.write(`${(total / 1048576).toFixed(1)} MiB in ${count} nodes (native: memory outside the V8 heap)\n\n`)
  top('by type and constructor (self size):', byType)
  top('\nplain objects by shape:', byShape, 10)
  top('\nstrings by shape:', strings, 10)
} else {
  // Breadth first from the object upwards, over strong edges, until a GC root.
  const retainers = new Map<number, Array<[number, string]>>()
  for (let n = 0; n < count; n++) {
    for (let e = firstEdge[n]; e < firstEdge[n + 1]; e += E) {
      const type = edgeTypes[snap.edges[e + ETYPE]]
      if (type === 'weak') continue
      const to = snap.edges[e + ETO] / N
      const list = retainers.get(to) ?? []
      if (list.length < 8) list.push([n, type === 'element' || type === 'hidden' ? `[${snap.edges[e + ENAME]}]` : snap.strings[snap.edges[e + ENAME]]])
      retainers.set(to, list)
    }
  }
  let target = -1
  for (let n = 0; n < count && target < 0; n++) if (typeOf(n) === 'object' && propertiesOf(n).includes(prop)) target = n
  if (target < 0) {
    process.stdout.write(`no object has a property ${prop}\n`)
    process.exit(1)
  }
  const via = new Map<number, [number, string]>([[target, [-1, '']]])
  let frontier = [target]
  let root = -1
  while (frontier.length > 0 && root < 0) {
    const next: number[] = []
    for (const n of frontier) {
      for (const [from, edge] of retainers.get(n) ?? []) {
        if (via.has(from)) continue
        via.set(from, [n, edge])
        if (typeOf(from) === 'synthetic') root = from
        next.push(from)
      }
    }
    frontier = next
  }
  for (let n = root >= 0 ? root : frontier[0]; n !== undefined && n >= 0;) {
    const [to, edge] = via.get(n)!
    process.stdout.write(`${typeOf(n)} ${nameOf(n).slice(0, 60)}${to >= 0 ? `  --${edge}-->` : ''}\n`)
    n = to
  }
}
