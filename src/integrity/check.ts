import fs from 'node:fs/promises'
import os from 'node:os'

import {chunkBounds, loadXxh64} from './chunks.js'
import {nativeChunkHashing} from './native-addon.js'
import {readFully} from '../fs/read-fully.js'
import {sha256FileHex} from './sha256.js'

export type CheckLevel = 'size' | 'fast' | 'full'
export const CHECK_LEVELS: readonly CheckLevel[] = ['size', 'fast', 'full']

/** What a file should be: from the journal or from an integrity manifest. */
export interface ExpectedFile {
  path: string
  size: number
  sha256: string
  chunkSizeBytes: number
  /** xxh64 hex per chunk; may be empty when unknown (then `fast` falls back to `full`). */
  chunks: string[]
}

export type FileCheckStatus = 'ok' | 'missing' | 'wrong-size' | 'damaged' | 'sha256-mismatch' | 'not-a-file'

export interface DamagedRange {
  chunk: number
  start: number
  /** Exclusive. */
  end: number
}

export interface FileCheck {
  path: string
  status: FileCheckStatus
  level: CheckLevel
  expectedSize: number
  foundSize?: number
  expectedSha256?: string
  foundSha256?: string
  /** Chunks whose xxh64 differs, when the damage could be localised. */
  damaged?: DamagedRange[]
}

const READ_BYTES = 8 * 1024 * 1024

/**
 * Checks one file at a level: `size` reads no content; `fast` compares every chunk's xxh64 and names
 * the damaged ranges; `full` compares the SHA-256 (fastest engine, no state needed) and, on a
 * mismatch, localises the damage with the chunk sums so a repair can fetch only those chunks.
 */
export async function checkFile(filePath: string, expected: ExpectedFile, level: CheckLevel): Promise<FileCheck> {
  const base = {path: expected.path, level, expectedSize: expected.size}
  let stat
  try {
    stat = await fs.lstat(filePath)
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'ENOENT' || (error as NodeJS.ErrnoException).code === 'ENOTDIR') return {...base, status: 'missing'}
    throw error
  }
  if (!stat.isFile()) return {...base, status: 'not-a-file'}
  if (stat.size !== expected.size) {
    return {...base, status: 'wrong-size', foundSize: stat.size, damaged: await localiseDamage(filePath, expected)}
  }
  if (level === 'size') return {...base, status: 'ok', foundSize: stat.size}
  const haveSums = expected.chunks.length === Math.ceil(expected.size / expected.chunkSizeBytes) && expected.chunks.every((c) => /^[0-9a-f]{16}$/.test(c))
  if (level === 'fast' && haveSums) {
    const damaged = await localiseDamage(filePath, expected)
    return damaged && damaged.length > 0 ? {...base, status: 'damaged', foundSize: stat.size, damaged} : {...base, status: 'ok', foundSize: stat.size}
  }
  const found = await sha256FileHex(filePath)
  if (found === expected.sha256) return {...base, level: 'full', status: 'ok', foundSize: stat.size}
  return {
    ...base,
    level: 'full',
    status: 'sha256-mismatch',
    foundSize: stat.size,
    expectedSha256: expected.sha256,
    foundSha256: found,
    damaged: haveSums ? await localiseDamage(filePath, expected) : undefined,
  }
}

/** Chunks whose bytes on disk no longer match their xxh64 (missing bytes count as damaged). */
export async function localiseDamage(filePath: string, expected: ExpectedFile): Promise<DamagedRange[] | undefined> {
  const count = Math.ceil(expected.size / expected.chunkSizeBytes)
  if (expected.chunks.length !== count) return undefined
  const sums = await chunkSumsOnDisk(filePath, expected.size, expected.chunkSizeBytes)
  const damaged: DamagedRange[] = []
  sums.forEach((sum, i) => {
    if (sum !== expected.chunks[i]) damaged.push({chunk: i, ...chunkBounds(i, expected.size, expected.chunkSizeBytes)})
  })
  return damaged
}

/** The xxh64 of every chunk of the file as it is on disk (null for a chunk the file is too short to hold). */
export async function chunkSumsOnDisk(filePath: string, size: number, chunkSizeBytes: number): Promise<Array<string | null>> {
  const fh = await fs.open(filePath, 'r')
  try {
    return await chunkSumsOfOpenFile(fh, size, chunkSizeBytes)
  } finally {
    await fh.close()
  }
}

/** Bytes per thread-pool job of chunkSumsOfOpenFile, and how many such jobs run at once. */
const NATIVE_PART_BYTES = 64 * 1024 * 1024
const NATIVE_PARTS_AT_ONCE = 2

/**
 * The xxh64 of chunks [0, count) of an open file (null for a chunk the file is too short to hold).
 * With the addon, read and hashed in native code on libuv's thread pool (parts of 64 MiB, two at a
 * time: both cores, and no JS copy of the bytes); without it, see chunkSumsThroughNode.
 */
export async function chunkSumsOfOpenFile(fh: fs.FileHandle, size: number, chunkSizeBytes: number, count = Math.ceil(size / chunkSizeBytes)): Promise<Array<string | null>> {
  const native = nativeChunkHashing()
  if (!native) return chunkSumsThroughNode(fh, size, chunkSizeBytes, count)
  const perPart = Math.max(1, Math.floor(NATIVE_PART_BYTES / chunkSizeBytes))
  const parts: Array<{first: number; last: number}> = []
  for (let first = 0; first < count; first += perPart) parts.push({first, last: Math.min(count, first + perPart)})
  const sums: Array<string | null> = new Array(count).fill(null)
  let nextPart = 0
  const worker = async () => {
    while (nextPart < parts.length) {
      const {first, last} = parts[nextPart++]
      const start = first * chunkSizeBytes
      const end = chunkBounds(last - 1, size, chunkSizeBytes).end
      const got = await native.xxh64File(fh.fd, start, end - start, chunkSizeBytes).catch((error: Error & {errno?: number; code?: string}) => {
        // The addon reports a raw errno: name it (EIO, ...) as fs errors are named.
        const name = Object.entries(os.constants.errno).find(([, n]) => n === error.errno)?.[0]
        if (name) error.code = name
        throw error
      })
      for (let i = first; i < last; i++) sums[i] = got[i - first]
    }
  }
  await Promise.all(Array.from({length: Math.min(NATIVE_PARTS_AT_ONCE, parts.length)}, worker))
  return sums
}

/**
 * The fallback: two buffers alternate so the next batch is read (on libuv's pool) while this one is
 * hashed with xxhash-wasm, so the `fast` level stays bound by reads, not by xxh64.
 */
export async function chunkSumsThroughNode(fh: fs.FileHandle, size: number, chunkSizeBytes: number, count: number): Promise<Array<string | null>> {
  const xxh = await loadXxh64()
  const sums: Array<string | null> = []
  if (count === 0) return sums
  const endOfLast = chunkBounds(count - 1, size, chunkSizeBytes).end
  const perRead = Math.max(1, Math.floor(READ_BYTES / chunkSizeBytes))
  const batchBytes = Math.min(endOfLast, perRead * chunkSizeBytes)
  const buffers = [Buffer.allocUnsafeSlow(batchBytes), Buffer.allocUnsafeSlow(batchBytes)]
  /** Reads chunks [first, first + perRead) into buf; resolves to the bytes read (short at EOF). */
  const readBatch = (first: number, buf: Buffer): Promise<number> => {
    const start = first * chunkSizeBytes
    return readFully(fh, buf, Math.min(endOfLast, (first + perRead) * chunkSizeBytes) - start, start)
  }
  let pending: Promise<number> | undefined = readBatch(0, buffers[0])
  try {
    let which = 0
    for (let first = 0; first < count; first += perRead) {
      const got = await pending!
      pending = first + perRead < count ? readBatch(first + perRead, buffers[which ^ 1]) : undefined
      const buf = buffers[which]
      const start = first * chunkSizeBytes
      for (let i = first; i < Math.min(count, first + perRead); i++) {
        const b = chunkBounds(i, size, chunkSizeBytes)
        sums.push(b.end - start > got ? null : xxh(buf.subarray(b.start - start, b.end - start)))
      }
      which ^= 1
    }
  } finally {
    if (pending) await pending.catch(() => {})
  }
  return sums
}
