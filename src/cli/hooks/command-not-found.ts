import {type Hook, loadHelpClass} from '@oclif/core'

import {MsrError} from '../../errors.js'
import {renderError} from '../../ui/errors.js'

/** `ms-resume bogus`: one line, the commands there are, exit 2 (oclif's default has no hint); and `ms-resume help [COMMAND]`. */
const hook: Hook<'command_not_found'> = async function (opts) {
  // `ms-resume help [COMMAND]`, as people type it, without the help plugin.
  if (opts.id === 'help' || opts.id.startsWith('help:')) {
    const Help = await loadHelpClass(opts.config)
    const topic = [...opts.id.split(':').slice(1), ...(opts.argv ?? [])]
    if (topic.length === 0 || opts.config.findCommand(topic.join(':'))) {
      await new Help(opts.config).showHelp(topic)
      return
    }
    return unknown.call(this, opts, topic.join(' '))
  }
  return unknown.call(this, opts, opts.id.split(':')[0])
}

function unknown(this: Hook.Context, opts: Parameters<Hook<'command_not_found'>>[0], id: string): void {
  const commands = opts.config.commands.filter((c) => !c.hidden).map((c) => c.id).sort()
  const error = new MsrError('E_USAGE', `Unknown command "${id}".`, {hint: `Commands: ${commands.join(', ')}. See ${opts.config.bin} --help.`})
  renderError(error, {json: (opts.argv ?? []).includes('--json'), debug: false})
  this.exit(error.exitCode)
}

export default hook
