import {setMaxListeners} from 'node:events'

import {MsrError, isMsrError} from '../errors.js'
import type {PullEvent} from '../events.js'
import {type PullSummary, pull} from '../pull/pull.js'
import type {RetryPolicy} from '../transfer/retry-policy.js'
import type {Catalog} from './catalog.js'
import type {Upstream} from './upstream.js'

export interface PullThroughEvent {
  type: 'pull-through'
  phase: 'start' | 'done' | 'failed'
  modelId: string
  revision: string
  paths: string[]
  downloadedBytes?: number
  code?: string
  message?: string
  elapsedMs?: number
}

interface Waiter {
  promise: Promise<void>
  resolve: () => void
  reject: (error: unknown) => void
}

interface ModelQueue {
  revision: string
  running?: Promise<void>
  /** Files asked for while a pull of this model runs: the next pull takes them all. */
  pending: Map<string, Waiter>
}

/**
 * Files missing from the cache are pulled from upstream by `pull()` itself, into the same place
 * `pull` would put them: journaled, verified, resumable, the model lock held. Every file has at
 * most one download: requests for a file already on its way wait for that download (the map of
 * in-flight promises), and files of one model asked for during a pull go together into the next
 * pull of that model (pull() holds the model lock; a second pull would only wait for it).
 *
 * Waiting clients get no bytes until the file is verified at its final path: then they are
 * served from the cache like any other file. A client that gives up waiting does not cancel the
 * download; its retry finds the file there, or joins the same download.
 */
export class PullThrough {
  private readonly inflight = new Map<string, Promise<void>>()
  private readonly queues = new Map<string, ModelQueue>()

  constructor(
    private readonly upstream: Upstream,
    private readonly catalog: Catalog,
    private readonly opts: {signal: AbortSignal; policy: RetryPolicy; idleTimeoutMs: number; emit: (e: PullThroughEvent) => void},
  ) {
    setMaxListeners(0, opts.signal)
  }

  /** Resolves once `filePath` of `modelId` is verified in the cache; rejects with the pull's error. */
  fetch(modelId: string, revision: string, filePath: string): Promise<void> {
    const key = `${this.catalog.locate(modelId).modelDir}\u0000${filePath}`
    const shared = this.inflight.get(key)
    if (shared) return shared
    if (this.opts.signal.aborted) return Promise.reject(interrupted())
    let queue = this.queues.get(modelId)
    if (!queue) {
      queue = {revision, pending: new Map()}
      this.queues.set(modelId, queue)
    } else if (queue.revision !== revision) {
      // Two revisions pulled into one model directory at once would overwrite each other's files.
      return Promise.reject(new MsrError('E_LOCKED', `${modelId} is being pulled at revision ${queue.revision}; try again when it is done.`, {retryable: true}))
    }
    const waiter = deferred()
    queue.pending.set(filePath, waiter)
    this.inflight.set(key, waiter.promise)
    waiter.promise.catch(() => {}).finally(() => this.inflight.delete(key))
    this.schedule(modelId, queue)
    return waiter.promise
  }

  /** Resolves when no pull runs any more (after the signal is aborted: once they checkpointed). */
  async settled(): Promise<void> {
    for (;;) {
      const running = [...this.queues.values()].map((q) => q.running).filter((p): p is Promise<void> => p !== undefined)
      if (running.length === 0) return
      await Promise.allSettled(running)
    }
  }

  private schedule(modelId: string, queue: ModelQueue): void {
    if (queue.running) return
    queue.running = (async () => {
      while (queue.pending.size > 0) {
        const batch = new Map(queue.pending)
        queue.pending.clear()
        await this.pullBatch(modelId, queue.revision, batch)
      }
    })().finally(() => {
      queue.running = undefined
      if (queue.pending.size > 0) this.schedule(modelId, queue)
      else this.queues.delete(modelId)
    })
  }

  private async pullBatch(modelId: string, revision: string, batch: Map<string, Waiter>): Promise<void> {
    const paths = [...batch.keys()]
    const started = performance.now()
    this.opts.emit({type: 'pull-through', phase: 'start', modelId, revision, paths})
    if (this.opts.signal.aborted) {
      for (const w of batch.values()) w.reject(interrupted())
      return
    }
    let summary: PullSummary | undefined
    let failure: unknown
    try {
      summary = await pull({
        hub: this.upstream.hub, modelId, revision, location: this.catalog.locate(modelId),
        include: paths.map(exactGlob),
        check: 'size',
        concurrency: Math.min(8, paths.length),
        connections: 0,
        idleTimeoutMs: this.opts.idleTimeoutMs,
        policy: this.opts.policy,
        emit: (_e: PullEvent) => {},
        signal: this.opts.signal,
      })
    } catch (error) {
      failure = error
      summary = (error as {summary?: PullSummary}).summary
    }
    const perFile = new Map((summary?.errors ?? []).map((e) => [e.path, e]))
    const snapshot = await this.catalog.model(modelId).catch(() => undefined)
    for (const [p, w] of batch) {
      if (snapshot?.files.has(p)) w.resolve()
      else if (perFile.has(p)) w.reject(new MsrError(perFile.get(p)!.code as MsrError['code'], perFile.get(p)!.message, {path: p}))
      else if (failure) w.reject(failure)
      else w.reject(new MsrError('E_NOT_FOUND', `${p} is not a file of ${modelId} (revision ${revision}) upstream.`, {path: p}))
    }
    const elapsedMs = Math.round(performance.now() - started)
    if (failure) {
      const e = isMsrError(failure) ? failure : undefined
      this.opts.emit({type: 'pull-through', phase: 'failed', modelId, revision, paths, code: e?.code ?? 'E_LOCAL', message: (failure as Error).message, downloadedBytes: summary?.downloadedBytes, elapsedMs})
    } else {
      this.opts.emit({type: 'pull-through', phase: 'done', modelId, revision, paths, downloadedBytes: summary?.downloadedBytes ?? 0, elapsedMs})
    }
  }
}

/** A glob (pull's --include syntax, fnmatch) that matches exactly this path and nothing else. */
export function exactGlob(repoPath: string): string {
  // A trailing '/' would mean "everything below" (the official client's rule).
  return repoPath.replace(/[[*?]|\/$/g, (c) => `[${c}]`)
}

function deferred(): Waiter {
  let resolve!: () => void
  let reject!: (error: unknown) => void
  const promise = new Promise<void>((res, rej) => {
    resolve = res
    reject = rej
  })
  return {promise, resolve, reject}
}

function interrupted(): MsrError {
  return new MsrError('E_INTERRUPTED', 'The mirror is shutting down.', {retryable: true})
}
