import * as Args from '@oclif/core/args'
import * as Flags from '@oclif/core/flags'

import {BaseCommand} from '../cli/base-command.js'
import {locationFlags, locationFrom} from '../cli/flags.js'
import {fromFsError} from '../fs/fs-errors.js'
import {manifestToJson} from '../integrity/manifest.js'
import {writeFileDurable} from '../fs/durable-file.js'
import {loadModelManifest} from '../verify/manifest-source.js'

export default class Manifest extends BaseCommand {
  static override summary = 'Print the integrity manifest of a pulled model (commit it to pin the model like a lockfile).'

  static override description = `The manifest is a versioned JSON document (schema: manifests/manifest-v1.schema.json) that every completed pull writes next to the model: hub, endpoint, model id, revision and commit, and per file its path, size, SHA-256 and the xxh64 of every chunk. \`pull --manifest FILE\` pulls exactly those files (and refuses when the hub changed them); \`verify --manifest FILE\` checks a folder against it, offline.`

  static override examples = [
    {description: 'Pin a model', command: '<%= config.bin %> manifest Qwen/Qwen2.5-0.5B-Instruct --out qwen.manifest.json'},
    {description: 'From a local folder', command: '<%= config.bin %> manifest Qwen/Qwen2.5-7B --local-dir ./qwen > qwen.manifest.json'},
  ]

  static override args = {
    model: Args.string({description: 'Model id, <owner>/<name>.', required: true}),
  }

  static override flags = {
    ...locationFlags,
    out: Flags.string({char: 'o', description: 'Write the manifest to FILE instead of stdout.', helpValue: 'FILE'}),
  }

  async run(): Promise<void> {
    const {args, flags} = await this.parse(Manifest)
    // Only a manifest a pull completed: one rebuilt from a half-done journal is no pin.
    const {manifest} = await loadModelManifest(locationFrom(args.model, flags), {allowJournal: false})
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
    if (!flags.quiet && !flags.json) process.stderr.write(`wrote the manifest of ${manifest.modelId}@${manifest.revision} (${manifest.files.length} files) to ${flags.out}\n`)
  }
}
