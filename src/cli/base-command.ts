import {Command, Flags} from '@oclif/core'

import {ExitCode, MsrError, isMsrError} from '../errors.js'
import {renderError} from '../ui/errors.js'

/**
 * Every command: errors become one line plus a hint and their documented exit code; the stack
 * only with DEBUG=ms-resume* or --verbose. Ctrl-C aborts `this.signal`; the library checkpoints.
 */
export abstract class BaseCommand extends Command {
  static override baseFlags = {
    json: Flags.boolean({description: 'Machine output: newline-delimited JSON events on stdout (schema in the README); the last line is the summary.', default: false}),
    quiet: Flags.boolean({char: 'q', description: 'Print errors only.', default: false}),
    verbose: Flags.boolean({description: 'Show stack traces of errors (same as DEBUG=ms-resume*).', default: false, hidden: false}),
  }

  static override enableJsonFlag = false

  protected readonly controller = new AbortController()
  private interrupts = 0
  private jsonMode = false
  private verboseMode = false

  protected get signal(): AbortSignal {
    return this.controller.signal
  }

  override async init(): Promise<void> {
    this.jsonMode = this.argv.includes('--json')
    this.verboseMode = this.argv.includes('--verbose')
    await super.init()
    const onSignal = (name: NodeJS.Signals) => {
      this.interrupts++
      // A second Ctrl-C means "now": the checkpoint of the first one may be stuck on a dead disk.
      if (this.interrupts > 1) process.exit(ExitCode.INTERRUPTED)
      this.controller.abort(new MsrError('E_INTERRUPTED', `Interrupted (${name}); progress was saved.`, {hint: 'Run the same command again to resume.'}))
    }
    process.on('SIGINT', onSignal)
    process.on('SIGTERM', onSignal)
  }

  protected override async catch(error: Error & {exitCode?: number; oclif?: {exit?: number}}): Promise<unknown> {
    // oclif's own exits (help, version, parse errors) keep their behaviour.
    if (!isMsrError(error)) {
      if (error?.oclif?.exit !== undefined || error?.constructor?.name === 'ExitError') throw error
      if ((error as {code?: string}).code === 'EPIPE') this.exit(0)
    }
    const msr = isMsrError(error) ? error : new MsrError('E_LOCAL', `Unexpected error: ${error?.message ?? String(error)}`, {cause: error, hint: 'Run again with --verbose and report the output.'})
    const debug = this.verboseMode || /(^|,)\s*ms-resume/.test(process.env.DEBUG ?? '')
    renderError(msr, {json: this.jsonMode, debug})
    this.exit(msr.exitCode)
  }
}
