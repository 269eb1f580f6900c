import path from 'node:path'

import {JOURNAL_LOG_FILE} from '../../src/journal/journal-files.js'
import {JOURNAL_FILE, MANIFEST_FILE, PARTIAL_DIR, QUARANTINE_DIR, STATE_DIR_NAME} from '../../src/store/layout.js'

/**
 * Where ms-resume keeps its state for a model directory, spelled once (from src/store/layout.ts)
 * for every test: a layout change is made in one place, not in forty string literals.
 */
export function statePaths(modelDir: string) {
  const dir = path.join(modelDir, STATE_DIR_NAME)
  return {
    dir,
    journal: path.join(dir, JOURNAL_FILE),
    /** The journal's append-only log (the snapshot plus its committed batches is the journal). */
    journalLog: path.join(dir, JOURNAL_LOG_FILE),
    manifest: path.join(dir, MANIFEST_FILE),
    partials: path.join(dir, PARTIAL_DIR),
    quarantine: path.join(dir, QUARANTINE_DIR),
    lock: path.join(dir, 'lock'),
    /** A file in the partial folder. */
    partial: (name: string) => path.join(dir, PARTIAL_DIR, name),
  }
}

export {STATE_DIR_NAME}
