/**
 * Every failure a user can meet is an MsrError: a stable `code` (tests assert it), the exit code
 * the CLI returns, and a `hint` that tells the person at the terminal what to do next.
 */
export const ExitCode = {
  OK: 0,
  USAGE: 2,
  NETWORK: 3,
  INTEGRITY: 4,
  REMOTE: 5,
  LOCAL: 6,
  INTERRUPTED: 130,
} as const
export type ExitCodeValue = (typeof ExitCode)[keyof typeof ExitCode]

/** Stable error codes, each with the exit code it maps to. */
export const ErrorCodes = {
  E_USAGE: ExitCode.USAGE,
  E_NETWORK: ExitCode.NETWORK,
  E_PROTOCOL: ExitCode.NETWORK,
  E_TIMEOUT: ExitCode.NETWORK,
  E_ENDPOINTS: ExitCode.NETWORK,
  E_INTEGRITY: ExitCode.INTEGRITY,
  E_SIZE: ExitCode.INTEGRITY,
  E_DAMAGED: ExitCode.INTEGRITY,
  E_NOT_FOUND: ExitCode.REMOTE,
  E_AUTH: ExitCode.REMOTE,
  E_REMOTE_CHANGED: ExitCode.REMOTE,
  E_MANIFEST_MISMATCH: ExitCode.REMOTE,
  E_UNSAFE_PATH: ExitCode.REMOTE,
  E_REMOTE: ExitCode.REMOTE,
  E_DISK_FULL: ExitCode.LOCAL,
  E_PERMISSION: ExitCode.LOCAL,
  E_JOURNAL: ExitCode.LOCAL,
  E_LOCKED: ExitCode.LOCAL,
  E_LOCAL: ExitCode.LOCAL,
  E_INTERRUPTED: ExitCode.INTERRUPTED,
} as const
export type ErrorCode = keyof typeof ErrorCodes

export interface MsrErrorDetails {
  /** Repo-relative path of the file concerned, when there is one. */
  path?: string
  expected?: string | number
  found?: string | number
  /** The next step for the user, one short sentence. */
  hint?: string
  cause?: unknown
  /** Whether a retry of the same request may succeed. */
  retryable?: boolean
  /** Server-requested wait (Retry-After), in milliseconds. */
  retryAfterMs?: number
}

export class MsrError extends Error {
  readonly code: ErrorCode
  readonly exitCode: ExitCodeValue
  readonly path?: string
  readonly expected?: string | number
  readonly found?: string | number
  readonly hint?: string
  readonly retryable: boolean
  readonly retryAfterMs?: number

  constructor(code: ErrorCode, message: string, details: MsrErrorDetails = {}) {
    super(message, details.cause === undefined ? undefined : {cause: details.cause})
    this.name = 'MsrError'
    this.code = code
    this.exitCode = ErrorCodes[code]
    this.path = details.path
    this.expected = details.expected
    this.found = details.found
    this.hint = details.hint
    this.retryable = details.retryable ?? false
    this.retryAfterMs = details.retryAfterMs
  }
}

export function isMsrError(error: unknown): error is MsrError {
  return error instanceof MsrError
}
