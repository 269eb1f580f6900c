import * as Errors from '@oclif/core/errors'

import {MsrError} from '../errors.js'

/**
 * oclif's parse errors (unknown flag, bad option value, missing value, extra argument) as our E_USAGE: one line,
 * exit 2, a pointer to the command's help, instead of oclif's full usage dump. Undefined for
 * anything that is not a parse error.
 */
export function usageErrorFrom(error: unknown, commandId: string | undefined, bin: string): MsrError | undefined {
  // Our commands throw MsrErrors only: a CLIError that is not an exit comes from oclif's parser.
  if (!(error instanceof Errors.CLIError) || error instanceof Errors.ExitError) return undefined
  const message = error.message
    .split('\n')
    .map((line) => line.trim())
    .filter((line) => line && !/^See more help with --help$/.test(line))
    .join(': ')
    .replace(/\s*:\s*:/g, ':')
  const help = `${bin}${commandId ? ` ${commandId}` : ''} --help`
  return new MsrError('E_USAGE', message.endsWith('.') ? message : `${message}.`, {cause: error, hint: `See ${help} for the flags and examples.`})
}
