import * as Args from '@oclif/core/args'

import {BaseCommand} from '../cli/base-command.js'
import {datasetFlag, locationFlags, repoFrom} from '../cli/flags.js'
import {targetsFrom} from '../cli/model-targets.js'
import {modelStatus} from '../status/model-status.js'
import {statusText} from '../ui/status-text.js'

export default class Status extends BaseCommand {
  static override summary = 'Show what ms-resume knows about models and datasets: complete and partial files, bytes, last error, where.'

  static override description = `Reads the journal ms-resume keeps next to each model. It never takes the lock, so it is safe while a pull runs, and says who holds the lock (host, process, since when, last heartbeat). It writes nothing but, when a model is locked, a probe file for a moment: the filesystem's clock, to tell a live lock from a stale one (without write access the age is left out).

Without a model, every model and dataset with ms-resume state in the ModelScope cache ($MODELSCOPE_CACHE or ~/.cache/modelscope/hub, its models/ and datasets/) is listed, or in --cache-dir DIR. With a model (or --dataset OWNER/NAME; placed by --local-dir / --cache-dir as pull places it), or with just --local-dir DIR, the files that are not complete are listed too.`

  static override examples = [
    {description: 'Every model in the ModelScope cache', command: '<%= config.bin %> status'},
    {description: 'One model, with its unfinished files', command: '<%= config.bin %> status Qwen/Qwen2.5-0.5B-Instruct'},
    {description: 'A model pulled into a folder', command: '<%= config.bin %> status --local-dir ./qwen'},
    {description: 'One dataset', command: '<%= config.bin %> status --dataset OWNER/NAME'},
    {description: 'Models with partial files, for a script', command: '<%= config.bin %> status --json | jq -r \'.models[] | select(.files.partial > 0) | .modelId\''},
  ]

  static override args = {
    model: Args.string({description: 'Model id, <owner>/<name> (default: every model and dataset in the cache).', required: false}),
  }

  static override flags = {...datasetFlag, ...locationFlags}

  async run(): Promise<void> {
    const {args, flags} = await this.parse(Status)
    const repo = repoFrom(args.model, flags.dataset)
    const {models, searched} = await targetsFrom(repo, flags)
    const single = Boolean(repo || flags['local-dir'])
    const statuses = await Promise.all(models.map((m) => modelStatus(m, {withFiles: single})))
    if (flags.json) {
      process.stdout.write(`${JSON.stringify({type: 'status', searched, models: statuses})}\n`)
      return
    }
    if (flags.quiet) return
    process.stdout.write(statusText(statuses, searched).map((l) => `${l}\n`).join(''))
  }
}
