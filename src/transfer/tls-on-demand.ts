import {createRequire} from 'node:module'
import type https from 'node:https'
import type tls from 'node:tls'

/**
 * Node's TLS stack (tls, https and what they load: 4.5 ms of a start-up on these machines), loaded
 * by the first https: URL. A pull from an http: endpoint (a LAN mirror, `ms-resume serve`) or one
 * with nothing to fetch over TLS never loads it.
 */
const load = createRequire(import.meta.url)
let tlsModule: typeof tls | undefined
let httpsModule: typeof https | undefined

export function tlsModuleNow(): typeof tls {
  return (tlsModule ??= load('node:tls') as typeof tls)
}

export function httpsModuleNow(): typeof https {
  return (httpsModule ??= load('node:https') as typeof https)
}
