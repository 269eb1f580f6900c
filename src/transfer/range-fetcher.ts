import {MsrError, isMsrError} from '../errors.js'
import type {FileRecord} from '../journal/schema.js'
import type {BlockAssembler} from './block-assembler.js'
import {judgeReply, rangeHeader, strongEtag} from './content-range.js'
import type {TransferOptions} from './transfer-options.js'
import {openBody} from './http-body.js'
import {abortError, sleep} from './rate-limiter.js'
import {nextDelayMs} from './retry-policy.js'
import {readSegmentBody} from './segment-reader.js'
import type {Segment} from './segment-planner.js'

export interface RangeFetcherOptions extends Pick<TransferOptions, 'hub' | 'modelId' | 'revision' | 'emit' | 'policy' | 'limiter' | 'idleTimeoutMs' | 'minBytesPerSec' | 'listingUnchanged' | 'giveUpNow'> {
  record: FileRecord
  /** The download's signal: aborted on Ctrl-C and when another connection failed for good. */
  signal: AbortSignal
  /** A reply's head arrived. */
  onHead(): void
  /** New body bytes kept. */
  onBytes(bytes: number): void
  /** Hands the assembler's whole chunks over; a promise when the caller must wait for room. */
  handOver(asm: BlockAssembler): Promise<void> | undefined
  /** Whole blocks are waiting behind a disk error. */
  failed(): boolean
}

/**
 * Ranged requests for one file's segments, with the retry rule of the whole file: a retry that
 * brought any byte is progress and goes again at once; only attempts that brought nothing count
 * against the budget and back off.
 */
export class RangeFetcher {
  private failuresWithoutProgress = 0
  /** Where the hub last redirected this file's download (a signed CDN URL), for the next pieces. */
  private resolvedUrl: string | undefined

  constructor(private readonly o: RangeFetcherOptions) {}

  /** Fills `seg` through `asm` from its next byte to its end. */
  async fetch(seg: Segment, asm: BlockAssembler): Promise<void> {
    const {o} = this
    let retrying = false
    while (seg.next < seg.end) {
      if (o.signal.aborted) throw abortError(o.signal)
      const before = asm.position
      const attempt = {replied: false}
      try {
        await this.request(seg, asm, retrying, attempt)
        retrying = false
      } catch (error) {
        retrying = true
        if (o.signal.aborted) throw abortError(o.signal)
        if (!isMsrError(error) || !error.retryable) throw error
        // Every byte that arrived is kept (the transport delivers in order; the SHA-256 decides):
        // the next request starts after it. A link that drops every 64 KB still finishes, without
        // sending a byte twice.
        const progressed = asm.position > before || seg.next >= seg.end
        if (progressed) this.failuresWithoutProgress = 0
        this.failuresWithoutProgress++
        if (!attempt.replied && o.giveUpNow?.(error, this.failuresWithoutProgress)) throw error
        if (this.failuresWithoutProgress > o.policy.maxRetries) {
          // The last failure's code (E_PROTOCOL, E_TIMEOUT, ...): a misbehaving server is not a bad network.
          throw new MsrError(error.code, `Gave up on ${o.record.path} after ${o.policy.maxRetries} retries without progress: ${error.message}`, {
            path: o.record.path, cause: error, hint: 'Run the same command again; it resumes from the last checkpoint.',
          })
        }
        const delayMs = progressed && error.retryAfterMs === undefined ? 0 : nextDelayMs(this.failuresWithoutProgress, o.policy, error.retryAfterMs)
        o.emit({type: 'retry', path: o.record.path, attempt: this.failuresWithoutProgress, maxRetries: o.policy.maxRetries, delayMs, reason: error.message, code: error.code})
        if (delayMs > 0) await sleep(delayMs, o.signal)
      }
    }
  }

  /** One ranged request for the rest of `seg`, from the exact next byte it needs. */
  private async request(seg: Segment, asm: BlockAssembler, retrying: boolean, attempt: {replied: boolean}): Promise<void> {
    const {o} = this
    const {record} = o
    const hubUrl = o.hub.fileUrl(o.modelId, o.revision, record.path)
    // New pieces go straight to where the hub redirected the last request (one round trip per
    // piece, not two); a retry asks the hub again (the signed URL may have expired, or moved).
    const resolved = retrying ? undefined : this.resolvedUrl
    const start = asm.position
    const request = new AbortController()
    const onAbort = () => request.abort(o.signal.reason)
    o.signal.addEventListener('abort', onAbort, {once: true})
    try {
      // No If-Range: mirrors and CDNs give one file different ETags; the listing's size and the
      // final SHA-256 decide, and a stale validator would turn every resume into a full 200.
      const res = await openBody({
        url: resolved ?? hubUrl,
        resolvedUrl: resolved !== undefined,
        headers: {Range: rangeHeader(start, asm.endBytes), 'Accept-Encoding': 'identity'},
        headersFor: (url) => o.hub.headersFor(url),
        signal: request.signal,
        headersTimeoutMs: o.idleTimeoutMs,
        maxRetryAfterMs: o.policy.maxRetryAfterMs,
      })
      attempt.replied = true
      o.onHead()
      const verdict = judgeReply(res, start, record.size)
      if (!verdict.ok) {
        res.body.destroy()
        if (verdict.reason === 'changed') throw new MsrError('E_REMOTE_CHANGED', `${record.path} changed on the hub: ${verdict.message}.`, {path: record.path})
        throw new MsrError('E_PROTOCOL', `Bad reply for ${record.path}: ${verdict.message}.`, {path: record.path, retryable: true})
      }
      this.resolvedUrl = res.url.href === hubUrl ? undefined : res.url.href
      const etag = strongEtag(res.headers.etag)
      if (etag && record.etag && etag !== record.etag && o.listingUnchanged && !(await o.listingUnchanged())) {
        res.body.destroy()
        throw new MsrError('E_REMOTE_CHANGED', `${record.path} changed on the hub: the listing no longer gives the sha256 and size this partial was started with.`, {path: record.path})
      }
      if (etag) record.etag = etag
      await readSegmentBody(res.body, {
        path: record.path, seg, asm, skipBytes: verdict.skipBytes,
        idleTimeoutMs: o.idleTimeoutMs, minBytesPerSec: o.minBytesPerSec, limiter: o.limiter, signal: o.signal,
        onBytes: (bytes) => {
          this.failuresWithoutProgress = 0
          o.onBytes(bytes)
        },
        handOver: o.handOver,
        failed: o.failed,
      })
    } finally {
      o.signal.removeEventListener('abort', onAbort)
      request.abort()
    }
  }
}
