import fs, {type FileHandle} from 'node:fs/promises'

import {knobs} from '../config.js'
import {alignmentOffset} from '../integrity/native-addon.js'
import {sleep} from './rate-limiter.js'

/** Direct I/O: files from this size, blocks aligned to this (covers 512-byte and 4 KiB sectors). */
const DIRECT_IO_MIN_BYTES = 32 * 1024 * 1024
const DIRECT_ALIGN = 4096

/**
 * Writes to one partial file: one write at a time (concurrent pwrite()s to one file only spin on
 * its inode lock; measured: 6% of all CPU in rwsem_spin_on_owner), and block buffers from a pool.
 *
 * Large files are written with O_DIRECT where the file system allows it: whole aligned blocks go
 * from our buffer to the device, skipping the page cache (1 GiB: 2-4 s of kernel time buffered,
 * 0.2 s direct, measured with dd). The normal handle does everything else (reads, unaligned
 * pieces, truncate, fdatasync, which flushes the device for both). Not on tmpfs and network file
 * systems that refuse the open, nor with MS_RESUME_DIRECT_IO=0; EINVAL on a write falls back.
 */
export class PartialWriter {
  private direct: FileHandle | undefined
  private tail: Promise<void> = Promise.resolve()
  private readonly pool: Buffer[] = []

  constructor(
    private readonly fh: FileHandle,
    private readonly partialPath: string | undefined,
    private readonly sizeBytes: number,
    /** Bytes of one block buffer (buffers taken from now on; see resize). */
    private blockBytes: number,
  ) {}

  /**
   * Buffers taken from now on have `bytes` (only ever fewer: growing back as connections finish
   * would drop the pool at the tail, garbage V8 collects late); larger ones are not pooled again.
   */
  shrink(bytes: number): void {
    if (bytes >= this.blockBytes) return
    this.blockBytes = bytes
    this.pool.length = 0
  }

  async open(): Promise<void> {
    const O_DIRECT = (fs.constants as Record<string, number>).O_DIRECT
    if (this.direct || !knobs.directIo || !O_DIRECT || !this.partialPath || this.sizeBytes < DIRECT_IO_MIN_BYTES) return
    if (alignmentOffset(Buffer.alloc(1), DIRECT_ALIGN) === null) return
    try {
      this.direct = await fs.open(this.partialPath, fs.constants.O_WRONLY | O_DIRECT | (fs.constants.O_NOFOLLOW ?? 0))
      // Buffers from before are unaligned: start the pool afresh.
      this.pool.length = 0
    } catch {
      this.direct = undefined
    }
  }

  async close(): Promise<void> {
    await this.tail
    const direct = this.direct
    this.direct = undefined
    this.pool.length = 0
    await direct?.close().catch(() => {})
  }

  takeBuffer(): Buffer {
    const pooled = this.pool.pop()
    if (pooled) return pooled
    if (!this.direct) return Buffer.allocUnsafeSlow(this.blockBytes)
    // O_DIRECT needs the memory aligned too.
    const raw = Buffer.allocUnsafeSlow(this.blockBytes + DIRECT_ALIGN)
    const skip = alignmentOffset(raw, DIRECT_ALIGN) ?? 0
    return raw.subarray(skip, skip + this.blockBytes)
  }

  giveBack(buffer: Buffer): void {
    if (buffer.length === this.blockBytes) this.pool.push(buffer)
  }

  /**
   * Queues a write of `data` at `position`, after every write queued before it. `mayBypassCache`:
   * the block is already hashed (a block ahead of the hash is read back soon: keep it in the cache).
   * The caller must not change `data` until the promise settles.
   */
  write(data: Buffer, position: number, mayBypassCache: boolean): Promise<void> {
    const written = this.tail.then(() => this.writeNow(data, position, mayBypassCache))
    this.tail = written.catch(() => {})
    return written
  }

  private async writeNow(data: Buffer, position: number, mayBypassCache: boolean): Promise<void> {
    if (knobs.testWriteDelayMs > 0) await sleep(knobs.testWriteDelayMs)
    const direct = this.direct
    if (direct && mayBypassCache && position % DIRECT_ALIGN === 0 && data.byteLength % DIRECT_ALIGN === 0 && alignmentOffset(data, DIRECT_ALIGN) === 0) {
      try {
        return await writeFully(direct, data, position)
      } catch (error) {
        if ((error as NodeJS.ErrnoException).code !== 'EINVAL') throw error
        // The file system takes O_DIRECT opens but not these writes: buffered from now on.
        this.direct = undefined
        void direct.close().catch(() => {})
      }
    }
    return writeFully(this.fh, data, position)
  }
}

async function writeFully(fh: FileHandle, data: Buffer, position: number): Promise<void> {
  let written = 0
  while (written < data.length) {
    const {bytesWritten} = await fh.write(data, written, data.length - written, position + written)
    written += bytesWritten
  }
}
