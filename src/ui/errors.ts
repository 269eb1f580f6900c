import {type MsrError} from '../errors.js'

/** One line on stderr (or one JSON event on stdout with --json), plus the hint; stack only in debug. */
export function renderError(error: MsrError, opts: {json: boolean; debug: boolean}): void {
  if (opts.json) {
    process.stdout.write(`${JSON.stringify({type: 'error', code: error.code, exitCode: error.exitCode, message: error.message, path: error.path, expected: error.expected, found: error.found, hint: error.hint})}\n`)
  }
  if (!opts.json || opts.debug) {
    process.stderr.write(`ms-resume: ${error.message} [${error.code}]\n`)
    if (error.hint) process.stderr.write(`  hint: ${error.hint}\n`)
  }
  if (opts.debug) {
    process.stderr.write(`${error.stack ?? ''}\n`)
    if (error.cause instanceof Error) process.stderr.write(`caused by: ${error.cause.stack ?? error.cause.message}\n`)
  }
}
