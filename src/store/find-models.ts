import fs from 'node:fs/promises'
import path from 'node:path'

import {type RepoKind, STATE_DIR_NAME} from './layout.js'

/** A model (or dataset) directory that holds ms-resume state. */
export interface ModelDirs {
  modelDir: string
  stateDir: string
  /** `<owner>/<directory name>` (dots masked as ___ in the cache layouts), until a journal names it. */
  dirId: string
  /** What the place says (`<cache>/datasets/...`, --dataset); a journal's word wins. */
  repoKind?: RepoKind
}

/**
 * Model directories with ms-resume state below a cache: `<root>/<owner>/<name>/.ms-resume`.
 * Symlinks are skipped: the official client links a dotted name to its masked directory, and the
 * same model must not be listed (or cleaned) twice.
 */
export async function findModelDirs(root: string, repoKind?: RepoKind): Promise<ModelDirs[]> {
  const found: ModelDirs[] = []
  for (const owner of await subdirs(root)) {
    for (const name of await subdirs(path.join(root, owner))) {
      const modelDir = path.join(root, owner, name)
      const stateDir = path.join(modelDir, STATE_DIR_NAME)
      const stat = await fs.lstat(stateDir).catch(() => undefined)
      if (stat?.isDirectory()) found.push({modelDir, stateDir, dirId: `${owner}/${name}`, ...(repoKind ? {repoKind} : {})})
    }
  }
  return found
}

async function subdirs(dir: string): Promise<string[]> {
  try {
    const entries = await fs.readdir(dir, {withFileTypes: true})
    return entries.filter((e) => e.isDirectory() && !e.name.startsWith('.')).map((e) => e.name).sort()
  } catch {
    return []
  }
}
