import type {HashedChunk, ResumableSha256} from './sha256-types.js'
import {IN_PLACE_BELOW_BYTES, nativeChunkHashing} from './native-addon.js'

/**
 * Every file is cut into a fixed grid of chunks; each chunk's xxh64 is recorded once it is durable,
 * so a resume can check the bytes it keeps, `verify --level fast` can name damaged ranges, and a
 * repair re-fetches single chunks. xxhash-wasm's streaming state cannot be saved, hence whole chunks.
 */
export const MIN_CHUNK_BYTES = 1024 * 1024
/** Above this many chunks the grid coarsens, to keep the journal small for 100+ GiB files. */
export const MAX_CHUNKS = 8192

export function chunkSizeFor(sizeBytes: number): number {
  let chunk = MIN_CHUNK_BYTES
  while (Math.ceil(sizeBytes / chunk) > MAX_CHUNKS) chunk *= 2
  return chunk
}

export function chunkCount(sizeBytes: number, chunkSizeBytes: number): number {
  return Math.ceil(sizeBytes / chunkSizeBytes)
}

/** [start, end) of chunk i. */
export function chunkBounds(i: number, sizeBytes: number, chunkSizeBytes: number): {start: number; end: number} {
  const start = i * chunkSizeBytes
  return {start, end: Math.min(sizeBytes, start + chunkSizeBytes)}
}

type XXH = Awaited<ReturnType<typeof import('xxhash-wasm').default>>
let api: XXH | undefined
let loading: Promise<XXH> | undefined

/**
 * The xxh64 of a buffer, as 16 hex digits: the native addon's when it is built (about 8 GB/s here),
 * xxhash-wasm's otherwise (about 5 GB/s). Both give the same numbers (a unit test compares them).
 */
export async function loadXxh64(): Promise<(data: Uint8Array) => string> {
  const native = nativeChunkHashing()
  if (native) return native.xxh64
  return loadWasmXxh64()
}

/** xxhash-wasm's xxh64 (the fallback, and the reference the native one is tested against). */
export async function loadWasmXxh64(): Promise<(data: Uint8Array) => string> {
  if (!api) {
    // Imported only where the addon is missing, not at every start-up.
    loading ??= import('xxhash-wasm').then((m) => m.default())
    api = await loading
  }
  const h64Raw = api.h64Raw
  return (data: Uint8Array) => h64Raw(data).toString(16).padStart(16, '0')
}

/**
 * The xxh64 of each chunkSize piece of a buffer, without blocking the main thread when the addon is
 * built (the work runs on libuv's thread pool; `data` must stay untouched until the promise
 * settles); in place otherwise.
 */
export async function xxh64PiecesAsync(data: Uint8Array, chunkSize = data.byteLength): Promise<string[]> {
  const native = nativeChunkHashing()
  if (native && data.byteLength >= IN_PLACE_BELOW_BYTES) return (await native.hashChunk(null, data, chunkSize || undefined)).sums
  return xxh64Pieces(await loadXxh64(), data, chunkSize)
}

/** The xxh64 of each chunkSize piece of data (the last may be shorter; one piece when data is empty). */
export function xxh64Pieces(xxh: (data: Uint8Array) => string, data: Uint8Array, chunkSize = data.byteLength): string[] {
  if (data.byteLength === 0 || chunkSize <= 0) return [xxh(data)]
  const sums: string[] = []
  for (let at = 0; at < data.byteLength; at += chunkSize) sums.push(xxh(data.subarray(at, Math.min(data.byteLength, at + chunkSize))))
  return sums
}

/** ResumableSha256.updateChunk done on the calling thread (the wasm engine, and small data). */
export async function updateChunkInPlace(hasher: Pick<ResumableSha256, 'update' | 'save'>, data: Uint8Array, chunkSize = data.byteLength): Promise<HashedChunk> {
  const sums = xxh64Pieces(await loadXxh64(), data, chunkSize)
  hasher.update(data)
  return {sums, state: hasher.save()}
}
