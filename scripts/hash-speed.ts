/**
 * SHA-256 throughput of the resumable engines against node's crypto, and of sha256FileHex on a file.
 *
 *   npx tsx scripts/hash-speed.ts [--mib 1024] [--runs 3]
 *
 * In memory: --mib MiB hashed as 4 MiB updates of one random buffer. File: a --mib MiB temp file
 * (just written, so mostly in the page cache) through sha256FileHex. Best of --runs, in MB/s (1e6 B/s).
 */
import {createHash, randomBytes} from 'node:crypto'
import {createWriteStream} from 'node:fs'
import fs from 'node:fs/promises'
import os from 'node:os'
import path from 'node:path'
import {finished} from 'node:stream/promises'

import {createResumableSha256, restoreSha256, sha256EngineName, sha256FileHex, type Sha256EngineChoice} from '../src/integrity/sha256.js'

function arg(name: string, fallback: number): number {
  const i = process.argv.indexOf(`--${name}`)
  const value = i >= 0 ? Number(process.argv[i + 1]) : fallback
  if (!Number.isFinite(value) || value <= 0) throw new Error(`--${name} needs a positive number`)
  return value
}

const MIB = 1024 * 1024
const totalMib = arg('mib', 1024)
const runs = arg('runs', 3)
const UPDATE = 4 * MIB
const updates = Math.max(1, Math.round((totalMib * MIB) / UPDATE))
const totalBytes = updates * UPDATE
const block = randomBytes(UPDATE)

async function best(label: string, fn: () => Promise<string> | string): Promise<string> {
  let bestMs = Infinity
  let digest = ''
  for (let i = 0; i < runs; i++) {
    const t0 = process.hrtime.bigint()
    digest = await fn()
    bestMs = Math.min(bestMs, Number(process.hrtime.bigint() - t0) / 1e6)
  }
  const mbps = totalBytes / 1e6 / (bestMs / 1000)
  console.log(`${label.padEnd(34)} ${mbps.toFixed(0).padStart(6)} MB/s   (${(bestMs / 1000).toFixed(2)} s per ${(totalBytes / MIB).toFixed(0)} MiB)`)
  return digest
}

async function engine(choice: Exclude<Sha256EngineChoice, 'auto'>): Promise<string> {
  const hasher = await createResumableSha256({engine: choice})
  for (let i = 0; i < updates; i++) hasher.update(block)
  return hasher.digestHex()
}

function nodeCrypto(): string {
  const hash = createHash('sha256')
  for (let i = 0; i < updates; i++) hash.update(block)
  return hash.digest('hex')
}

async function saveRestoreMicros(choice: Exclude<Sha256EngineChoice, 'auto'>): Promise<string> {
  const hasher = await createResumableSha256({engine: choice})
  hasher.update(block.subarray(0, 12345))
  const n = 2000
  const t0 = process.hrtime.bigint()
  for (let i = 0; i < n; i++) {
    const restored = await restoreSha256(JSON.parse(JSON.stringify(hasher.save())))
    if (!restored) throw new Error(`${choice}: restore failed`)
  }
  return (Number(process.hrtime.bigint() - t0) / 1e3 / n).toFixed(1)
}

console.log(`node ${process.version}, ${os.cpus().length} x ${os.cpus()[0]?.model ?? 'cpu'}; default engine ${sha256EngineName()}`)
console.log(`${(totalBytes / MIB).toFixed(0)} MiB, 4 MiB updates, best of ${runs}`)

const expected = await best('node crypto (in memory)', nodeCrypto)
for (const choice of ['native', 'wasm'] as const) {
  let digest: string
  try {
    digest = await best(`${choice} engine (in memory)`, () => engine(choice))
  } catch (error) {
    console.log(`${choice} engine: unavailable (${error instanceof Error ? error.message : String(error)})`)
    continue
  }
  if (digest !== expected) throw new Error(`${choice} engine digest differs from node crypto`)
  console.log(`${''.padEnd(34)} save+JSON+restore: ${await saveRestoreMicros(choice)} µs`)
}

const dir = await fs.mkdtemp(path.join(os.tmpdir(), 'ms-resume-hash-speed-'))
try {
  const file = path.join(dir, 'blob')
  const out = createWriteStream(file)
  for (let i = 0; i < updates; i++) {
    if (!out.write(block)) await new Promise<void>((resolve) => out.once('drain', () => resolve()))
  }
  out.end()
  await finished(out)
  const digest = await best('sha256FileHex (page cache)', () => sha256FileHex(file))
  if (digest !== expected) throw new Error('sha256FileHex digest differs from node crypto')
} finally {
  await fs.rm(dir, {recursive: true, force: true})
}
