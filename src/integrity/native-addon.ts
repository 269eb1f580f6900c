import {existsSync} from 'node:fs'
import {createRequire} from 'node:module'
import os from 'node:os'
import path from 'node:path'
import {fileURLToPath} from 'node:url'

/**
 * The N-API addon in native/sha256_ctx.c (built by `npm install` into build/Release/sha256_ctx.node):
 * OpenSSL's SHA256_CTX, XXH64, thread-pool hashing, and memory alignment for O_DIRECT. Loaded once,
 * self-tested; everything that uses it (the SHA-256 engine, chunk sums, the partial writer) asks
 * here. It imports nothing of ours, so nothing that uses it forms a cycle.
 */

/** What native/sha256_ctx.c exports. */
export interface Sha256CtxAddon {
  ctxSize: number
  init(): Buffer
  update(ctx: Buffer, data: Uint8Array): void
  final(ctx: Buffer): Buffer
  /** Bytes hashed so far, or -1 when ctx is not a valid SHA-256 context. */
  bytes(ctx: Buffer): number
  /** XXH64 (seed 0), 16 hex digits. Absent from addons built before it existed. */
  xxh64?(data: Uint8Array): string
  /** On the thread pool: XXH64 of data and, with a ctx, SHA256_Update (ctx written back on completion). */
  hashChunk?(ctx: Buffer | null, data: Uint8Array, chunkSize?: number): Promise<{sums: string[]; ctx?: Buffer}>
  /** Bytes to skip from the start of buffer to reach an address that is a multiple of align. */
  alignmentOffset?(buffer: Uint8Array, align: number): number
  /** On the thread pool: pread()s the range and returns each chunk's XXH64 (null past the end of the file). */
  xxh64File?(fd: number, start: number, length: number, chunkSize: number): Promise<Array<string | null>>
  /** On the thread pool, one job: create (O_EXCL, O_NOFOLLOW), write, fdatasync, close, rename to target. */
  writeFileSynced?(path: string, data: Uint8Array, mode: number, target?: string): Promise<void>
  /** glibc's malloc_trim(0); false elsewhere or when nothing was freed. Absent from older builds. */
  trimMalloc?(): boolean
}

/** The addon's one-job write of a small file (see writeFileSynced in native/sha256_ctx.c), or null. */
export function nativeWriteFileSynced(): NonNullable<Sha256CtxAddon['writeFileSynced']> | null {
  const addon = loadNativeAddon()?.addon
  return addon && typeof addon.writeFileSynced === 'function' ? addon.writeFileSynced.bind(addon) : null
}

/**
 * Gives malloc's free memory back to the system (glibc, with the addon; otherwise nothing). For after
 * a burst of short-lived native buffers: a large listing's socket reads (native/sha256_ctx.c).
 */
export function trimMalloc(): boolean {
  const addon = loadNativeAddon()?.addon
  return addon && typeof addon.trimMalloc === 'function' ? addon.trimMalloc() : false
}

/**
 * Bytes to skip from the start of `buffer` to reach a multiple of `align` in memory (O_DIRECT needs
 * aligned buffers), or null without the addon (then direct I/O is not used).
 */
export function alignmentOffset(buffer: Uint8Array, align: number): number | null {
  const addon = loadNativeAddon()?.addon
  return addon && typeof addon.alignmentOffset === 'function' ? addon.alignmentOffset(buffer, align) : null
}

/** Below this many bytes, chunk hashing runs in place rather than on the thread pool. */
export const IN_PLACE_BELOW_BYTES = 64 * 1024

/** The addon's chunk-hashing entry points (thread-pool XXH64, file chunk sums). */
export interface NativeChunkHashing {
  xxh64(data: Uint8Array): string
  hashChunk(ctx: Buffer | null, data: Uint8Array, chunkSize?: number): Promise<{sums: string[]; ctx?: Buffer}>
  xxh64File(fd: number, start: number, length: number, chunkSize: number): Promise<Array<string | null>>
}

const ABC_XXH64 = '44bc2cf5ad770999'

/**
 * The addon's XXH64 entry points, or null when the addon is absent, predates them, or its XXH64
 * disagrees with the reference value (then xxhash-wasm is used). Not affected by MS_RESUME_SHA256_ENGINE:
 * every engine's chunk sums are the same numbers.
 */
export function nativeChunkHashing(): NativeChunkHashing | null {
  if (chunkHashing !== undefined) return chunkHashing
  chunkHashing = null
  const addon = loadNativeAddon()?.addon
  if (!addon || typeof addon.xxh64 !== 'function' || typeof addon.hashChunk !== 'function' || typeof addon.xxh64File !== 'function') return null
  try {
    if (addon.xxh64(Buffer.from('abc')) === ABC_XXH64) chunkHashing = addon as NativeChunkHashing
  } catch {
    // left null: xxhash-wasm is used
  }
  return chunkHashing
}

let chunkHashing: NativeChunkHashing | null | undefined

export const NATIVE_ENGINE_PREFIX = 'openssl-ctx-v1'
export const NATIVE_ADDON_FILE = path.join('build', 'Release', 'sha256_ctx.node')

export interface Loaded {
  addon: Sha256CtxAddon
  engine: string
}

let loaded: Loaded | null | undefined
let loadProblem: string | undefined

/**
 * Where the addon is looked for. This module is src/integrity/native-addon.ts when run through tsx
 * and dist/src/integrity/native-addon.js after `tsc`, so the package root is two or three levels up.
 */
export function nativeAddonCandidates(): string[] {
  const here = path.dirname(fileURLToPath(import.meta.url))
  return [path.resolve(here, '..', '..'), path.resolve(here, '..', '..', '..')].map((root) => path.join(root, NATIVE_ADDON_FILE))
}

const ABC_SHA256 = 'ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad'

export function loadNativeAddon(): Loaded | null {
  if (loaded !== undefined) return loaded
  loaded = null
  const file = nativeAddonCandidates().find((candidate) => existsSync(candidate))
  if (!file) {
    loadProblem = `native addon not built (looked for ${nativeAddonCandidates().join(', ')})`
    return null
  }
  try {
    const require = createRequire(import.meta.url)
    const addon = require(file) as Sha256CtxAddon
    if (typeof addon?.init !== 'function' || typeof addon.update !== 'function' || typeof addon.final !== 'function' ||
      typeof addon.bytes !== 'function' || !Number.isInteger(addon.ctxSize) || addon.ctxSize <= 0) {
      loadProblem = `${file} does not look like the sha256_ctx addon`
      return null
    }
    // Self-test: a known vector, split across updates, through a saved-and-restored context.
    const ctx = addon.init()
    addon.update(ctx, Buffer.from('a'))
    const copy = Buffer.from(ctx)
    addon.update(copy, Buffer.from('bc'))
    if (ctx.length !== addon.ctxSize || addon.bytes(copy) !== 3 || addon.final(copy).toString('hex') !== ABC_SHA256) {
      loadProblem = `${file} failed its self-test`
      return null
    }
    const endian = os.endianness() === 'BE' ? '-be' : ''
    loaded = {addon, engine: `${NATIVE_ENGINE_PREFIX}-${addon.ctxSize}${endian}`}
    return loaded
  } catch (error) {
    loadProblem = `cannot load ${file}: ${error instanceof Error ? error.message : String(error)}`
    return null
  }
}

/** The native engine id (e.g. "openssl-ctx-v1-112"), or null when the addon is not available. */
export function nativeSha256EngineId(): string | null {
  return loadNativeAddon()?.engine ?? null
}

/** Why the native engine is unavailable (undefined when it is available or was not tried yet). */
export function nativeSha256Problem(): string | undefined {
  loadNativeAddon()
  return loaded ? undefined : loadProblem
}
