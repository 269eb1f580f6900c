import {updateChunkInPlace} from './chunks.js'
import {IN_PLACE_BELOW_BYTES, type Loaded, loadNativeAddon, nativeChunkHashing, nativeSha256Problem, type Sha256CtxAddon} from './native-addon.js'
import type {HashedChunk, ResumableSha256, SavedSha256State} from './sha256-types.js'
import {decodeBase64Strict} from './sha256-state.js'

/**
 * The native engine: OpenSSL's SHA256_CTX, through the tiny N-API addon in native/sha256_ctx.c
 * (built by `npm install` into build/Release/sha256_ctx.node). The saved state is the raw struct,
 * so saving and restoring are copies. The struct layout is host-endian, hence the "-be" suffix of the
 * engine id on big-endian hosts: a journal moved between such machines is re-hashed, never misread.
 */

class NativeSha256 implements ResumableSha256 {
  readonly engine: string
  #addon: Sha256CtxAddon
  #ctx: Buffer
  #offset: number
  #finished = false
  #busy = false

  constructor(lib: Loaded, ctx: Buffer, offsetBytes: number) {
    this.engine = lib.engine
    this.#addon = lib.addon
    this.#ctx = ctx
    this.#offset = offsetBytes
  }

  get offsetBytes(): number {
    return this.#offset
  }

  update(data: Uint8Array): void {
    if (this.#finished) throw new Error('sha256: update() after digestHex()')
    if (this.#busy) throw new Error('sha256: update() while another update is running')
    if (data.byteLength === 0) return
    this.#addon.update(this.#ctx, data)
    this.#offset += data.byteLength
  }

  async updateChunk(data: Uint8Array, chunkSize = data.byteLength): Promise<HashedChunk> {
    if (this.#finished) throw new Error('sha256: updateChunk() after digestHex()')
    if (this.#busy) throw new Error('sha256: updateChunk() while another update is running')
    const chunks = nativeChunkHashing()
    // Small data is hashed in place: a thread-pool round trip costs more than hashing 64 KiB.
    if (!chunks || data.byteLength < IN_PLACE_BELOW_BYTES) {
      return updateChunkInPlace(this, data, chunkSize)
    }
    this.#busy = true
    try {
      const result = await chunks.hashChunk(this.#ctx, data, chunkSize || undefined)
      this.#offset += data.byteLength
      return {sums: result.sums, state: {engine: this.engine, offsetBytes: this.#offset, stateB64: result.ctx!.toString('base64')}}
    } finally {
      this.#busy = false
    }
  }

  save(): SavedSha256State {
    if (this.#finished) throw new Error('sha256: save() after digestHex()')
    if (this.#busy) throw new Error('sha256: save() while an update is running')
    return {engine: this.engine, offsetBytes: this.#offset, stateB64: this.#ctx.toString('base64')}
  }

  digestHex(): string {
    if (this.#finished) throw new Error('sha256: digestHex() called twice')
    if (this.#busy) throw new Error('sha256: digestHex() while an update is running')
    this.#finished = true
    const digest = this.#addon.final(this.#ctx).toString('hex')
    this.#ctx.fill(0)
    return digest
  }
}

/** A fresh native hasher; throws when the addon is not available. */
export function createNativeSha256(): ResumableSha256 {
  const lib = loadNativeAddon()
  if (!lib) throw new Error(`sha256: native engine unavailable: ${nativeSha256Problem()}`)
  return new NativeSha256(lib, lib.addon.init(), 0)
}

/**
 * Restores a native state; null when the addon is absent, the state is of another engine, or it is
 * malformed (wrong length, not a valid SHA-256 context, byte count different from offsetBytes).
 * Never throws.
 */
export function restoreNativeSha256(saved: SavedSha256State): ResumableSha256 | null {
  try {
    const lib = loadNativeAddon()
    if (!lib || saved.engine !== lib.engine) return null
    const ctx = decodeBase64Strict(saved.stateB64)
    if (!ctx || ctx.length !== lib.addon.ctxSize) return null
    if (lib.addon.bytes(ctx) !== saved.offsetBytes) return null
    return new NativeSha256(lib, ctx, saved.offsetBytes)
  } catch {
    return null
  }
}

