import {MsrError, isMsrError} from '../errors.js'

/** The `error` event of --json output (docs/json-output.md). */
export function errorEvent(error: MsrError): Record<string, unknown> {
  return {type: 'error', code: error.code, exitCode: error.exitCode, message: error.message, path: error.path, expected: error.expected, found: error.found, hint: error.hint, time: new Date().toISOString()}
}

/** Anything thrown becomes an MsrError; what we did not foresee is E_LOCAL with a way to report it. */
export function toMsrError(error: unknown): MsrError {
  if (isMsrError(error)) return error
  const message = (error as Error)?.message ?? String(error)
  return new MsrError('E_LOCAL', `Unexpected error: ${message}`, {cause: error, hint: 'Run again with --verbose and report the output.'})
}

// Errors whose JSON event a reporter already printed (before its summary), so it is not printed twice.
const reported = new WeakSet<object>()

export function markReported(error: unknown): void {
  if (error && typeof error === 'object') reported.add(error)
}

export function wasReported(error: unknown): boolean {
  return Boolean(error && typeof error === 'object' && reported.has(error))
}

/** One line on stderr (or one JSON event on stdout with --json), plus the hint; stack only in debug. */
export function renderError(error: MsrError, opts: {json: boolean; debug: boolean; jsonPrinted?: boolean}): void {
  if (opts.json && !opts.jsonPrinted) process.stdout.write(`${JSON.stringify(errorEvent(error))}\n`)
  if (!opts.json || opts.debug) {
    process.stderr.write(`ms-resume: ${error.message} [${error.code}]\n`)
    if (error.hint) process.stderr.write(`  hint: ${error.hint}\n`)
  }
  if (opts.debug) {
    process.stderr.write(`${error.stack ?? ''}\n`)
    if (error.cause instanceof Error) process.stderr.write(`caused by: ${error.cause.stack ?? error.cause.message}\n`)
  }
}
