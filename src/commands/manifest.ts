import * as Args from '@oclif/core/args'
import * as Flags from '@oclif/core/flags'

import {BaseCommand} from '../cli/base-command.js'
import {datasetFlag, locationFlags, locationFrom, repoFrom} from '../cli/flags.js'
import {MsrError} from '../errors.js'
import {fromFsError} from '../fs/fs-errors.js'
import {manifestToJson} from '../integrity/manifest.js'
import {writeFileDurable} from '../fs/durable-file.js'
import {repoLabel} from '../store/layout.js'
import {loadModelManifest} from '../verify/manifest-source.js'

export default class Manifest extends BaseCommand {
  static override summary = 'Print the integrity manifest of a pulled model or dataset (commit it to pin it like a lockfile).'

  static override description = `The manifest is a versioned JSON document (schema: manifests/manifest-v1.schema.json) that every completed pull writes next to the model: hub, endpoint, model id, revision and commit, and per file its path, size, SHA-256 and the xxh64 of every chunk (a dataset's manifest also says \`"repoKind": "dataset"\`, and marks \`"sizeOnly": true\` the files the hub listed without a SHA-256: their sha256 is the one of the bytes the pull placed). \`pull --manifest FILE\` pulls exactly those files (and refuses when the hub changed them); \`verify --manifest FILE\` checks a folder against it, offline.`

  static override examples = [
    {description: 'Pin a model', command: '<%= config.bin %> manifest Qwen/Qwen2.5-0.5B-Instruct --out qwen.manifest.json'},
    {description: 'From a local folder', command: '<%= config.bin %> manifest Qwen/Qwen2.5-7B --local-dir ./qwen > qwen.manifest.json'},
    {description: 'Pin a dataset', command: '<%= config.bin %> manifest --dataset OWNER/NAME --out data.manifest.json'},
  ]

  static override args = {
    model: Args.string({description: 'Model id, <owner>/<name> (or --dataset OWNER/NAME).', required: false}),
  }

  static override flags = {
    ...datasetFlag,
    ...locationFlags,
    out: Flags.string({char: 'o', description: 'Write the manifest to FILE instead of stdout.', helpValue: 'FILE'}),
  }

  async run(): Promise<void> {
    const {args, flags} = await this.parse(Manifest)
    // Only a manifest a pull completed: one rebuilt from a half-done journal is no pin.
    const repo = repoFrom(args.model, flags.dataset)
    if (!repo) throw new MsrError('E_USAGE', 'Which model? Give <owner>/<name> or --dataset OWNER/NAME.', {hint: 'For example: ms-resume manifest Qwen/Qwen2.5-0.5B-Instruct --out qwen.manifest.json'})
    const {manifest} = await loadModelManifest(locationFrom(repo.id, flags, repo.kind), {allowJournal: false})
    const text = manifestToJson(manifest)
    if (!flags.out) {
      process.stdout.write(text)
      return
    }
    try {
      await writeFileDurable(flags.out, text, 0o644)
    } catch (error) {
      throw fromFsError(error, `writing ${flags.out}`, flags.out)
    }
    if (!flags.quiet && !flags.json) process.stderr.write(`wrote the manifest of ${repoLabel(manifest)}@${manifest.revision} (${manifest.files.length} files) to ${flags.out}\n`)
  }
}
