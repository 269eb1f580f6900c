import path from 'node:path'

import {MsrError} from '../errors.js'
import {RESERVED_TOP_LEVEL, STATE_DIR_NAME} from './layout.js'

/**
 * Repo paths come from the hub: untrusted. A hostile or broken listing must not make us write
 * outside the model directory, so every name is checked before anything is written, and again
 * after resolving (containment), which also catches what the first check did not think of.
 */
// eslint-disable-next-line no-control-regex
const CONTROL_CHARS = /[\u0000-\u001f\u007f]/

export function unsafeReason(repoPath: string): string | undefined {
  if (typeof repoPath !== 'string' || repoPath.length === 0) return 'empty path'
  if (CONTROL_CHARS.test(repoPath)) return 'control character in path'
  if (repoPath.includes('\\')) return 'backslash in path'
  if (repoPath.startsWith('/')) return 'absolute path'
  if (/^[A-Za-z]:/.test(repoPath)) return 'drive-letter path'
  if (repoPath.length > 4096) return 'path too long'
  for (const segment of repoPath.split('/')) {
    if (segment === '') return 'empty path segment'
    if (segment === '.' || segment === '..') return `"${segment}" path segment`
    // A UTF-16 unit is at most 3 bytes of UTF-8: only a segment over 85 units can be too long.
    if (segment.length > 85 && Buffer.byteLength(segment) > 255) return 'path segment longer than 255 bytes'
  }
  return undefined
}

/**
 * Why a (safe) repo path may not be written from the hub: its first segment is ms-resume's state
 * directory or the Python client's index (`.msc`, `.mdl`, `.mv`, `.lock`), in any case and with
 * the trailing dots or spaces Windows drops: a hub file there would overwrite the journal or the index.
 */
export function reservedReason(repoPath: string): string | undefined {
  // Every reserved name starts with a dot, and nothing before it turns into one (NFC keeps a
  // first character that is not a combining mark; lower-casing never makes a dot).
  if (!repoPath.startsWith('.') && !/^\p{M}/u.test(repoPath)) return undefined
  const first = repoPath.split('/')[0].normalize('NFC').toLowerCase().replace(/[. ]+$/, '')
  if (!RESERVED_TOP_LEVEL.has(first)) return undefined
  return first === STATE_DIR_NAME ? "ms-resume's own state directory" : "the ModelScope client's own index"
}

export function assertSafeRepoPath(repoPath: string): void {
  const reason = unsafeReason(repoPath)
  if (reason) {
    throw new MsrError('E_UNSAFE_PATH', `Refusing unsafe file name from the hub: ${JSON.stringify(repoPath)} (${reason}).`, {
      path: repoPath,
      hint: 'Nothing was written. The repository lists a file name that could escape the target directory; report it to the model owner.',
    })
  }
  const reserved = reservedReason(repoPath)
  if (reserved) {
    throw new MsrError('E_UNSAFE_PATH', `Refusing file name from the hub: ${JSON.stringify(repoPath)} would overwrite ${reserved}.`, {
      path: repoPath,
      hint: `Nothing was written. Leave it out with --exclude ${JSON.stringify(repoPath)}, and report the repository to the model owner.`,
    })
  }
}

/** `root` made absolute; the last one asked for is kept (a pull asks for the same one per file). */
export function absoluteRoot(root: string): string {
  if (root !== lastRoot?.root) lastRoot = {root, abs: path.resolve(root)}
  return lastRoot.abs
}

let lastRoot: {root: string; abs: string} | undefined

/** Resolves a checked repo path under root and proves the result is inside root. */
export function resolveInside(root: string, repoPath: string): string {
  assertSafeRepoPath(repoPath)
  const absRoot = absoluteRoot(root)
  const target = path.resolve(absRoot, repoPath)
  if (!target.startsWith(absRoot + path.sep)) {
    throw new MsrError('E_UNSAFE_PATH', `Refusing file name that resolves outside the target directory: ${JSON.stringify(repoPath)}.`, {
      path: repoPath,
      hint: 'Nothing was written. Report the listing to the model owner.',
    })
  }
  return target
}

/**
 * Names that would land on the same file on a case-insensitive filesystem (macOS, Windows, some
 * shares), or a file that is also used as a directory, are refused up front: one would silently
 * overwrite the other.
 */
export function assertNoCollisions(repoPaths: string[]): void {
  const seen = new Map<string, string>()
  const files = new Set(repoPaths.map((p) => p.toLowerCase()))
  for (const p of repoPaths) {
    const key = p.normalize('NFC').toLowerCase()
    const other = seen.get(key)
    if (other !== undefined) {
      throw new MsrError('E_UNSAFE_PATH', `The hub lists two files that collide on a case-insensitive filesystem: ${JSON.stringify(other)} and ${JSON.stringify(p)}.`, {
        path: p,
        hint: 'Use --include/--exclude to pick one of them.',
      })
    }
    seen.set(key, p)
    const parts = key.split('/')
    for (let i = 1; i < parts.length; i++) {
      const dir = parts.slice(0, i).join('/')
      if (files.has(dir)) {
        throw new MsrError('E_UNSAFE_PATH', `The hub lists ${JSON.stringify(dir)} both as a file and as a directory (of ${JSON.stringify(p)}).`, {
          path: p,
          hint: 'Use --include/--exclude to pick one of them.',
        })
      }
    }
  }
}
