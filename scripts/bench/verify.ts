import fs from 'node:fs/promises'
import path from 'node:path'

import {MiB, ROUNDS, VERIFY_MIB, WORK} from './config.js'
import {measure} from './measure.js'
import {compare} from './report.js'
import {fresh, log, msResume, startCdn} from './tools.js'

async function warm(file: string): Promise<void> {
  const fh = await fs.open(file, 'r')
  const buf = Buffer.allocUnsafe(8 * MiB)
  try {
    while ((await fh.read(buf, 0, buf.length)).bytesRead > 0) {
      // reading is the point
    }
  } finally {
    await fh.close()
  }
}

/** (i) verify --level full / fast against coreutils sha256sum over the same files, page cache warm. */
export async function verify(): Promise<void> {
  const dir = path.join(WORK, 'verify')
  const files = Array.from({length: 4}, (_, i) => ({path: `model-0000${i}.safetensors`, size: Math.floor((VERIFY_MIB / 4) * MiB)}))
  const cdn = await startCdn({model: {id: 'bench/verify', files}})
  const id = cdn.model.id
  try {
    await fresh(dir)()
    const pulled = await msResume(['pull', id, '--endpoint', cdn.endpoint, '--local-dir', dir])
    if (pulled.code !== 0) throw new Error(`verify scenario: the pull failed (exit ${pulled.code}): ${pulled.stderr.slice(-300)}`)
  } finally {
    await cdn.stop()
  }
  const paths = files.map((f) => f.path)
  // Pulls write large files with O_DIRECT (they are not in the page cache afterwards): read them
  // once so that every tool, in every round, reads from the page cache.
  for (const p of paths) await warm(path.join(dir, p))
  await compare(`verify ${VERIFY_MIB} MiB in 4 files (page cache warm)`, [
    {name: 'sha256sum', run: () => measure('sha256sum', paths, {cwd: dir})},
    {name: 'ms-resume verify --level full', run: () => msResume(['verify', id, '--local-dir', dir, '--level', 'full'])},
    {name: 'ms-resume verify --level fast', run: () => msResume(['verify', id, '--local-dir', dir, '--level', 'fast']), target: 'several x faster than full'},
  ], 'sha256sum', {rounds: ROUNDS, log})
}
