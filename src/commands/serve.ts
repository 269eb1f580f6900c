import path from 'node:path'

import * as Flags from '@oclif/core/flags'

import {BaseCommand} from '../cli/base-command.js'
import {locationFlags, retryPolicyFrom} from '../cli/flags.js'
import {createHub} from '../hub/index.js'
import {isLoopbackHost, readTokenFile} from '../serve/auth.js'
import {Catalog} from '../serve/catalog.js'
import {serveEventText} from '../serve/event-text.js'
import {Mirror, type ServeEvent} from '../serve/server.js'
import {Upstream} from '../serve/upstream.js'
import {defaultCacheRoot} from '../store/layout.js'
import {DEFAULT_RETRY_POLICY} from '../transfer/retry-policy.js'

export default class Serve extends BaseCommand {
  static override summary = 'Serve the verified models and datasets of a cache to other machines, as a ModelScope hub would.'

  static override description = `Answers the part of the ModelScope API that the official clients (1.x and 2.x) and \`ms-resume pull\` use: model info, revisions, file listings and file downloads with Range, If-Range and a strong ETag (the file's SHA-256). Point them at it with MODELSCOPE_ENDPOINT=http://HOST:PORT or --endpoint. Only files ms-resume verified are listed and served; its own state and the official client's index files never are. Datasets pulled with --dataset are served on the dataset routes the official clients use (info, the paged repo/tree listing by owner/name or by Id, file downloads), from the cache only: --upstream does not pull datasets through.

With --upstream URL, a model or file the cache lacks is pulled from that hub by the same engine as \`ms-resume pull\` (journaled, verified, resumable) into the cache, once however many clients ask for it; they get it when it is verified. The cache is found as pull finds it: --cache-dir, else $MODELSCOPE_CACHE or ~/.cache/modelscope/hub.

Listening beyond this machine without --token-file prints a warning; with it, requests without the token (cookie m_session_id or Authorization: Bearer, as the hub takes it) get 401. SIGTERM or Ctrl-C: stop accepting, checkpoint pulls in flight, exit 0. Details, and nginx as a caching proxy in front of it: docs/serve.md.`

  static override examples = [
    {description: 'Serve the ModelScope cache to this machine', command: '<%= config.bin %> serve'},
    {description: 'On the LAN, with a token; clients set MODELSCOPE_ENDPOINT=http://mirror:8090 and MODELSCOPE_API_TOKEN', command: '<%= config.bin %> serve --host 0.0.0.0 --token-file /etc/ms-resume/token'},
    {description: 'A pull-through mirror of modelscope.cn', command: '<%= config.bin %> serve --upstream https://www.modelscope.cn --cache-dir /srv/models'},
    {description: 'NDJSON access log', command: '<%= config.bin %> serve --json | jq -c \'select(.type=="access")\''},
  ]

  static override flags = {
    'cache-dir': locationFlags['cache-dir'],
    host: Flags.string({description: 'Address to listen on (0.0.0.0: every interface).', default: '127.0.0.1'}),
    port: Flags.integer({description: 'Port to listen on (0: any free port, printed at start).', default: 8090, min: 0, max: 65_535}),
    upstream: Flags.string({description: 'Hub to pull missing models and files from (its token: MODELSCOPE_API_TOKEN).', helpValue: 'URL'}),
    'token-file': Flags.string({description: 'Require this token (one line in FILE) from every client.', helpValue: 'FILE'}),
    'max-connections': Flags.integer({description: 'Connections served at once; more are refused.', default: 128, min: 1, max: 65_535}),
    timeout: Flags.integer({description: 'Seconds a connection may stay silent (a client that stopped reading) before it is closed.', default: 60, min: 1}),
  }

  async run(): Promise<void> {
    const {flags} = await this.parse(Serve)
    const json = flags.json
    const emit = (e: ServeEvent) => {
      if (json) {
        process.stdout.write(`${JSON.stringify(e.type === 'access' ? e : {...e, time: new Date().toISOString()})}\n`)
        return
      }
      if (e.type === 'warning') process.stderr.write(`ms-resume serve: warning: ${e.message}\n`)
      else if (!flags.quiet) process.stdout.write(`${serveEventText(e)}\n`)
    }
    const token = flags['token-file'] ? await readTokenFile(flags['token-file']) : undefined
    if (!token && !isLoopbackHost(flags.host)) {
      emit({type: 'warning', message: `listening on ${flags.host} without --token-file: anyone who can reach this port can download every model in the cache.`})
    }
    const cacheDir = flags['cache-dir'] ? path.resolve(flags['cache-dir']) : undefined
    const catalog = new Catalog({cacheDir})
    const timeoutMs = flags.timeout * 1000
    const upstream = flags.upstream
      ? new Upstream(createHub({endpoint: flags.upstream, timeoutMs, maxRetryAfterMs: DEFAULT_RETRY_POLICY.maxRetryAfterMs}), timeoutMs)
      : undefined
    const mirror = await Mirror.listen({
      catalog, host: flags.host, port: flags.port, token, upstream,
      maxConnections: flags['max-connections'], idleTimeoutMs: timeoutMs,
      policy: retryPolicyFrom({retries: DEFAULT_RETRY_POLICY.maxRetries}), emit,
    })
    const cacheRoot = cacheDir ?? path.join(defaultCacheRoot(), 'models')
    const models = await catalog.discover(catalog.root('model'), 'model')
    const datasets = await catalog.discover(catalog.root('dataset'), 'dataset')
    emit({type: 'listening', url: mirror.url, cacheRoot, models, datasets, upstream: upstream?.endpoint, auth: token !== undefined})
    const signal = this.signal
    await new Promise<void>((resolve) => {
      if (signal.aborted) resolve()
      else signal.addEventListener('abort', () => resolve(), {once: true})
    })
    await mirror.close((signal.reason as Error)?.message?.match(/\((SIG[A-Z]+)\)/)?.[1] ?? 'signal')
    // Keep-alive sockets to the upstream may hold the event loop for a while; nothing is left to do.
    setTimeout(() => process.exit(0), 1000).unref()
  }
}
