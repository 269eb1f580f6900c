import {MsrError} from '../../errors.js'

export const DEFAULT_ENDPOINT = 'https://www.modelscope.cn'

/** `--endpoint` > MODELSCOPE_ENDPOINT (full URL) > MODELSCOPE_DOMAIN (host; https, as the library does) > default. */
export function resolveEndpoint(flag: string | undefined, env: NodeJS.ProcessEnv = process.env): string {
  let raw: string
  let from: string
  if (flag) {
    raw = flag
    from = '--endpoint'
  } else if (env.MODELSCOPE_ENDPOINT) {
    raw = env.MODELSCOPE_ENDPOINT
    from = 'MODELSCOPE_ENDPOINT'
  } else if (env.MODELSCOPE_DOMAIN) {
    raw = `https://${env.MODELSCOPE_DOMAIN.replace(/^https?:\/\//, '')}`
    from = 'MODELSCOPE_DOMAIN'
  } else {
    return DEFAULT_ENDPOINT
  }
  let url: URL
  try {
    url = new URL(raw)
  } catch {
    throw new MsrError('E_USAGE', `${from} is not a URL: ${JSON.stringify(raw)}.`, {hint: 'Use a full URL such as https://www.modelscope.cn.'})
  }
  if (url.protocol !== 'http:' && url.protocol !== 'https:') {
    throw new MsrError('E_USAGE', `${from} must be an http(s) URL, got ${url.protocol}.`, {hint: 'Use a full URL such as https://www.modelscope.cn.'})
  }
  return url.toString().replace(/\/+$/, '')
}

/**
 * `--endpoint` repeated: those endpoints, in order, once each; they replace MODELSCOPE_ENDPOINT and
 * MODELSCOPE_DOMAIN (an endpoint the user did not name on this command line never gets the token).
 * None given: the single endpoint of resolveEndpoint.
 */
export function resolveEndpoints(flags: string | string[] | undefined, env: NodeJS.ProcessEnv = process.env): string[] {
  const given = (typeof flags === 'string' ? [flags] : flags ?? []).filter((f) => f !== '')
  if (given.length === 0) return [resolveEndpoint(undefined, env)]
  return [...new Set(given.map((f) => resolveEndpoint(f, env)))]
}

export function resolveToken(flag: string | undefined, env: NodeJS.ProcessEnv = process.env): string | undefined {
  const token = flag ?? env.MODELSCOPE_API_TOKEN
  return token && token.trim() !== '' ? token.trim() : undefined
}
