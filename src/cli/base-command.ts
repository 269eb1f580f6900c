import {Command} from '@oclif/core/command'
import * as Flags from '@oclif/core/flags'

import {ExitCode, MsrError, isMsrError} from '../errors.js'
import {renderError, toMsrError, wasReported} from '../ui/errors.js'
import {usageErrorFrom} from './usage-error.js'

/**
 * Every command: errors become one line plus a hint and their documented exit code; the stack
 * only with DEBUG=ms-resume* or --verbose. Ctrl-C aborts `this.signal`; the library checkpoints.
 */
export abstract class BaseCommand extends Command {
  static override baseFlags = {
    json: Flags.boolean({description: 'Machine output on stdout, one JSON object per line (schema: docs/json-output.md). pull: its events, the summary last; status, clean: one report; serve: its access log.', default: false}),
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
    let failure: unknown = error
    if (!isMsrError(error)) {
      const usage = usageErrorFrom(error, this.id, this.config.bin)
      // oclif's own exits (help, version) keep their behaviour; its parse errors become E_USAGE.
      if (usage) failure = usage
      else if (error?.oclif?.exit !== undefined || error?.constructor?.name === 'ExitError') throw error
      else if ((error as {code?: string}).code === 'EPIPE') this.exit(0)
    }
    const msr = toMsrError(failure)
    const debug = this.verboseMode || /(^|,)\s*ms-resume/.test(process.env.DEBUG ?? '')
    renderError(msr, {json: this.jsonMode, debug, jsonPrinted: wasReported(error)})
    this.exit(msr.exitCode)
  }
}
