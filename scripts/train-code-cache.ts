/**
 * Trains the bundle's code cache: bundle.ts runs this in a fresh process after writing the bundle.
 *
 * A code cache made straight after compiling holds the bundle's top level only: V8 compiles every
 * function lazily, on its first call, and each pull compiled the same few hundred functions again
 * (a no-op pull: ~15 ms of its ~240). V8 puts every function compiled so far into the cache it
 * makes, so this process runs the bundle's own no-op `pull` of a model on the emulator on 127.0.0.1
 * (downloaded first by another process) and only then makes the cache: what every pull runs.
 * Measured on the bench's no-op pull, 25 runs interleaved: 242 -> 226 ms.
 *
 * The cache is only good for a process with V8's default flags (V8 checks a hash of them), so a
 * pull's own run-time flags (cli/v8-flags.ts) are not set here, and the cache is tried in a fresh
 * process before it replaces the untrained one. Exit 0: replaced; anything else: the untrained one
 * stays, and bundle.ts says so.
 */
import {execFile, spawnSync} from 'node:child_process'
import fs from 'node:fs/promises'
import {createRequire} from 'node:module'
import os from 'node:os'
import path from 'node:path'
import {fileURLToPath} from 'node:url'
import {promisify} from 'node:util'

import {BUNDLE_FILE, CODE_CACHE_FILE, buildIdOf, runBundle, sourceText} from '../src/cli/launch.js'
import {HubEmulator} from '../test/support/emulator.js'
import {EXAMPLE_MODEL} from '../test/support/example-model.js'

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..')
const dist = path.join(root, 'dist')
const bundleFile = path.join(dist, BUNDLE_FILE)
const cacheFile = path.join(dist, CODE_CACHE_FILE)

// The bundle calls node:v8's setFlagsFromString through the module object at call time.
createRequire(import.meta.url)('node:v8').setFlagsFromString = () => {}

const home = await fs.mkdtemp(path.join(os.tmpdir(), 'ms-resume-train-'))
const emu = await HubEmulator.start({models: [EXAMPLE_MODEL]})
try {
  process.env.HOME = home
  process.env.MODELSCOPE_CACHE = path.join(home, 'cache')
  for (const name of Object.keys(process.env)) if (/^(https?|no|all)_proxy$/i.test(name) || name.startsWith('MS_RESUME_')) delete process.env[name]
  const source = sourceText(await fs.readFile(bundleFile))
  const id = buildIdOf(source)
  if (!id) throw new Error(`${bundleFile} has no build line`)
  const argv = [EXAMPLE_MODEL.id, '--endpoint', emu.url, '--quiet']
  // The download in a process of its own: its functions (a large file's data path among them) would
  // be cached too, and every pull would deserialise them (+3 MiB of RSS at 100,000 small files).
  // Not spawnSync: the emulator answering it runs in this process.
  await promisify(execFile)(process.execPath, [path.join(root, 'bin', 'run.js'), 'pull', ...argv], {env: process.env, timeout: 60_000})
  const {script, bundle} = runBundle(source, bundleFile)
  // A failed pull exits through oclif's error handler (non-zero): the untrained cache stays.
  await bundle.runCommand('pull', argv, root)
  if (process.exitCode) throw new Error(`a training pull ended with exit code ${process.exitCode}`)
  const trained = path.join(home, CODE_CACHE_FILE)
  await fs.writeFile(trained, Buffer.concat([Buffer.from(id, 'latin1'), script.createCachedData()]))
  // As launch.ts will load it: a fresh process, default flags.
  const probe = `import(${JSON.stringify(path.join(dist, 'src', 'cli', 'launch.js'))}).then((m) => process.stdout.write(m.loadBundle(${JSON.stringify(bundleFile)}, ${JSON.stringify(trained)}).cache))`
  const tried = spawnSync(process.execPath, ['--input-type=module', '-e', probe], {encoding: 'utf8', env: {...process.env, HOME: home}})
  if (tried.stdout !== 'used') throw new Error(`a fresh process did not use the trained cache (${tried.stdout || tried.stderr.trim().split('\n').pop()})`)
  await fs.copyFile(trained, cacheFile)
  const size = (await fs.stat(cacheFile)).size
  process.stdout.write(`trained ${path.relative(process.cwd(), cacheFile)} on a no-op pull (${(size / 1024).toFixed(0)} KiB)\n`)
} finally {
  await emu.stop()
  await fs.rm(home, {recursive: true, force: true})
}
// Timers of the pulls (unreferenced) and the emulator's keep-alive sockets: nothing left to wait for.
process.exit(process.exitCode ?? 0)
