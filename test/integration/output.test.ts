import {execFileSync, spawn} from 'node:child_process'
import fs from 'node:fs/promises'
import path from 'node:path'

import {expect} from 'chai'

import {HubEmulator} from '../support/emulator.js'
import {playTerminal} from '../support/fake-tty.js'
import {BIN, listFiles, makeTmpDir, runCli, testEnv} from '../support/cli.js'
import {skipBecause} from '../support/process.js'

const MODEL = 'acme/output-model'
const FILES = [
  {path: 'config.json', content: '{"hidden_size": 8}\n'},
  {path: 'empty.txt', content: ''},
  {path: 'weights/model.safetensors', size: 3 * 1024 * 1024 + 17},
  {path: 'tokenizer/vocab.txt', size: 5000},
]
const ANSI = /\u001B\[/

interface JsonLine {
  type: string
  [key: string]: unknown
}

function parseLines(stdout: string): JsonLine[] {
  const lines = stdout.split('\n')
  expect(lines.pop(), 'output ends with a newline').to.equal('')
  return lines.map((line, i) => {
    try {
      return JSON.parse(line) as JsonLine
    } catch {
      throw new Error(`line ${i + 1} is not JSON: ${line}`)
    }
  })
}

async function diskTotals(dir: string): Promise<{files: number; bytes: number}> {
  const files = await listFiles(dir)
  let bytes = 0
  for (const f of files) bytes += (await fs.stat(path.join(dir, f))).size
  return {files: files.length, bytes}
}

describe('output modes', function () {
  this.timeout(120_000)
  let emu: HubEmulator
  let home: string

  beforeEach(async () => {
    emu = await HubEmulator.start({models: [{id: MODEL, files: FILES}]})
    home = await makeTmpDir()
  })
  afterEach(async () => {
    await emu.stop()
    await fs.rm(home, {recursive: true, force: true})
  })

  const pull = (args: string[], extra: Record<string, string | undefined> = {}) =>
    runCli(['pull', MODEL, '--endpoint', emu.url, ...args], {env: testEnv(home, extra)})

  it('not a terminal: whole lines only, no carriage return or escape code, a line per finished file, a summary', async () => {
    const dir = path.join(home, 'out')
    const res = await pull(['--local-dir', dir])
    expect(res.code, res.stderr).to.equal(0)
    const all = res.stdout + res.stderr
    expect(all).not.to.contain('\r')
    expect(all).not.to.match(ANSI)
    for (const f of FILES) expect(res.stderr, f.path).to.contain(f.path)
    expect(res.stderr).to.contain(dir)
    // Again, with nothing to fetch: still clean, every file accounted for.
    const again = await pull(['--local-dir', dir])
    expect(again.code).to.equal(0)
    expect(again.stdout + again.stderr).not.to.match(/\r|\u001B\[/)
    for (const f of FILES) expect(again.stderr, f.path).to.contain(f.path)
  })

  it('--json: every line parses, the events are there, the last line is a summary that matches the disk', async () => {
    const dir = path.join(home, 'out')
    const res = await pull(['--local-dir', dir, '--json'])
    expect(res.code, res.stderr).to.equal(0)
    expect(res.stderr).to.equal('')
    const events = parseLines(res.stdout)
    const types = events.map((e) => e.type)
    expect(types[0]).to.equal('listing')
    expect(types).to.include('start')
    expect(types).to.include('file-start')
    expect(types).to.include('progress')
    expect(types.filter((t) => t === 'file-done')).to.have.length(FILES.length)
    expect(types.filter((t) => t === 'summary')).to.have.length(1)
    const summary = events[events.length - 1]
    expect(summary.type).to.equal('summary')
    const disk = await diskTotals(dir)
    expect(summary.files).to.equal(disk.files)
    expect(summary.totalBytes).to.equal(disk.bytes)
    expect(summary.downloadedBytes).to.equal(disk.bytes)
    expect(summary.modelDir).to.equal(dir)
    for (const e of events) expect(e.time, e.type).to.be.a('string')

    // A second run: everything reused, nothing downloaded, still a summary last.
    const again = parseLines((await pull(['--local-dir', dir, '--json'])).stdout)
    const last = again[again.length - 1]
    expect(last).to.include({type: 'summary', files: disk.files, totalBytes: disk.bytes, downloadedBytes: 0, reusedBytes: disk.bytes, reusedFiles: disk.files})
  })

  it('--json: a failed pull prints the error event, then the summary as the last line', async () => {
    emu.addFile(MODEL, {path: 'bad.bin', size: 2048, listedSha256: 'a'.repeat(64)})
    const res = await pull(['--local-dir', path.join(home, 'out'), '--json'])
    expect(res.code).to.equal(4)
    const events = parseLines(res.stdout)
    const last = events[events.length - 1]
    expect(last.type).to.equal('summary')
    expect(last.failedFiles).to.equal(1)
    const error = events[events.length - 2]
    expect(error).to.include({type: 'error', code: 'E_INTEGRITY', exitCode: 4, path: 'bad.bin'})
    expect(events.filter((e) => e.type === 'error')).to.have.length(1)
    expect(events.some((e) => e.type === 'file-error' && e.path === 'bad.bin')).to.equal(true)
  })

  it('--json: a pull that fails before it starts ends with the error event', async () => {
    const res = await runCli(['pull', 'acme/missing', '--endpoint', emu.url, '--json', '--local-dir', path.join(home, 'x')], {env: testEnv(home)})
    expect(res.code).to.equal(5)
    const events = parseLines(res.stdout)
    expect(events[events.length - 1]).to.include({type: 'error', code: 'E_NOT_FOUND', exitCode: 5})
    expect(res.stderr).to.equal('')
  })

  it('--quiet: nothing at all on success; only the error on failure', async () => {
    const ok = await pull(['--local-dir', path.join(home, 'out'), '--quiet'])
    expect(ok.code).to.equal(0)
    expect(ok.stdout).to.equal('')
    expect(ok.stderr).to.equal('')
    const bad = await runCli(['pull', 'acme/missing', '--endpoint', emu.url, '-q', '--local-dir', path.join(home, 'x')], {env: testEnv(home)})
    expect(bad.code).to.equal(5)
    expect(bad.stdout).to.equal('')
    expect(bad.stderr).to.contain('[E_NOT_FOUND]')
  })

  it('on a real terminal (script(1)): live view, then a clean end', async function () {
    try {
      execFileSync('script', ['--version'], {stdio: 'ignore'})
    } catch {
      skipBecause(this, 'script(1) is not installed (util-linux)')
    }
    const dir = path.join(home, 'out')
    const typescript = path.join(home, 'typescript')
    const env = testEnv(home, {CI: undefined, TERM: 'xterm-256color'})
    const quoted = [process.execPath, BIN, 'pull', MODEL, '--endpoint', emu.url, '--local-dir', dir].map((a) => `'${a}'`).join(' ')
    // Asynchronously: the emulator serving this pull runs in this very process.
    const code = await new Promise<number | null>((resolve, reject) => {
      const child = spawn('script', ['-qec', `stty cols 100 rows 30; ${quoted}`, typescript], {env, stdio: 'ignore'})
      child.on('error', reject)
      child.on('close', resolve)
    })
    expect(code).to.equal(0)
    const out = await fs.readFile(typescript, 'utf8')
    expect(out).to.match(ANSI)
    // The cursor, hidden for the live view, is shown again at the end.
    expect(out.lastIndexOf('\u001B[?25h')).to.be.greaterThan(out.lastIndexOf('\u001B[?25l'))
    const screen = playTerminal(out.slice(out.indexOf('\n') + 1), 100)
    expect(screen.lines.join('\n')).not.to.match(/[█░]|ETA/)
    expect(screen.cursorVisible).to.equal(true)
    expect((await listFiles(dir)).length).to.equal(FILES.length)
  })
})
