import {MsrError, isMsrError} from '../errors.js'

/**
 * The one mapping from Node's filesystem errors to ours. Raw, a disk error reaching the transfer
 * loop looked like a retryable network error: a full disk re-downloaded the same chunk forever.
 */
/** Maps ENOSPC/EDQUOT, ELOOP, EACCES/EPERM/EROFS to our codes; anything else is returned unchanged. */
export function fromFsError(error: unknown, what: string, path?: string): unknown {
  const code = (error as NodeJS.ErrnoException)?.code
  if (code === 'ENOSPC' || code === 'EDQUOT') {
    return new MsrError('E_DISK_FULL', `No space left on the device while ${what}.`, {
      path, cause: error, hint: 'Free some space and run the same command again; it resumes where it stopped.',
    })
  }
  if (code === 'ELOOP') {
    // Opened with O_NOFOLLOW: a symlink stands where ms-resume keeps its own file.
    return new MsrError('E_UNSAFE_PATH', `Refusing to follow a symlink while ${what}${path ? ` (${path})` : ''}.`, {
      path, cause: error, hint: `Nothing was written through it. Remove ${path ?? 'the symlink'} (ms-resume did not make it) and run again.`,
    })
  }
  if (code === 'EACCES' || code === 'EPERM' || code === 'EROFS') {
    return new MsrError('E_PERMISSION', `Permission denied while ${what}${path ? ` (${path})` : ''}.`, {
      path, cause: error, hint: 'Choose a writable location with --local-dir or --cache-dir, or fix the permissions.',
    })
  }
  return error
}

/**
 * Like fromFsError, but always an MsrError: an unmapped errno (EIO, EISDIR ...) becomes E_LOCAL,
 * never retryable, naming what failed.
 */
export function fsFailure(error: unknown, what: string, path?: string): MsrError {
  if (isMsrError(error)) return error
  const mapped = fromFsError(error, what, path)
  if (isMsrError(mapped)) return mapped
  const code = (error as NodeJS.ErrnoException | undefined)?.code
  return new MsrError('E_LOCAL', `Failed ${what}${path ? ` (${path})` : ''}${code ? `: ${code}` : ''}.`, {
    path, cause: error, hint: 'Check the disk, then run the same command again; it resumes from the last checkpoint.',
  })
}
