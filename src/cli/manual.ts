import {ErrorCodes, ExitCode} from '../errors.js'

/** Sections `ms-resume --help` adds after the command list, so the root help reads like a manual. */
export const ENVIRONMENT: Array<[string, string]> = [
  ['MODELSCOPE_CACHE', 'The ModelScope cache root (default ~/.cache/modelscope/hub); models go to models/<owner>/<name>.'],
  ['MODELSCOPE_API_TOKEN', 'Access token, as --token.'],
  ['MODELSCOPE_ENDPOINT', 'Hub base URL, as one --endpoint (replaced by --endpoint given on the command line); MODELSCOPE_DOMAIN gives just a host (https is implied).'],
  ['MODELSCOPE_ENABLE_DEFAULT_HASH_VALIDATION', 'true: re-hash complete files in full on every pull (pull --check full).'],
  ['HTTPS_PROXY, HTTP_PROXY', 'Proxy for hub and download connections.'],
  ['DEBUG=ms-resume*', 'Stack traces with errors, as --verbose.'],
  ['CI', 'Set: plain lines instead of the live progress view, even on a terminal.'],
]

const EXIT_MEANINGS: Record<number, string> = {
  [ExitCode.OK]: 'Success.',
  [ExitCode.USAGE]: 'Usage: a bad flag, argument or model id.',
  [ExitCode.NETWORK]: 'Network: gave up after retries, on every endpoint named (run again to resume).',
  [ExitCode.INTEGRITY]: 'Integrity: a file does not match its SHA-256 or size.',
  [ExitCode.REMOTE]: 'Remote: not found, access refused, or the hub changed.',
  [ExitCode.LOCAL]: 'Local: disk full, permissions, journal, or the model is locked by another run.',
  [ExitCode.INTERRUPTED]: 'Interrupted (Ctrl-C); progress was saved.',
}

export function exitCodeRows(): Array<[string, string]> {
  return Object.values(ExitCode).map((code) => {
    const codes = Object.entries(ErrorCodes).filter(([, exit]) => exit === code).map(([name]) => name)
    return [String(code), `${EXIT_MEANINGS[code]}${codes.length > 0 ? ` (${codes.join(', ')})` : ''}`]
  })
}

export const FILES: Array<[string, string]> = [
  ['<model dir>/<path>', 'The model\'s files, each verified before it appears.'],
  ['<model dir>/.ms-resume/', 'ms-resume\'s state: journal-v1.json, manifest-v1.json, partial-v1/ (downloads in progress), quarantine/ (downloads that failed their hash), lock.'],
  ['<model dir>/.msc .mdl .mv', 'The official client\'s index, so `snapshot_download` finds the model without downloading it again.'],
]

export const SEE_ALSO = 'docs/errors.md (every error code and what to do), docs/json-output.md (the --json schema).'
