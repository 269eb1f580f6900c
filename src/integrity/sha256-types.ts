/**
 * A SHA-256 whose state can be saved to the journal and restored in another process, so a resumed
 * download never re-hashes the bytes it already has. Engines: a native OpenSSL SHA256_CTX addon when
 * it was built, hash-wasm otherwise. A saved state is tagged with its engine; restoring a state from
 * another engine (or a corrupted one) yields null and the caller re-hashes the prefix from disk.
 */
export interface SavedSha256State {
  /** Engine id and version, e.g. "openssl-ctx-v1-112" or "hash-wasm-4.13.0". */
  engine: string
  /** Bytes hashed so far. */
  offsetBytes: number
  /** The engine's opaque state, base64. */
  stateB64: string
}

export interface HashedChunk {
  /** xxh64 of each chunkSize piece of the data (the last may be shorter). */
  sums: string[]
  /** The state after this chunk. */
  state: SavedSha256State
}

export interface ResumableSha256 {
  readonly engine: string
  readonly offsetBytes: number
  update(data: Uint8Array): void
  /**
   * Hashes data (one or more whole chunks) into the state; resolves to the xxh64 of each chunkSize
   * piece (default: the whole) and the state after the data. The native
   * engine does both on libuv's thread pool, so the main thread keeps reading sockets. Calls must not
   * overlap: await each one before calling any other method.
   */
  updateChunk(data: Uint8Array, chunkSize?: number): Promise<HashedChunk>
  save(): SavedSha256State
  /** Finishes the hash; the object must not be used afterwards. */
  digestHex(): string
}
