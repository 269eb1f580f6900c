import {createHash} from 'node:crypto'
import fs from 'node:fs/promises'

import {MsrError} from '../errors.js'
import {nativeSha256EngineId, nativeSha256Problem} from './native-addon.js'
import {createNativeSha256, restoreNativeSha256} from './sha256-native.js'
import {isSavedSha256State} from './sha256-state.js'
import type {ResumableSha256, SavedSha256State} from './sha256-types.js'
import {createWasmSha256, restoreWasmSha256, wasmEngineId} from './sha256-wasm.js'

export type {HashedChunk, ResumableSha256, SavedSha256State} from './sha256-types.js'

export type Sha256EngineChoice = 'auto' | 'native' | 'wasm'

/** Forces an engine ("native" or "wasm") for every hasher this process creates or restores. */
export const SHA256_ENGINE_ENV = 'MS_RESUME_SHA256_ENGINE'

/** The effective choice: an explicit non-auto option wins, then the environment, then auto. */
function engineChoice(requested?: Sha256EngineChoice): Sha256EngineChoice {
  if (requested !== undefined && requested !== 'auto') {
    if (requested !== 'native' && requested !== 'wasm') throw badChoice(`engine option ${JSON.stringify(requested)}`)
    return requested
  }
  const raw = (process.env[SHA256_ENGINE_ENV] ?? '').trim().toLowerCase()
  if (raw === '' || raw === 'auto') return 'auto'
  if (raw === 'native' || raw === 'wasm') return raw
  throw badChoice(`${SHA256_ENGINE_ENV}=${JSON.stringify(process.env[SHA256_ENGINE_ENV])}`)
}

function badChoice(what: string): MsrError {
  return new MsrError('E_USAGE', `Unknown SHA-256 engine in ${what}.`, {hint: `Use "native", "wasm" or "auto", or unset ${SHA256_ENGINE_ENV}.`})
}

function nativeUnavailable(): MsrError {
  return new MsrError('E_LOCAL', `The native SHA-256 engine was requested but is not available: ${nativeSha256Problem() ?? 'unknown reason'}.`, {
    hint: `Build it with \`npm rebuild ms-resume\` (needs python3, make and a C compiler), or unset ${SHA256_ENGINE_ENV}.`,
  })
}

/** Engine id the next createResumableSha256() will use. Throws only on a misconfigured engine choice. */
export function sha256EngineName(opts: {engine?: Sha256EngineChoice} = {}): string {
  const choice = engineChoice(opts.engine)
  if (choice === 'wasm') return wasmEngineId()
  const native = nativeSha256EngineId()
  if (native) return native
  if (choice === 'native') throw nativeUnavailable()
  return wasmEngineId()
}

/** Ids of the engines restoreSha256() accepts in this process, preferred first. */
export function availableSha256Engines(): string[] {
  let choice: Sha256EngineChoice
  try {
    choice = engineChoice()
  } catch {
    choice = 'auto'
  }
  const native = nativeSha256EngineId()
  const engines: string[] = []
  if (native && choice !== 'wasm') engines.push(native)
  if (choice !== 'native') engines.push(wasmEngineId())
  return engines
}

/**
 * A fresh resumable SHA-256: the native OpenSSL engine when the addon is built, hash-wasm otherwise.
 * `engine` (or MS_RESUME_SHA256_ENGINE) forces one; forcing "native" without the addon throws.
 */
export async function createResumableSha256(opts: {engine?: Sha256EngineChoice} = {}): Promise<ResumableSha256> {
  const choice = engineChoice(opts.engine)
  if (choice !== 'wasm') {
    if (nativeSha256EngineId()) return createNativeSha256()
    if (choice === 'native') throw nativeUnavailable()
  }
  return createWasmSha256()
}

/**
 * Restores a saved state so hashing continues at `saved.offsetBytes`. Returns null (never throws)
 * when the state's engine is not available here (another engine or version, or excluded by
 * MS_RESUME_SHA256_ENGINE), or when the state is malformed, of the wrong length, or disagrees with
 * its offsetBytes; the caller then re-hashes the prefix from disk (sha256PrefixFromDisk).
 */
export async function restoreSha256(saved: SavedSha256State): Promise<ResumableSha256 | null> {
  try {
    if (!isSavedSha256State(saved)) return null
    if (!availableSha256Engines().includes(saved.engine)) return null
    if (saved.engine === wasmEngineId()) return await restoreWasmSha256(saved)
    return restoreNativeSha256(saved)
  } catch {
    return null
  }
}

/** Read size of the file helpers: two buffers of this size alternate so reading overlaps hashing. */
export const SHA256_FILE_READ_BYTES = 8 * 1024 * 1024

/**
 * Calls `onChunk` with the bytes [start, end) of a file, in order. `end` defaults to the file's size
 * at open time; a file that ends before `end` throws E_SIZE. `onChunk` must consume the chunk
 * synchronously: its buffer is reused two reads later.
 */
async function readRange(
  filePath: string,
  range: {start?: number; end?: number; signal?: AbortSignal},
  onChunk: (chunk: Uint8Array) => void,
): Promise<void> {
  const start = range.start ?? 0
  if (!Number.isSafeInteger(start) || start < 0) throw new RangeError(`sha256: bad start ${start}`)
  if (range.end !== undefined && (!Number.isSafeInteger(range.end) || range.end < start)) {
    throw new RangeError(`sha256: bad end ${range.end} (start ${start})`)
  }
  range.signal?.throwIfAborted()
  const handle = await fs.open(filePath, 'r')
  let pending: Promise<{bytesRead: number}> | undefined
  try {
    const end = range.end ?? Math.max(start, (await handle.stat()).size)
    if (end === start) return
    const size = Math.min(SHA256_FILE_READ_BYTES, end - start)
    const buffers = [Buffer.allocUnsafeSlow(size), Buffer.allocUnsafeSlow(size)]
    let which = 0
    let position = start
    const readNext = (): Promise<{bytesRead: number}> =>
      handle.read(buffers[which], 0, Math.min(size, end - position), position)
    pending = readNext()
    while (pending) {
      const {bytesRead} = await pending
      pending = undefined
      if (bytesRead === 0) {
        throw new MsrError('E_SIZE', `${filePath} ends at byte ${position}, before byte ${end}.`, {expected: end, found: position})
      }
      range.signal?.throwIfAborted()
      const chunk = buffers[which].subarray(0, bytesRead)
      position += bytesRead
      which ^= 1
      if (position < end) pending = readNext()
      onChunk(chunk)
    }
  } finally {
    if (pending) await pending.catch(() => {})
    await handle.close()
  }
}

/**
 * SHA-256 hex of the bytes [start, end) of a file (whole file by default) with node's crypto: the
 * fastest way when no resumable state is needed (verification of a complete file).
 */
export async function sha256FileHex(filePath: string, opts: {start?: number; end?: number; signal?: AbortSignal} = {}): Promise<string> {
  const hash = createHash('sha256')
  await readRange(filePath, opts, (chunk) => hash.update(chunk))
  return hash.digest('hex')
}

/**
 * Brings `hasher` up to `lengthBytes` by feeding it the file's bytes [hasher.offsetBytes, lengthBytes):
 * with a fresh hasher, the first lengthBytes bytes. Used to rebuild the state of a partial file when
 * its saved state is unusable. Throws E_SIZE when the file is shorter than lengthBytes.
 */
export async function sha256PrefixFromDisk(
  filePath: string,
  lengthBytes: number,
  hasher: ResumableSha256,
  opts: {signal?: AbortSignal} = {},
): Promise<ResumableSha256> {
  if (!Number.isSafeInteger(lengthBytes) || lengthBytes < hasher.offsetBytes) {
    throw new RangeError(`sha256: cannot bring a hasher at byte ${hasher.offsetBytes} to byte ${lengthBytes}`)
  }
  await readRange(filePath, {start: hasher.offsetBytes, end: lengthBytes, signal: opts.signal}, (chunk) => hasher.update(chunk))
  return hasher
}
