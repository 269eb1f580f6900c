import {setMaxListeners} from 'node:events'
import path from 'node:path'

import {MsrError} from '../errors.js'
import type {EventSink} from '../events.js'
import {removeStrayTempFiles} from '../fs/durable-file.js'
import {Journal, type JournalOpenResult} from '../journal/journal.js'
import {type ModelLock, acquireModelLock} from '../journal/lock.js'
import {MANIFEST_FILE, type ModelLocation} from '../store/layout.js'

/**
 * What a writing pull holds while it runs, as one disposable: the model lock, the run's abort
 * signal (the user's Ctrl-C, or the lock lost to another process) and the journal, which writes
 * only while the lock is held. Disposing flushes and closes the journal, then releases the lock.
 */
export class PullSession implements AsyncDisposable {
  private readonly run = new AbortController()
  private readonly onAbort = () => this.run.abort(this.outer.reason)

  private constructor(
    private readonly lock: ModelLock,
    private readonly outer: AbortSignal,
    readonly journal: Journal,
    readonly recovered: JournalOpenResult['recovered'],
  ) {
    // Every file in flight and every connection listens to it: more than Node's default of 10 is normal.
    setMaxListeners(0, this.run.signal)
    outer.addEventListener('abort', this.onAbort, {once: true})
    lock.lost.addEventListener('abort', () => this.run.abort(new MsrError('E_LOCKED', 'Lost the model lock to another process.', {hint: 'Make sure only one ms-resume pulls this model into this place, then run again.'})), {once: true})
    if (outer.aborted) this.onAbort()
  }

  static async open(location: ModelLocation, init: Parameters<typeof Journal.open>[1], o: {signal: AbortSignal; lockWaitMs: number; emit: EventSink}): Promise<PullSession> {
    const lock = await acquireModelLock(location.stateDir, {
      waitMs: o.lockWaitMs,
      signal: o.signal,
      onWait: (holder) => o.emit({type: 'waiting-lock', holder}),
    })
    try {
      const opened = await Journal.open(location.stateDir, init, {beforeWrite: () => lock.assertHeld()})
      // A pull killed inside the manifest write leaves `.manifest-v1.json.<pid>.<rand>.tmp` behind,
      // and Journal.open sweeps only its own temp files (a live writer's temp is left alone).
      await removeStrayTempFiles(path.join(location.stateDir, MANIFEST_FILE))
      return new PullSession(lock, o.signal, opened.journal, opened.recovered)
    } catch (error) {
      await lock.release()
      throw error
    }
  }

  /** Aborted on Ctrl-C, when the lock is lost, or by abort(). */
  get signal(): AbortSignal {
    return this.run.signal
  }

  /** Stops every file in flight (a failure that dooms them all: auth, disk full). */
  abort(reason: unknown): void {
    this.run.abort(reason)
  }

  /** Whatever failed after the lock was lost (a partial the new holder moved, ...) failed because of it. */
  explain(error: unknown): unknown {
    return this.lock.lost.aborted ? this.lock.lost.reason : error
  }

  async [Symbol.asyncDispose](): Promise<void> {
    this.outer.removeEventListener('abort', this.onAbort)
    await this.journal.close().catch(() => {})
    await this.lock.release()
  }
}
