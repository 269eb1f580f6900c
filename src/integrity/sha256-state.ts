import type {SavedSha256State} from './sha256-types.js'

/** Shared checks on a SavedSha256State read back from a journal (which may be damaged or foreign). */

/** Whether `value` has the shape of a SavedSha256State with a plausible offset. */
export function isSavedSha256State(value: unknown): value is SavedSha256State {
  if (!value || typeof value !== 'object') return false
  const v = value as Partial<Record<keyof SavedSha256State, unknown>>
  return typeof v.engine === 'string' && v.engine.length > 0 &&
    typeof v.offsetBytes === 'number' && Number.isSafeInteger(v.offsetBytes) && v.offsetBytes >= 0 &&
    typeof v.stateB64 === 'string'
}

/** Base64 decoding that rejects anything Buffer.from would silently skip, truncate or pad. */
export function decodeBase64Strict(text: unknown): Buffer | null {
  if (typeof text !== 'string' || text.length === 0 || text.length % 4 !== 0) return null
  if (!/^[A-Za-z0-9+/]*={0,2}$/.test(text)) return null
  const bytes = Buffer.from(text, 'base64')
  return bytes.toString('base64') === text ? bytes : null
}
