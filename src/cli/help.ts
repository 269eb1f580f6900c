import {Help} from '@oclif/core'

import {ENVIRONMENT, FILES, SEE_ALSO, exitCodeRows} from './manual.js'

/** oclif's help, plus manual sections at the end of `ms-resume --help`. */
export default class ManualHelp extends Help {
  protected override async showRootHelp(): Promise<void> {
    await super.showRootHelp()
    this.log(manualSections(this))
  }
}

export function manualSections(help: Pick<Help, 'indent' | 'section' | 'wrap'>): string {
  // Long names (MODELSCOPE_ENABLE_DEFAULT_HASH_VALIDATION) would squeeze a two-column table: stack them.
  const stacked = (rows: Array<[string, string]>) => rows.map(([name, text]) => `${name}\n${help.indent(help.wrap(text, 4), 4)}`).join('\n')
  return [
    help.section('ENVIRONMENT', stacked(ENVIRONMENT)),
    help.section('EXIT CODES', exitCodeRows()),
    help.section('FILES', stacked(FILES)),
    help.section('SEE ALSO', help.wrap(SEE_ALSO)),
  ].join('\n\n') + '\n'
}
