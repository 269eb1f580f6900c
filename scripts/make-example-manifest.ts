/**
 * Regenerates manifests/example.manifest.json with a real pull of the example model from the hub
 * emulator (see test/support/example-model.ts):
 *
 *   npx tsc -p . && npx tsx scripts/make-example-manifest.ts
 */
import {spawn} from 'node:child_process'
import {once} from 'node:events'
import fs from 'node:fs/promises'
import os from 'node:os'
import path from 'node:path'
import {fileURLToPath} from 'node:url'

import {HubEmulator} from '../test/support/emulator.js'
import {EXAMPLE_MODEL} from '../test/support/example-model.js'

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..')
const emu = await HubEmulator.start({models: [EXAMPLE_MODEL]})
const dir = await fs.mkdtemp(path.join(os.tmpdir(), 'msr-example-'))
try {
  // Not spawnSync: the emulator runs in this process and must keep answering.
  const child = spawn(process.execPath, [path.join(root, 'bin', 'run.js'), 'pull', EXAMPLE_MODEL.id, '--endpoint', emu.url, '--local-dir', dir, '--quiet'], {stdio: 'inherit'})
  const [code] = (await once(child, 'close')) as [number | null]
  if (code !== 0) throw new Error(`pull exited ${code}`)
  const out = path.join(root, 'manifests', 'example.manifest.json')
  await fs.copyFile(path.join(dir, '.ms-resume', 'manifest-v1.json'), out)
  await fs.chmod(out, 0o644)
  console.log(`wrote ${path.relative(root, out)}`)
} finally {
  await emu.stop()
  await fs.rm(dir, {recursive: true, force: true})
}
