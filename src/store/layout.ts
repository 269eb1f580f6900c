import {createHash} from 'node:crypto'
import os from 'node:os'
import path from 'node:path'

import {MsrError} from '../errors.js'

/**
 * What a repo id names on the hub: a model (`/api/v1/models/...`, `<cache>/models/...`) or a dataset
 * (`/api/v1/datasets/...`, `<cache>/datasets/...`). A model and a dataset may share an id.
 */
export type RepoKind = 'model' | 'dataset'
export const REPO_KINDS: readonly RepoKind[] = ['model', 'dataset']

/** Where a model's (or a dataset's) files and ms-resume's state for it live. Pure: no filesystem access. */
export interface ModelLocation {
  owner: string
  name: string
  repoKind: RepoKind
  /** The directory the user's files land in: `<modelDir>/<Path>`. */
  modelDir: string
  /** ms-resume's own state (journal, manifest, partials, lock), hidden inside the model directory. */
  stateDir: string
  /** The ModelScope cache root, when the official cache layout is used (not with --local-dir). */
  cacheRoot?: string
  layout: 'cache' | 'cache-dir' | 'local-dir'
}

export const STATE_DIR_NAME = '.ms-resume'
/** On-disk formats carry their version in their name. */
export const JOURNAL_FILE = 'journal-v1.json'
export const MANIFEST_FILE = 'manifest-v1.json'
export const PARTIAL_DIR = 'partial-v1'
export const QUARANTINE_DIR = 'quarantine'
/** Names in a model directory that belong to tools, not to the model. */
export const TOOL_ENTRIES = new Set([STATE_DIR_NAME, '.msc', '.mdl', '.mv', '._____temp'])
/**
 * Top-level names a hub file may not take: ms-resume's state and the Python client's index and
 * lock. A hub file `.ms-resume/journal-v1.json` or `.msc` would overwrite them. Compared in lower
 * case, so `.MSC` is refused too (it is the same file on a case-insensitive filesystem).
 */
export const RESERVED_TOP_LEVEL = new Set([...TOOL_ENTRIES, '.lock'])

/** The name of a file's partial in PARTIAL_DIR: stable across runs, free of anything the hub chose. */
export function partialNameFor(repoPath: string): string {
  return `${createHash('sha256').update(repoPath).digest('hex').slice(0, 40)}.part`
}

const MODEL_ID = /^([A-Za-z0-9][A-Za-z0-9_.-]*)\/([A-Za-z0-9][A-Za-z0-9_.-]*)$/

export function parseModelId(modelId: string, kind: RepoKind = 'model'): {owner: string; name: string} {
  const m = MODEL_ID.exec(modelId ?? '')
  if (!m || m[1].includes('..') || m[2].includes('..')) {
    throw new MsrError('E_USAGE', `Not a ${kind} id: ${JSON.stringify(modelId)}.`, {
      hint: kind === 'dataset' ? 'Give it as <owner>/<name>, for example --dataset OWNER/NAME.' : 'Give it as <owner>/<name>, for example Qwen/Qwen2.5-0.5B-Instruct.',
    })
  }
  return {owner: m[1], name: m[2]}
}

/** The official client's directory name for a model: every '.' becomes '___'. */
export function maskedName(name: string): string {
  return name.replaceAll('.', '___')
}

export function defaultCacheRoot(env: NodeJS.ProcessEnv = process.env): string {
  return env.MODELSCOPE_CACHE ? path.resolve(env.MODELSCOPE_CACHE) : path.join(os.homedir(), '.cache', 'modelscope', 'hub')
}

/**
 * Where pull puts a repo. The default cache keeps models and datasets apart (`models/`, `datasets/`,
 * as the official 1.x client does); `--cache-dir DIR` is `DIR/<owner>/<name'>` for both kinds, as the
 * client's `cache_dir` is, so a model and a dataset of one id meet there: the journal tells them
 * apart and a pull refuses to mix them (E_USAGE).
 */
export function resolveLocation(
  modelId: string,
  opts: {localDir?: string; cacheDir?: string; env?: NodeJS.ProcessEnv; repoKind?: RepoKind} = {},
): ModelLocation {
  const repoKind = opts.repoKind ?? 'model'
  const {owner, name} = parseModelId(modelId, repoKind)
  if (opts.localDir && opts.cacheDir) {
    throw new MsrError('E_USAGE', '--local-dir and --cache-dir cannot be used together.', {hint: 'Pick one of them.'})
  }
  let modelDir: string
  let cacheRoot: string | undefined
  let layout: ModelLocation['layout']
  if (opts.localDir) {
    modelDir = path.resolve(opts.localDir)
    layout = 'local-dir'
  } else if (opts.cacheDir) {
    modelDir = path.resolve(opts.cacheDir, owner, maskedName(name))
    layout = 'cache-dir'
  } else {
    cacheRoot = defaultCacheRoot(opts.env)
    modelDir = path.join(cacheRoot, kindDir(repoKind), owner, maskedName(name))
    layout = 'cache'
  }
  return {owner, name, repoKind, modelDir, stateDir: path.join(modelDir, STATE_DIR_NAME), cacheRoot, layout}
}

/** The directory of a kind below the cache root (and in the hub's API paths): `models` or `datasets`. */
export function kindDir(kind: RepoKind): 'models' | 'datasets' {
  return kind === 'dataset' ? 'datasets' : 'models'
}

/** A repo id as people read it: `owner/name` for a model, `dataset owner/name` for a dataset. */
export function repoLabel(repo: {modelId: string; repoKind?: RepoKind}): string {
  return repo.repoKind === 'dataset' ? `dataset ${repo.modelId}` : repo.modelId
}

export function modelIdOf(loc: Pick<ModelLocation, 'owner' | 'name'>): string {
  return `${loc.owner}/${loc.name}`
}
