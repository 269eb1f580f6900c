import {createRequire} from 'node:module'

import type {IHasher} from 'hash-wasm'

import {updateChunkInPlace} from './chunks.js'
import type {HashedChunk, ResumableSha256, SavedSha256State} from './sha256-types.js'
import {decodeBase64Strict} from './sha256-state.js'

/**
 * The portable engine: hash-wasm's SHA-256 with its save()/load(). A hash-wasm state starts with a
 * 4-byte fingerprint of the wasm build that wrote it, and load() refuses other builds, so the engine
 * id carries hash-wasm's version: a journal written by another version is re-hashed, not misread.
 */

/**
 * hash-wasm and its package.json, required on first use, from where this module is: hash-wasm is not
 * in the bundle (scripts/bundle.ts), and a dynamic import() has no loader there.
 */
const load = createRequire(import.meta.url)

function hashWasmVersion(): string {
  try {
    const version = (load('hash-wasm/package.json') as {version?: unknown}).version
    return typeof version === 'string' && version ? version : 'unknown'
  } catch {
    return 'unknown'
  }
}

/**
 * hash-wasm's SHA-256 (its CommonJS build), loaded on first use: it holds every algorithm's wasm as
 * text, and its initialisation cost every start-up 4 ms, while the native engine hashes wherever it
 * is built.
 */
async function createSHA256(): Promise<IHasher> {
  return (load('hash-wasm') as typeof import('hash-wasm')).createSHA256()
}

let engineId: string | undefined
/** Found on first use: reading hash-wasm's package.json cost a no-op pull 6 ms of its start-up. */
export function wasmEngineId(): string {
  return (engineId ??= `hash-wasm-${hashWasmVersion()}`)
}

/**
 * Layout of hash-wasm 4.x's saved SHA-256 state: fingerprint[4], message[64], length u64 (bytes
 * hashed), hash[8] u32, digest_length u32, padding. Used only to cross-check a restored state against
 * its offsetBytes, and only after a probe confirmed that this build really lays it out that way.
 */
const LAYOUT = {size: 116, lengthAt: 68, digestLengthAt: 108} as const
let layoutConfirmed: Promise<boolean> | undefined

function probeLayout(): Promise<boolean> {
  layoutConfirmed ??= (async () => {
    try {
      const hasher = await createSHA256()
      hasher.update(new Uint8Array(77))
      return stateLengthField(hasher.save()) === 77
    } catch {
      return false
    }
  })()
  return layoutConfirmed
}

/** Bytes hashed according to a state in the known layout, or -1 when it is not in that layout. */
function stateLengthField(state: Uint8Array): number {
  if (state.length !== LAYOUT.size) return -1
  const view = new DataView(state.buffer, state.byteOffset, state.byteLength)
  if (view.getUint32(LAYOUT.digestLengthAt, true) !== 32) return -1
  const length = view.getBigUint64(LAYOUT.lengthAt, true)
  return length <= BigInt(Number.MAX_SAFE_INTEGER) ? Number(length) : -1
}

class WasmSha256 implements ResumableSha256 {
  readonly engine = wasmEngineId()
  #hasher: IHasher
  #offset: number
  #finished = false

  constructor(hasher: IHasher, offsetBytes: number) {
    this.#hasher = hasher
    this.#offset = offsetBytes
  }

  get offsetBytes(): number {
    return this.#offset
  }

  update(data: Uint8Array): void {
    if (this.#finished) throw new Error('sha256: update() after digestHex()')
    if (data.byteLength === 0) return
    this.#hasher.update(data)
    this.#offset += data.byteLength
  }

  async updateChunk(data: Uint8Array, chunkSize = data.byteLength): Promise<HashedChunk> {
    return updateChunkInPlace(this, data, chunkSize)
  }

  save(): SavedSha256State {
    if (this.#finished) throw new Error('sha256: save() after digestHex()')
    return {engine: this.engine, offsetBytes: this.#offset, stateB64: Buffer.from(this.#hasher.save()).toString('base64')}
  }

  digestHex(): string {
    if (this.#finished) throw new Error('sha256: digestHex() called twice')
    this.#finished = true
    return this.#hasher.digest('hex')
  }
}

/** A fresh hash-wasm hasher. */
export async function createWasmSha256(): Promise<ResumableSha256> {
  const hasher = await createSHA256()
  hasher.init()
  return new WasmSha256(hasher, 0)
}

/**
 * Restores a hash-wasm state; null when it is of another engine or version, malformed, or its byte
 * count disagrees with offsetBytes. Never throws.
 */
export async function restoreWasmSha256(saved: SavedSha256State): Promise<ResumableSha256 | null> {
  try {
    if (saved.engine !== wasmEngineId()) return null
    const state = decodeBase64Strict(saved.stateB64)
    if (!state) return null
    if (await probeLayout()) {
      if (stateLengthField(state) !== saved.offsetBytes) return null
    }
    const hasher = await createSHA256()
    hasher.load(new Uint8Array(state.buffer, state.byteOffset, state.byteLength))
    return new WasmSha256(hasher, saved.offsetBytes)
  } catch {
    return null
  }
}
