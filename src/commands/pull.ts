import * as Args from '@oclif/core/args'
import * as Flags from '@oclif/core/flags'

import {BaseCommand} from '../cli/base-command.js'
import {tuneForLongRun} from '../cli/v8-flags.js'
import {checkLevelFrom, datasetFlag, hubFlags, hubFrom, locationFlags, locationFrom, repoFrom, retryPolicyFrom} from '../cli/flags.js'
import {MsrError} from '../errors.js'
import {manifestKind, readManifest} from '../integrity/manifest.js'
import {repoLabel} from '../store/layout.js'
import {type PullSummary, pull} from '../pull/pull.js'
import {parseRate} from '../transfer/rate-limiter.js'
import {toMsrError} from '../ui/errors.js'
import {createReporter, outputMode} from '../ui/reporter.js'

export default class Pull extends BaseCommand {
  static override summary = 'Download a model (or with --dataset, a dataset) repository, resumably, verified before it is visible.'

  static override description = `Lists the repository's files (with their SHA-256 and size) from the hub and downloads them with HTTP Range requests into partial files, keeping a journal of every durable byte, the SHA-256 state and per-chunk xxh64 sums. Killed, rebooted or cut off at any moment, the next run resumes from the last checkpoint without downloading or hashing again what it already has. A file reaches its final path only after its SHA-256 equals the hub's.

By default files go to the ModelScope cache ($MODELSCOPE_CACHE or ~/.cache/modelscope/hub, as models/<owner>/<name with . as ___>), where the official Python library finds them without downloading again.

--dataset OWNER/NAME pulls a dataset the same way, into datasets/<owner>/<name with . as ___> with the index the official client's dataset_snapshot_download reads (a model and a dataset of the same name never share a directory there). Its listing is read page by page; files the hub lists without a SHA-256 are held to their listed size only, counted once in the summary ("size only") and marked so in the manifest, which records the hash of the bytes placed.`

  static override examples = [
    {description: 'Pull a model into the ModelScope cache', command: '<%= config.bin %> pull Qwen/Qwen2.5-0.5B-Instruct'},
    {description: 'Only the safetensors and the config, into a folder', command: '<%= config.bin %> pull Qwen/Qwen2.5-7B --include "*.safetensors" --include "*.json" --local-dir ./qwen'},
    {description: 'Exactly what a pinned manifest says (refuses if the hub changed)', command: '<%= config.bin %> pull --manifest qwen.manifest.json --local-dir ./qwen'},
    {description: 'A LAN mirror first, the hub when the mirror is down (a partial goes on from the byte it stopped at)', command: '<%= config.bin %> pull Qwen/Qwen2.5-7B --endpoint http://mirror:8090 --endpoint https://www.modelscope.cn'},
    {description: 'Script it: NDJSON events, then the directory for from_pretrained', command: '<%= config.bin %> pull Qwen/Qwen2.5-0.5B --json | jq -c \'select(.type=="summary")\''},
    {description: 'A dataset, only its train split, into a folder', command: '<%= config.bin %> pull --dataset OWNER/NAME --include "train/*" --local-dir ./data'},
  ]

  static override args = {
    model: Args.string({description: 'Model id, <owner>/<name> (or --dataset OWNER/NAME).', required: false}),
  }

  static override flags = {
    ...datasetFlag,
    ...locationFlags,
    ...hubFlags,
    include: Flags.string({description: 'Only paths matching GLOB (fnmatch, as the official client; repeatable).', multiple: true, helpValue: 'GLOB'}),
    exclude: Flags.string({description: 'Skip paths matching GLOB (repeatable).', multiple: true, helpValue: 'GLOB'}),
    check: Flags.string({description: 'How to check what the journal has: size (no reads but a partial\'s last chunk), fast (xxh64 per chunk), full (SHA-256). Default size, or full when MODELSCOPE_ENABLE_DEFAULT_HASH_VALIDATION=true. Damaged files are repaired.', options: ['size', 'fast', 'full']}),
    manifest: Flags.string({description: 'Pull exactly the files of this pinned integrity manifest.', helpValue: 'FILE'}),
    'allow-manifest-mismatch': Flags.boolean({description: 'With --manifest: take the hub\'s current files even where they differ from the manifest.', default: false}),
    concurrency: Flags.integer({description: 'Files downloaded in parallel.', default: 4, min: 1, max: 64}),
    connections: Flags.integer({description: 'Ranged connections per file (0 = automatic: from 64 MiB, one connection; 8 when it is slower than 32 MiB/s; 10 when those 8 each keep most of its rate).', default: 0, min: 0, max: 32}),
    'max-speed': Flags.string({description: 'Cap on the total download rate, e.g. 5M, 500K (bytes per second, binary units).', helpValue: 'RATE'}),
    'min-speed': Flags.string({description: 'A connection slower than this over one --timeout window is reconnected.', default: '1K', helpValue: 'RATE'}),
    'lock-wait': Flags.integer({description: 'Seconds to wait while another ms-resume pulls the same model here (default: wait until it is done; 0 = exit at once with code 6).', min: 0}),
    'dry-run': Flags.boolean({description: 'Show what would be downloaded; write nothing.', default: false}),
    'print-path': Flags.boolean({description: 'Print the model directory on stdout at the end (for from_pretrained).', default: false}),
  }

  async run(): Promise<void> {
    const {args, flags} = await this.parse(Pull)
    const manifest = flags.manifest ? await readManifest(flags.manifest) : undefined
    const named = repoFrom(args.model, flags.dataset)
    const repo = named ?? (manifest ? {id: manifest.modelId, kind: manifestKind(manifest)} : undefined)
    if (!repo) throw new MsrError('E_USAGE', 'Which model? Give <owner>/<name>, --dataset OWNER/NAME or --manifest FILE.', {hint: 'For example: ms-resume pull Qwen/Qwen2.5-0.5B-Instruct'})
    const modelId = repo.id
    if (manifest && (manifest.modelId !== modelId || manifestKind(manifest) !== repo.kind)) {
      const pinned = repoLabel({modelId: manifest.modelId, repoKind: manifestKind(manifest)})
      throw new MsrError('E_USAGE', `The manifest is for ${pinned}, not ${repoLabel({modelId, repoKind: repo.kind})}.`, {hint: 'Drop the model argument (and --dataset) or use the matching manifest.'})
    }
    const maxBytesPerSec = flags['max-speed'] ? parseRate(flags['max-speed']) : undefined
    const minBytesPerSec = parseRate(flags['min-speed'])
    const check = checkLevelFrom(flags.check)
    const location = locationFrom(modelId, flags, repo.kind)
    const hub = hubFrom(flags, repo.kind)
    const reporter = await createReporter(outputMode(flags))
    try {
      const summary = await pull({
        hub, modelId, revision: flags.revision, location,
        include: flags.include, exclude: flags.exclude,
        manifest, allowManifestMismatch: flags['allow-manifest-mismatch'],
        check, concurrency: flags.concurrency, connections: flags.connections,
        maxBytesPerSec, minBytesPerSec,
        idleTimeoutMs: flags.timeout * 1000,
        policy: retryPolicyFrom(flags),
        lockWaitMs: flags['lock-wait'] === undefined ? undefined : flags['lock-wait'] * 1000,
        dryRun: flags['dry-run'],
        // Events name the repo by id; a dataset's say so (pull itself is the same for both kinds).
        emit: (e) => {
          // Downloads ahead: tune V8 for a run that lasts (a no-op pull never gets here).
          if (e.type === 'start' && e.toDownloadBytes > 0) tuneForLongRun()
          reporter.event(repo.kind === 'dataset' && (e.type === 'listing' || e.type === 'start') ? {...e, repoKind: 'dataset'} : e)
        },
        signal: this.signal,
      })
      reporter.summary(summary, {printPath: flags['print-path']})
      if (flags['print-path'] && !flags.json) process.stdout.write(`${summary.modelDir}\n`)
    } catch (error) {
      // --json: the error event, then the summary as the last line; otherwise the summary, then
      // the error line (printed by BaseCommand) last, where the eye lands.
      reporter.failed(toMsrError(error), error, (error as {summary?: PullSummary}).summary)
      throw error
    } finally {
      reporter.close()
    }
  }
}
