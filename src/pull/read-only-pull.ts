import {MsrError} from '../errors.js'
import type {HubFile} from '../hub/types.js'
import {checkFile} from '../integrity/check.js'
import {Journal} from '../journal/journal.js'
import {resolveInside} from '../store/safe-path.js'
import {formatBytes} from '../format.js'
import {expectedFromRecord} from './file-job.js'
import type {PullOptions} from './pull.js'
import {planFile} from './select-files.js'
import type {PullSummary} from './summary.js'

/**
 * A pull by someone who cannot write the target (a read-only mount, a team member without write
 * access to the cache): when every selected file is complete and passes its check, it succeeds
 * and writes nothing (no lock, no journal, no index). When anything would need writing, it stops
 * before the first download with one E_PERMISSION line that says so, instead of failing half-way.
 */
export async function pullWithoutWriting(files: HubFile[], opts: PullOptions, cannotWrite: MsrError, summary: PullSummary, startedMs: number): Promise<PullSummary> {
  const {location, emit} = opts
  const {doc} = await Journal.peek(location.stateDir)
  const done: Array<{file: HubFile; sha256: string}> = []
  let missingBytes = 0
  let missingFiles = 0
  for (const f of files) {
    const record = doc && Object.hasOwn(doc.files, f.path) ? doc.files[f.path] : undefined
    let ok = false
    if (record && planFile(f, record).state === 'complete') {
      const check = await checkFile(resolveInside(location.modelDir, f.path), expectedFromRecord(record), opts.check ?? 'size').catch(() => undefined)
      ok = check?.status === 'ok'
    }
    if (ok) {
      done.push({file: f, sha256: f.sha256})
    } else {
      missingFiles++
      missingBytes += f.size
    }
  }
  if (missingFiles > 0) {
    const code = (cannotWrite.cause as NodeJS.ErrnoException | undefined)?.code
    const why = code === 'EROFS' ? 'a read-only filesystem' : 'no write permission'
    throw new MsrError('E_PERMISSION', `Cannot write to ${location.modelDir} (${why}), and ${missingFiles} of ${files.length} files (${formatBytes(missingBytes)}) still need to be fetched or repaired there.`, {
      path: location.modelDir,
      cause: cannotWrite,
      hint: 'Pull as a user who may write there (or ask one to), or choose a writable place with --local-dir or --cache-dir. Nothing was downloaded.',
    })
  }
  emit({type: 'start', modelId: opts.modelId, revision: summary.revision, endpoint: opts.hub.endpoint, modelDir: location.modelDir, files: files.length, totalBytes: summary.totalBytes, toDownloadBytes: 0})
  for (const {file, sha256} of done) {
    emit({type: 'file-done', path: file.path, size: file.size, downloadedBytes: 0, reused: true, sha256})
    summary.reusedFiles++
    summary.reusedBytes += file.size
  }
  summary.elapsedMs = Math.round(performance.now() - startedMs)
  return summary
}
