import type {HubFile, HubListing} from '../hub/types.js'
import type {Manifest} from '../integrity/manifest.js'
import {type FileRecord, durableBytes} from '../journal/schema.js'
import {MsrError} from '../errors.js'
import {isSizeOnly, sameVersion} from '../integrity/size-only.js'
import {assertNoCollisions, resolveInside} from '../store/safe-path.js'
import {makePathFilter} from './filter.js'
import type {PlannedFile} from './summary.js'

export interface Selection {
  modelDir: string
  include?: string[]
  exclude?: string[]
  /** Pull exactly what a pinned manifest says; refuse when the hub disagrees unless allowed. */
  manifest?: Manifest
  allowManifestMismatch?: boolean
}

/** Filters, checks names, and applies a pinned manifest. Throws before anything is written. */
export function selectFiles(listing: HubListing, opts: Selection): HubFile[] {
  const keep = makePathFilter(opts.include ?? [], opts.exclude ?? [])
  let files = listing.files.filter((f) => keep(f.path))
  if (opts.manifest) {
    const byPath = new Map(listing.files.map((f) => [f.path, f]))
    const problems: string[] = []
    const pinned: HubFile[] = []
    for (const m of opts.manifest.files) {
      const f = byPath.get(m.path)
      if (!f) problems.push(`${m.path}: gone from the hub`)
      else if (isSizeOnly(f) && !sameVersion(m, f)) problems.push(`${m.path}: size ${m.size} commit ${m.commit.slice(0, 12)} pinned, hub has size ${f.size} commit ${f.commit.slice(0, 12)} (and no sha256)`)
      else if (!isSizeOnly(f) && (f.sha256 !== m.sha256 || f.size !== m.size)) problems.push(`${m.path}: sha256 ${m.sha256.slice(0, 12)}… size ${m.size} pinned, hub has sha256 ${f.sha256.slice(0, 12)}… size ${f.size}`)
      // A file the hub lists without a hash is held to the pinned one: a pin is exact bytes.
      if (f) pinned.push(isSizeOnly(f) ? {...f, sha256: m.sha256} : f)
    }
    if (problems.length > 0 && !opts.allowManifestMismatch) {
      throw new MsrError('E_MANIFEST_MISMATCH', `The hub no longer matches the pinned manifest (${problems.length} file${problems.length === 1 ? '' : 's'}): ${problems.slice(0, 3).join('; ')}${problems.length > 3 ? '; …' : ''}.`, {
        hint: 'Update the manifest deliberately (ms-resume manifest), or pass --allow-manifest-mismatch to take the hub\'s current files.',
      })
    }
    files = pinned.filter((f) => keep(f.path))
  }
  // Checks the name (assertSafeRepoPath), then that it resolves inside the model directory.
  for (const f of files) resolveInside(opts.modelDir, f.path)
  assertNoCollisions(files.map((f) => f.path))
  return files
}

/** What a file still needs, from its journal record (a record of another version counts as none). */
export function planFile(f: HubFile, r: FileRecord | undefined): PlannedFile {
  const same = r !== undefined && sameVersion(r, f)
  if (same && r.status === 'complete') return {path: f.path, size: f.size, remainingBytes: 0, state: 'complete'}
  if (same && r.status !== 'pending') return {path: f.path, size: f.size, remainingBytes: f.size - durableBytes(r), state: 'partial'}
  return {path: f.path, size: f.size, remainingBytes: f.size, state: 'new'}
}
