import fs from 'node:fs/promises'
import path from 'node:path'

import {MsrError} from '../errors.js'
import {type Manifest, buildManifest, manifestKind, manifestProblem, readManifest} from '../integrity/manifest.js'
import {Journal} from '../journal/journal.js'
import type {JournalDoc} from '../journal/schema.js'
import {JOURNAL_FILE, MANIFEST_FILE, type ModelLocation, repoLabel} from '../store/layout.js'

/** Where the manifest a verification trusts came from. */
export type ManifestSource =
  | {kind: 'file'; path: string}
  /** `<stateDir>/manifest-v1.json`, written by the last completed pull. */
  | {kind: 'state'; path: string}
  /** Rebuilt from the journal's complete records (a pull that never completed, or an older state). */
  | {kind: 'journal'; path: string}

export interface LoadedManifest {
  manifest: Manifest
  source: ManifestSource
}

/**
 * The manifest of a pulled model: the one the last completed pull wrote, else (when `allowJournal`)
 * one rebuilt from the journal's complete records, else a clear E_USAGE asking for --manifest.
 */
export async function loadModelManifest(location: ModelLocation, opts: {allowJournal: boolean}): Promise<LoadedManifest> {
  const file = path.join(location.stateDir, MANIFEST_FILE)
  const modelId = repoLabel({modelId: `${location.owner}/${location.name}`, repoKind: location.repoKind})
  if (await isFile(file)) {
    const manifest = await readManifest(file)
    assertKind(manifestKind(manifest), location, repoLabel({modelId: manifest.modelId, repoKind: manifestKind(manifest)}), modelId)
    return {manifest, source: {kind: 'state', path: file}}
  }
  const hint = opts.allowJournal
    ? `Pass the manifest with --manifest FILE, or pull ${modelId} into ${location.modelDir} first.`
    : `A completed pull writes it: pull ${modelId} with the same --local-dir / --cache-dir first.`
  if (opts.allowJournal) {
    const {doc, problem} = await Journal.peek(location.stateDir)
    if (problem) throw new MsrError('E_USAGE', `No manifest for ${modelId} in ${location.modelDir}, and its journal is unusable (${problem}).`, {hint})
    if (doc) {
      assertKind(doc.repoKind ?? 'model', location, repoLabel(doc), modelId)
      const manifest = manifestFromJournal(doc)
      const bad = manifestProblem(manifest)
      if (bad) throw new MsrError('E_USAGE', `No manifest for ${modelId} in ${location.modelDir}, and its journal does not make one (${bad}).`, {hint})
      return {manifest, source: {kind: 'journal', path: path.join(location.stateDir, JOURNAL_FILE)}}
    }
  }
  throw new MsrError('E_USAGE', `No integrity manifest for ${modelId} in ${location.modelDir}.`, {hint})
}

/** The files a journal has complete, as a manifest (files still downloading are not part of it). */
export function manifestFromJournal(doc: JournalDoc): Manifest {
  const files = Object.values(doc.files)
    .filter((r) => r.status === 'complete')
    .map((r) => ({
      path: r.path, size: r.size, sha256: r.sha256 || r.observedSha256 || '', ...(r.sha256 === '' ? {sizeOnly: true as const} : {}),
      commit: r.commit, chunkSizeBytes: r.chunkSizeBytes, xxh64: r.chunks.map((c) => c ?? ''),
    }))
  return buildManifest({hub: doc.hub, endpoint: doc.endpoint, modelId: doc.modelId, repoKind: doc.repoKind, revision: doc.revision, files})
}

/** A --cache-dir directory holds a model or a dataset of one id: the one asked for, or a clear refusal. */
function assertKind(found: ModelLocation['repoKind'], location: ModelLocation, foundLabel: string, wanted: string): void {
  if (found === location.repoKind) return
  throw new MsrError('E_USAGE', `${location.modelDir} holds ${foundLabel}, not ${wanted}.`, {
    hint: found === 'dataset' ? 'Name it with --dataset OWNER/NAME.' : 'Name a model without --dataset.',
  })
}

/** A regular file itself: a symlink or FIFO planted at the state manifest's name is not ours (and a FIFO would hang the read). */
async function isFile(p: string): Promise<boolean> {
  try {
    return (await fs.lstat(p)).isFile()
  } catch {
    return false
  }
}
