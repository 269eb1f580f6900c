/**
 * `npm run demo`: the main job on an embedded default, no internet needed. Starts the project's hub
 * emulator on 127.0.0.1 with a generated model of a few hundred MiB behind a flaky, throttled link,
 * pulls it with the real CLI, interrupts the pull half-way (Ctrl-C), pulls again to show the resume,
 * then verifies the copy offline.
 */
import {spawn} from 'node:child_process'
import fs from 'node:fs/promises'
import os from 'node:os'
import path from 'node:path'
import {fileURLToPath} from 'node:url'

import {HubEmulator} from '../test/support/emulator.js'

const MiB = 1024 * 1024
const MODEL = 'demo/flaky-model-v1.0'
const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..')
const bin = path.join(root, 'bin', 'run.js')

function run(args: string[], opts: {interruptAfterMs?: number} = {}): Promise<number | null> {
  return new Promise((resolve) => {
    process.stderr.write(`\n$ ms-resume ${args.join(' ')}\n`)
    const child = spawn(process.execPath, [bin, ...args], {stdio: 'inherit'})
    const timer = opts.interruptAfterMs
      ? setTimeout(() => {
          process.stderr.write('\n[demo] sending Ctrl-C (SIGINT) to the pull...\n')
          child.kill('SIGINT')
        }, opts.interruptAfterMs)
      : undefined
    child.on('exit', (code) => {
      if (timer) clearTimeout(timer)
      process.stderr.write(`[demo] exit code ${code}\n`)
      resolve(code)
    })
  })
}

const emu = await HubEmulator.start({
  models: [{
    id: MODEL,
    files: [
      {path: 'config.json', content: JSON.stringify({architectures: ['DemoForCausalLM'], hidden_size: 1024}, null, 2)},
      {path: 'tokenizer.json', size: 2 * MiB},
      {path: 'model-00001-of-00002.safetensors', size: 160 * MiB},
      {path: 'model-00002-of-00002.safetensors', size: 96 * MiB + 12345},
      {path: 'README.md', content: '# A generated demo model\n'},
    ],
  }],
  rateLimitBytesPerSec: 24 * MiB,
})
// The flaky link: a dropped connection, a busy server, and a stall.
emu.setFaults(MODEL, 'model-00001-of-00002.safetensors', [{kind: 'reset', afterBytes: 30 * MiB}])
emu.setFaults(MODEL, 'model-00002-of-00002.safetensors', [{kind: 'status', status: 503, headers: {'Retry-After': '1'}}, {kind: 'stall', afterBytes: 20 * MiB, ms: 60_000}])
const out = path.join(os.tmpdir(), 'ms-resume-demo')
await fs.rm(out, {recursive: true, force: true})
process.stderr.write(`[demo] hub emulator on ${emu.url}; files go to ${out}\n`)
try {
  // --max-speed keeps the demo slow enough to interrupt half-way, whatever this machine's loopback does.
  const common = ['--endpoint', emu.url, '--local-dir', out, '--timeout', '3', '--max-speed', '40M']
  await run(['pull', MODEL, ...common], {interruptAfterMs: 3500})
  const code = await run(['pull', MODEL, ...common])
  const verified = await run(['verify', MODEL, '--local-dir', out, '--level', 'fast'])
  process.stderr.write(`\n[demo] ${code === 0 && verified === 0 ? 'done: pulled, resumed and verified' : 'something failed, see above'}. Files: ${out}\n`)
  process.exitCode = code ?? 1
} finally {
  await emu.stop()
}
