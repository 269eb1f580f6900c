import type {PullEvent} from '../events.js'
import {formatBytes, formatDuration} from '../format.js'

/**
 * The one line a human sees for an event worth a line of its own, or undefined (progress is drawn,
 * not logged). Shared by the plain and the terminal reporters so both tell the same story.
 */
export function eventText(e: PullEvent): string | undefined {
  switch (e.type) {
    case 'listing':
      return `listing ${e.modelId}@${e.revision} on ${e.endpoint}`
    case 'start':
      return `pulling ${e.modelId}@${e.revision}: ${plural(e.files, 'file')}, ${formatBytes(e.totalBytes)} (${formatBytes(e.toDownloadBytes)} to fetch) into ${e.modelDir}`
    case 'waiting-lock':
      return `waiting: another ms-resume (${e.holder}) is pulling this model into the same place`
    case 'recovered-journal':
      return `warning: the journal was unreadable (${e.reason}); kept it as ${e.movedTo} and re-checking files on disk`
    case 'resume':
      return `resumed ${e.path} at ${formatBytes(e.offsetBytes)} of ${formatBytes(e.size)}`
    case 'rehash':
      return `re-hashing ${formatBytes(e.bytes)} of ${e.path} from disk (${e.reason})`
    case 'retry':
      return `retry ${e.attempt}/${e.maxRetries} in ${formatDuration(e.delayMs)}${e.path ? ` (${e.path})` : ''}: ${e.reason}`
    case 'integrity-retry':
      return `integrity: ${e.path} hashed to ${e.found.slice(0, 16)}…, expected ${e.expected.slice(0, 16)}…; discarded that download (mismatch ${e.attempt})`
    case 'remote-changed':
      return `remote changed: ${e.reason}; starting ${e.path} over`
    case 'file-done':
      return `${e.reused ? 'ok   ' : e.repaired ? 'fixed' : 'done '} ${e.path} (${formatBytes(e.size)}${e.reused ? ', already here' : ''})`
    case 'file-error':
      return `failed ${e.path}: ${e.message} [${e.code}]`
    case 'warning':
      return `warning: ${e.message}`
    case 'failover':
      return `failover: ${e.from} failed${e.path ? ` on ${e.path}` : ''} (${e.reason}) [${e.code}]; going on with ${e.to}`
    case 'file-start':
    case 'progress':
      return undefined
  }
}

export function plural(n: number, word: string): string {
  return `${n} ${word}${n === 1 ? '' : 's'}`
}
