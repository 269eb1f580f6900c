import crypto from 'node:crypto'
import fs from 'node:fs/promises'
import type {IncomingHttpHeaders} from 'node:http'

import {MsrError} from '../errors.js'

/**
 * The mirror's token check, as the hub does it: the cookie `m_session_id=<token>` (1.x clients) or
 * `Authorization: Bearer <token>` (2.x and ms-resume send both). Compared in constant time so the
 * token cannot be guessed byte by byte from response times.
 */
export function presentedTokens(headers: IncomingHttpHeaders): string[] {
  const found: string[] = []
  const cookies = Array.isArray(headers.cookie) ? headers.cookie.join('; ') : headers.cookie ?? ''
  for (const part of cookies.split(';')) {
    const i = part.indexOf('=')
    if (i > 0 && part.slice(0, i).trim() === 'm_session_id') found.push(part.slice(i + 1).trim())
  }
  const bearer = /^\s*Bearer\s+(\S+)\s*$/i.exec(headers.authorization ?? '')
  if (bearer) found.push(bearer[1])
  return found
}

export function isAuthorized(headers: IncomingHttpHeaders, token: string | undefined): boolean {
  if (token === undefined) return true
  const want = crypto.createHash('sha256').update(token).digest()
  return presentedTokens(headers).some((t) => crypto.timingSafeEqual(crypto.createHash('sha256').update(t).digest(), want))
}

/** Reads --token-file: one line, no whitespace inside (it travels in a cookie and a header). */
export async function readTokenFile(file: string): Promise<string> {
  let text: string
  try {
    text = await fs.readFile(file, 'utf8')
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code
    throw new MsrError('E_USAGE', `Cannot read the token file ${file}: ${code ?? (error as Error).message}.`, {hint: 'Give a file that holds the token on one line, e.g. made with `openssl rand -hex 32 > FILE`.'})
  }
  const token = text.trim()
  if (token === '' || /[\s;,"\u0000-\u001f\u007f]/.test(token) || token.length > 4096) {
    throw new MsrError('E_USAGE', `The token file ${file} must hold one token on one line (no spaces, quotes, commas or semicolons).`, {hint: 'For example: openssl rand -hex 32 > FILE'})
  }
  return token
}

/** Whether binding here exposes the mirror beyond this machine. */
export function isLoopbackHost(host: string): boolean {
  const h = host.replace(/^\[|\]$/g, '').toLowerCase()
  return h === 'localhost' || h === '::1' || /^127\.\d{1,3}\.\d{1,3}\.\d{1,3}$/.test(h) || h === '::ffff:127.0.0.1'
}
