import {formatBytes} from '../format.js'
import type {ServeEvent} from './server.js'

/** One plain line per serve event (without --json), for a person watching the terminal. */
export function serveEventText(e: ServeEvent): string {
  switch (e.type) {
    case 'listening':
      return `Serving ${e.models.length} model${e.models.length === 1 ? '' : 's'}${e.datasets.length ? ` and ${e.datasets.length} dataset${e.datasets.length === 1 ? '' : 's'}` : ''} from ${e.cacheRoot} at ${e.url}${e.upstream ? `, pulling missing files from ${e.upstream}` : ''}${e.auth ? ' (token required)' : ''}. Ctrl-C stops.`
    case 'access':
      return `${e.time} ${e.remote} "${e.method} ${e.url}" ${e.status} ${e.bytes} ${e.ms}ms${e.range ? ` range=${e.range}` : ''}${e.source === 'upstream' ? ' (pulled through)' : ''}${e.complete ? '' : ' (cut off)'}`
    case 'pull-through':
      if (e.phase === 'start') return `pull-through ${e.modelId}@${e.revision}: ${e.paths.join(', ')}`
      if (e.phase === 'done') return `pull-through ${e.modelId}: done, ${formatBytes(e.downloadedBytes ?? 0)} from upstream in ${e.elapsedMs} ms`
      return `pull-through ${e.modelId}: failed [${e.code}] ${e.message}`
    case 'warning':
      return `warning: ${e.message}`
    case 'stopped':
      return `Stopped (${e.reason}).`
  }
}
