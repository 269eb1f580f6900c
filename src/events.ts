/**
 * What a pull tells the outside world. The library emits these; src/ui renders them (TTY, plain
 * lines, or NDJSON with --json, where this shape is the documented schema). Nothing below ui imports ui.
 */
/** The pull left endpoint `from` for `to` (`--endpoint` repeated): `from` failed with `code` while serving `path` ('' = the listing). */
export interface EndpointFailover {
  from: string
  to: string
  code: string
  reason: string
  path: string
}

export type PullEvent =
  | {type: 'listing'; modelId: string; revision: string; endpoint: string}
  | {type: 'start'; modelId: string; revision: string; endpoint: string; modelDir: string; files: number; totalBytes: number; toDownloadBytes: number}
  | {type: 'waiting-lock'; holder: string}
  | {type: 'recovered-journal'; reason: string; movedTo: string}
  | {type: 'file-start'; path: string; size: number; offsetBytes: number}
  | {type: 'resume'; path: string; offsetBytes: number; size: number}
  | {type: 'rehash'; path: string; bytes: number; reason: string}
  | {type: 'progress'; path: string; bytesDone: number; size: number; receivedBytes: number}
  | {type: 'retry'; path: string; attempt: number; maxRetries: number; delayMs: number; reason: string; code: string}
  | {type: 'integrity-retry'; path: string; expected: string; found: string; attempt: number}
  | {type: 'remote-changed'; path: string; reason: string}
  | {type: 'file-done'; path: string; size: number; downloadedBytes: number; reused: boolean; sha256: string; repaired?: boolean}
  | {type: 'file-error'; path: string; code: string; message: string}
  | {type: 'warning'; message: string; path?: string}
  | ({type: 'failover'} & EndpointFailover)

export type EventSink = (event: PullEvent) => void

export const noopSink: EventSink = () => {}
