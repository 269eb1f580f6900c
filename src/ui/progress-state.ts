import type {PullEvent} from '../events.js'
import {RateMeter, etaMs} from './rate-meter.js'

export interface ActiveFile {
  path: string
  size: number
  bytesDone: number
  bytesPerSec: number
  etaMs?: number
}

export interface OverallProgress {
  files: number
  filesDone: number
  filesFailed: number
  totalBytes: number
  bytesDone: number
  /** Network speed over the last seconds (bytes received, not bytes reused). */
  bytesPerSec: number
  etaMs?: number
  retries: number
  elapsedMs: number
}

interface FileTrack {
  size: number
  bytesDone: number
  lastReceived: number
  meter: RateMeter
}

/**
 * What a pull has done so far, folded from its events; the plain and the terminal reporters read
 * it. Pure bookkeeping: time comes in as an argument, so tests drive it without a clock.
 */
export class ProgressState {
  modelId = ''
  revision = ''
  modelDir = ''
  files = 0
  totalBytes = 0
  toDownloadBytes = 0
  filesDone = 0
  filesFailed = 0
  retries = 0
  startedAtMs: number
  /** Bytes of files in flight; finished files only add to finishedBytes (100,000 files must not mean 100,000 entries summed per frame). */
  private readonly doneBytes = new Map<string, number>()
  private finishedBytes = 0
  private readonly active = new Map<string, FileTrack>()
  private readonly network = new RateMeter()

  constructor(nowMs: number) {
    this.startedAtMs = nowMs
  }

  apply(e: PullEvent, nowMs: number): void {
    switch (e.type) {
      case 'listing':
        this.modelId = e.modelId
        this.revision = e.revision
        break
      case 'start':
        Object.assign(this, {modelId: e.modelId, revision: e.revision, modelDir: e.modelDir, files: e.files, totalBytes: e.totalBytes, toDownloadBytes: e.toDownloadBytes})
        break
      // Also after an integrity retry or a remote change: the file starts again from its offset.
      case 'file-start':
        this.active.set(e.path, {size: e.size, bytesDone: e.offsetBytes, lastReceived: 0, meter: new RateMeter()})
        this.doneBytes.set(e.path, e.offsetBytes)
        break
      case 'progress': {
        const track = this.active.get(e.path) ?? {size: e.size, bytesDone: 0, lastReceived: 0, meter: new RateMeter()}
        this.active.set(e.path, track)
        // receivedBytes counts per download attempt: a restarted file starts again from 0.
        const delta = e.receivedBytes >= track.lastReceived ? e.receivedBytes - track.lastReceived : e.receivedBytes
        track.lastReceived = e.receivedBytes
        track.size = e.size
        track.bytesDone = e.bytesDone
        track.meter.add(delta, nowMs)
        this.network.add(delta, nowMs)
        this.doneBytes.set(e.path, e.bytesDone)
        break
      }
      case 'retry':
        this.retries++
        break
      case 'file-done':
        this.filesDone++
        this.active.delete(e.path)
        this.doneBytes.delete(e.path)
        this.finishedBytes += e.size
        break
      case 'file-error':
        this.filesFailed++
        this.active.delete(e.path)
        break
      default:
        break
    }
  }

  activeFiles(nowMs: number): ActiveFile[] {
    return [...this.active.entries()].map(([path, t]) => {
      const bytesPerSec = t.meter.bytesPerSec(nowMs)
      return {path, size: t.size, bytesDone: t.bytesDone, bytesPerSec, etaMs: t.meter.warm(nowMs) ? etaMs(t.size - t.bytesDone, bytesPerSec) : undefined}
    })
  }

  overall(nowMs: number): OverallProgress {
    let bytesDone = this.finishedBytes
    for (const n of this.doneBytes.values()) bytesDone += n
    const bytesPerSec = this.network.bytesPerSec(nowMs)
    return {
      files: this.files, filesDone: this.filesDone, filesFailed: this.filesFailed,
      totalBytes: this.totalBytes, bytesDone, bytesPerSec,
      etaMs: this.network.warm(nowMs) ? etaMs(this.totalBytes - bytesDone, bytesPerSec) : undefined,
      retries: this.retries, elapsedMs: nowMs - this.startedAtMs,
    }
  }

  /** Bytes received over the network so far. */
  get receivedBytes(): number {
    return this.network.total
  }
}
