import * as Args from '@oclif/core/args'
import * as Flags from '@oclif/core/flags'

import {BaseCommand} from '../cli/base-command.js'
import {datasetFlag, locationFlags, repoFrom} from '../cli/flags.js'
import {targetsFrom} from '../cli/model-targets.js'
import {type CleanResult, cleanModel} from '../clean/clean.js'
import {type MsrError, isMsrError} from '../errors.js'
import {cleanText} from '../ui/clean-text.js'

export default class Clean extends BaseCommand {
  static override summary = 'Remove what interrupted pulls left behind: partial and quarantined downloads, temp files.'

  static override description = `Removes, for a model: partial downloads (.ms-resume/partial-v1/), downloads that failed their SHA-256 (.ms-resume/quarantine/), stray temp files, backups of unreadable journals, and the journal entries of files that are not complete (the next pull starts those files afresh). It never removes a verified file at its final path or a complete journal entry.

Takes the model's lock: while a pull of the model runs, clean exits at once with code 6 [E_LOCKED]. Without a model it cleans every model and dataset with ms-resume state in the ModelScope cache, or in --cache-dir DIR (a model in use is skipped, and the exit code is 6); --dataset OWNER/NAME names a dataset.`

  static override examples = [
    {description: 'See what would be removed, remove nothing', command: '<%= config.bin %> clean Qwen/Qwen2.5-7B --dry-run'},
    {description: 'Clean one model', command: '<%= config.bin %> clean Qwen/Qwen2.5-7B'},
    {description: 'Clean a model pulled into a folder', command: '<%= config.bin %> clean --local-dir ./qwen'},
    {description: 'Clean every model in the cache', command: '<%= config.bin %> clean'},
    {description: 'Clean one dataset', command: '<%= config.bin %> clean --dataset OWNER/NAME'},
  ]

  static override args = {
    model: Args.string({description: 'Model id, <owner>/<name> (default: every model and dataset in the cache).', required: false}),
  }

  static override flags = {
    ...datasetFlag,
    ...locationFlags,
    'dry-run': Flags.boolean({description: 'List what would be removed; delete nothing.', default: false}),
  }

  async run(): Promise<void> {
    const {args, flags} = await this.parse(Clean)
    const {models, searched} = await targetsFrom(repoFrom(args.model, flags.dataset), flags)
    const results: CleanResult[] = []
    let locked: MsrError | undefined
    for (const dirs of models) {
      try {
        results.push(await cleanModel(dirs, {dryRun: flags['dry-run']}))
      } catch (error) {
        // One model in use must not keep the others dirty; it still decides the exit code.
        if (!isMsrError(error) || error.code !== 'E_LOCKED' || models.length === 1) throw error
        locked ??= error
      }
    }
    const freedBytes = results.reduce((n, r) => n + r.freedBytes, 0)
    if (flags.json) process.stdout.write(`${JSON.stringify({type: 'clean', dryRun: flags['dry-run'], searched, models: results, freedBytes})}\n`)
    else if (!flags.quiet) process.stdout.write(cleanText(results, searched, flags['dry-run']).map((l) => `${l}\n`).join(''))
    if (locked) throw locked
  }
}
