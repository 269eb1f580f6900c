import path from 'node:path'

import * as Args from '@oclif/core/args'
import * as Flags from '@oclif/core/flags'

import {BaseCommand} from '../cli/base-command.js'
import {datasetFlag, hubFlags, hubFrom, locationFlags, locationFrom, repoFrom, retryPolicyFrom} from '../cli/flags.js'
import {ExitCode, MsrError, isMsrError} from '../errors.js'
import type {EndpointFailover, EventSink} from '../events.js'
import {CHECK_LEVELS, type CheckLevel} from '../integrity/check.js'
import {manifestKind, readManifest} from '../integrity/manifest.js'
import {repoLabel} from '../store/layout.js'
import {withRetries} from '../transfer/with-retries.js'
import {createReporter, outputMode} from '../ui/reporter.js'
import {verifyReportLines} from '../ui/verify-report.js'
import {defaultThreads} from '../verify/check-pool.js'
import {type LoadedManifest, loadModelManifest} from '../verify/manifest-source.js'
import {repairModel} from '../verify/repair.js'
import {type VerifyReport, diffRemote, verifyModel} from '../verify/verify.js'

// The revision is the manifest's; everything else about the hub is as for pull.
const {revision: _revision, ...hubOnlyFlags} = hubFlags

export default class Verify extends BaseCommand {
  static override summary = 'Check a pulled model against its integrity manifest, offline; optionally repair only the damaged bytes.'

  static override description = `Checks every file of the model's integrity manifest (written by the last completed pull, or given with --manifest) on disk, without the network:
  --level size   presence and sizes only (reads no file content)
  --level fast   xxh64 of every chunk: names the damaged byte ranges
  --level full   SHA-256 of every file (the default)
Reports missing files, wrong sizes, damaged chunks and SHA-256 mismatches, and files on disk that the manifest does not list (reported, never deleted). Exit code 0 when every file is fine, 4 when anything is damaged or missing.

--repair re-fetches from the hub only the chunks that are damaged (Range requests), confirms each file's SHA-256 before putting it back, downloads a file whole when its chunk sums cannot place the damage, and downloads missing files.`

  static override examples = [
    {description: 'Full check of a model in the ModelScope cache', command: '<%= config.bin %> verify Qwen/Qwen2.5-0.5B-Instruct'},
    {description: 'Quick check that names damaged byte ranges, then repair them', command: '<%= config.bin %> verify Qwen/Qwen2.5-7B --local-dir ./qwen --level fast --repair'},
    {description: 'Check a folder against a pinned manifest (no ms-resume state needed)', command: '<%= config.bin %> verify --manifest qwen.manifest.json --local-dir ./qwen'},
    {description: 'Also show what changed on the hub since the manifest was written', command: '<%= config.bin %> verify Qwen/Qwen2.5-7B --remote'},
    {description: 'A dataset in the ModelScope cache (files without a listed SHA-256 are held to the one the pull recorded)', command: '<%= config.bin %> verify --dataset OWNER/NAME --level fast'},
  ]

  static override args = {
    model: Args.string({description: 'Model id, <owner>/<name> (optional with --manifest; or --dataset OWNER/NAME).', required: false}),
  }

  static override flags = {
    ...datasetFlag,
    ...locationFlags,
    ...hubOnlyFlags,
    manifest: Flags.string({description: 'Verify against this integrity manifest instead of the one kept with the model.', helpValue: 'FILE'}),
    level: Flags.string({description: 'size (presence and sizes), fast (xxh64 per chunk), full (SHA-256 of every file).', options: [...CHECK_LEVELS], default: 'full'}),
    repair: Flags.boolean({description: 'Re-fetch only the damaged chunks (and missing files) from the hub; takes --endpoint and --token.', default: false}),
    remote: Flags.boolean({description: 'Also compare the manifest with the hub\'s current listing and show what changed upstream.', default: false}),
    jobs: Flags.integer({description: 'Files hashed in parallel, each in its own worker thread (0 = automatic: one per CPU core at --level full, one per two cores at fast, where one file already keeps two busy).', default: 0, min: 0, max: 256}),
  }

  async run(): Promise<void> {
    const {args, flags} = await this.parse(Verify)
    const {manifest, source} = await this.manifestFor(args.model, flags)
    const location = locationFrom(manifest.modelId, flags, manifestKind(manifest))
    const level = flags.level as CheckLevel
    const threads = flags.jobs > 0 ? flags.jobs : defaultThreads(level)
    const report = await verifyModel({manifest, source, modelDir: location.modelDir, level, threads, signal: this.signal})

    let failure: unknown
    if (flags.remote || (flags.repair && !report.ok)) {
      const hub = hubFrom(flags, manifestKind(manifest))
      const policy = retryPolicyFrom(flags)
      if (flags.remote) {
        const failovers: EndpointFailover[] = []
        const noteFailover: EventSink = (e) => {
          if (e.type === 'failover') failovers.push({from: e.from, to: e.to, code: e.code, reason: e.reason, path: e.path})
        }
        const listing = await withRetries(() => hub.listFiles(manifest.modelId, manifest.revision, this.signal, noteFailover), policy, this.signal)
        report.remote = diffRemote(manifest, listing.files, {endpoint: hub.endpoint, revision: manifest.revision})
        if (failovers.length > 0) report.remote.failovers = failovers
      }
      if (flags.repair && !report.ok) {
        const reporter = await createReporter(flags.json ? 'quiet' : outputMode(flags))
        try {
          await repairModel({
            report, manifest, location, hub, threads, signal: this.signal,
            emit: (e) => reporter.event(e),
            pull: {idleTimeoutMs: flags.timeout * 1000, policy},
          })
        } catch (error) {
          if (!isMsrError(error) || !report.repair?.error) throw error
          failure = error
        } finally {
          reporter.close()
        }
      }
    }
    this.output(report, flags)
    if (failure) {
      if (flags.json) this.exit((failure as MsrError).exitCode)
      throw failure
    }
    if (!report.ok) {
      if (flags.json) this.exit(ExitCode.INTEGRITY)
      const bad = report.counts.files - report.counts.ok
      throw new MsrError('E_DAMAGED', `${bad} of ${report.counts.files} files of ${report.modelId} ${bad === 1 ? 'is' : 'are'} damaged or missing.`, {
        hint: flags.repair ? 'See the lines above; run again, or pull the model again.' : 'Run the same command with --repair to fetch only the damaged bytes.',
      })
    }
  }

  private async manifestFor(model: string | undefined, flags: {manifest?: string; dataset?: string; 'local-dir'?: string; 'cache-dir'?: string}): Promise<LoadedManifest> {
    const repo = repoFrom(model, flags.dataset)
    if (flags.manifest) {
      const manifest = await readManifest(flags.manifest)
      if (repo && (repo.id !== manifest.modelId || repo.kind !== manifestKind(manifest))) {
        const pinned = repoLabel({modelId: manifest.modelId, repoKind: manifestKind(manifest)})
        throw new MsrError('E_USAGE', `The manifest is for ${pinned}, not ${repoLabel({modelId: repo.id, repoKind: repo.kind})}.`, {hint: 'Drop the model argument (and --dataset) or use the matching manifest.'})
      }
      return {manifest, source: {kind: 'file', path: path.resolve(flags.manifest)}}
    }
    if (!repo) throw new MsrError('E_USAGE', 'Which model? Give <owner>/<name>, --dataset OWNER/NAME or --manifest FILE.', {hint: 'For example: ms-resume verify Qwen/Qwen2.5-0.5B-Instruct --local-dir ./qwen'})
    return loadModelManifest(locationFrom(repo.id, flags, repo.kind), {allowJournal: true})
  }

  /** --json: the report as one JSON document on stdout. Otherwise lines on stdout; --quiet keeps only the problems. */
  private output(report: VerifyReport, flags: {json: boolean; quiet: boolean}): void {
    if (flags.json) {
      process.stdout.write(`${JSON.stringify(report)}\n`)
      return
    }
    const lines = verifyReportLines(report)
    const shown = flags.quiet ? lines.slice(0, -1) : lines
    if (shown.length > 0) process.stdout.write(`${shown.join('\n')}\n`)
  }
}
