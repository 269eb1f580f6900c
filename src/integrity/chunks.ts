import xxhash from 'xxhash-wasm'

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

type XXH = Awaited<ReturnType<typeof xxhash>>
let api: XXH | undefined
let loading: Promise<XXH> | undefined

export async function loadXxh64(): Promise<(data: Uint8Array) => string> {
  if (!api) {
    loading ??= xxhash()
    api = await loading
  }
  const h64Raw = api.h64Raw
  return (data: Uint8Array) => h64Raw(data).toString(16).padStart(16, '0')
}
