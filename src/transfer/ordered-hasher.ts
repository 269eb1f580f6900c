import {MsrError} from '../errors.js'
import {xxh64PiecesAsync} from '../integrity/chunks.js'
import {restoreSha256, type ResumableSha256, type SavedSha256State} from '../integrity/sha256.js'

/**
 * The file's SHA-256, fed strictly in file order, one update after another (the native engine runs
 * each on libuv's thread pool). Also yields each chunk's xxh64. The hash may start in the middle of
 * a chunk (a resume from a byte-exact checkpoint): the first chunk fed is then hashed from there.
 *
 * Chunks are hashed before their writes land, so the state after each update is kept aside until
 * every byte it covers is on disk (`promote`); only such a state may be journaled.
 */
export class OrderedHasher {
  /** First chunk not yet fed. */
  nextChunk: number
  /** Bytes the hash will cover once every update fed so far is done. */
  private fedBytes: number
  private chain: Promise<void> = Promise.resolve()
  private pending: SavedSha256State[] = []
  /** The newest state whose bytes are all written. */
  durableState: SavedSha256State | undefined
  private failure: unknown

  constructor(
    private hasher: ResumableSha256,
    private readonly chunkSizeBytes: number,
  ) {
    this.fedBytes = hasher.offsetBytes
    this.nextChunk = Math.floor(hasher.offsetBytes / chunkSizeBytes)
    if (hasher.offsetBytes > 0) this.durableState = hasher.save()
  }

  get error(): unknown {
    return this.failure
  }

  /** A failed update (engine error) as a non-retryable E_LOCAL. */
  throwIfFailed(path: string): void {
    const error = this.failure
    if (error) throw new MsrError('E_LOCAL', `Hashing ${path} failed: ${(error as Error)?.message ?? String(error)}.`, {path, cause: error})
  }

  /**
   * Hashes `data`, whole chunks from chunk `first` (which must be `nextChunk`; the last may be the
   * file's short tail); resolves to their xxh64s. Bytes the hash already covers are skipped.
   */
  feed(first: number, data: Uint8Array): Promise<string[]> {
    if (first !== this.nextChunk) throw new Error(`internal: chunk ${first} fed out of order (next is ${this.nextChunk})`)
    const start = first * this.chunkSizeBytes
    const skip = this.fedBytes - start
    this.nextChunk += Math.ceil(data.byteLength / this.chunkSizeBytes)
    this.fedBytes = start + data.byteLength
    const chunk = this.chunkSizeBytes
    let sums: Promise<string[]>
    let step: Promise<SavedSha256State>
    if (skip === 0) {
      const hashed = this.chain.then(() => this.hasher.updateChunk(data, chunk))
      sums = hashed.then((r) => r.sums)
      step = hashed.then((r) => r.state)
    } else {
      // Once per resume: the part of the first chunk the restored state does not cover yet.
      sums = xxh64PiecesAsync(data, chunk)
      step = this.chain.then(() => {
        this.hasher.update(data.subarray(skip))
        return this.hasher.save()
      })
    }
    this.chain = step.then(
      (state) => {
        this.pending.push(state)
      },
      (error) => {
        this.failure ??= error
      },
    )
    return sums
  }

  /** Every byte below `writtenBytes` is on disk: states up to there may be journaled. */
  promote(writtenBytes: number): void {
    while (this.pending.length > 0 && this.pending[0].offsetBytes <= writtenBytes) this.durableState = this.pending.shift()
  }

  /** Resolves when every update fed so far is done. */
  settled(): Promise<void> {
    return this.chain
  }

  /** Starts over from byte 0 with `hasher` (the bytes hashed so far changed on disk). */
  async reset(hasher: ResumableSha256): Promise<void> {
    await this.chain
    this.hasher = hasher
    this.fedBytes = 0
    this.nextChunk = 0
    this.pending = []
    this.durableState = undefined
  }

  /**
   * The durable state carried on over `partial` (the first bytes of chunk `index`, which follow it
   * on disk): the hash at a byte-exact checkpoint. Undefined when the durable state is elsewhere.
   */
  async stateThrough(index: number, partial: Uint8Array): Promise<SavedSha256State | undefined> {
    const state = this.durableState
    const start = index * this.chunkSizeBytes
    if (!state || state.offsetBytes < start || state.offsetBytes > start + partial.byteLength) return undefined
    if (state.offsetBytes === start + partial.byteLength) return state
    const copy = await restoreSha256(state)
    if (!copy) return undefined
    copy.update(partial.subarray(state.offsetBytes - start))
    return copy.save()
  }

  async digestHex(): Promise<string> {
    await this.chain
    if (this.failure) throw this.failure
    return this.hasher.digestHex()
  }
}
