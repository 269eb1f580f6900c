import fs from 'node:fs/promises'
import net from 'node:net'
import path from 'node:path'

import {expect} from 'chai'

import {type CliResult, makeTmpDir, runCli, startCli, testEnv} from '../support/cli.js'
import {HubEmulator} from '../support/emulator.js'
import {RunningCli, mountTmpfs, skipBecause, unmount, waitUntil} from '../support/process.js'
import {statePaths} from '../support/state-paths.js'

const MODEL = 'acme/errors-model'
const MiB = 1024 * 1024
const STACK_LINE = /^\s+at /m

/** What every failure must look like: its exit code, `[CODE]` on stderr, a hint, no stack. */
function expectFailure(res: CliResult, exitCode: number, code: string): void {
  expect(res.code, res.stderr).to.equal(exitCode)
  expect(res.stderr).to.contain(`[${code}]`)
  expect(res.stderr).to.match(/hint: \S/)
  expect(res.stderr).not.to.match(STACK_LINE)
  expect(res.stdout).to.equal('')
}

async function closedPort(): Promise<number> {
  const server = net.createServer()
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
  const {port} = server.address() as net.AddressInfo
  await new Promise((resolve) => server.close(resolve))
  return port
}

describe('errors: one line, a hint, the documented exit code, no stack', function () {
  this.timeout(120_000)
  let emu: HubEmulator
  let home: string
  let env: NodeJS.ProcessEnv

  beforeEach(async () => {
    emu = await HubEmulator.start({
      models: [{id: MODEL, files: [{path: 'config.json', content: '{}\n'}, {path: 'weights.bin', size: 5 * MiB}]}],
    })
    home = await makeTmpDir()
    env = testEnv(home)
  })
  afterEach(async () => {
    await emu.stop()
    await fs.rm(home, {recursive: true, force: true})
  })

  const pull = (args: string[], extraEnv = env) => runCli(['pull', ...args], {env: extraEnv})
  const out = () => ['--local-dir', path.join(home, 'out')]

  describe('usage (exit 2, E_USAGE)', () => {
    const cases: Array<[string, string[]]> = [
      ['a bad model id', ['not a model']],
      ['a bad --max-speed', [MODEL, '--max-speed', 'abc']],
      ['an unknown flag', [MODEL, '--no-such-flag']],
      ['a value outside the options', [MODEL, '--check', 'bogus']],
      ['an integer out of range', [MODEL, '--concurrency', '0']],
      ['a flag without its value', [MODEL, '--include']],
      ['an extra argument', [MODEL, 'acme/other']],
      ['both --local-dir and --cache-dir', [MODEL, '--local-dir', 'a', '--cache-dir', 'b']],
    ]
    for (const [what, args] of cases) {
      it(what, async () => {
        expectFailure(await pull([...args, '--endpoint', emu.url]), 2, 'E_USAGE')
      })
    }

    it('an unknown command', async () => {
      expectFailure(await runCli(['frobnicate', MODEL], {env}), 2, 'E_USAGE')
    })

    it('status and clean validate their model id too', async () => {
      expectFailure(await runCli(['status', 'nope'], {env}), 2, 'E_USAGE')
      expectFailure(await runCli(['clean', 'a/b/c'], {env}), 2, 'E_USAGE')
    })
  })

  it('no network (a closed port): exit 3, E_NETWORK', async () => {
    const port = await closedPort()
    expectFailure(await pull([MODEL, '--endpoint', `http://127.0.0.1:${port}`, '--retries', '1', ...out()]), 3, 'E_NETWORK')
  })

  it('not found: exit 5, E_NOT_FOUND', async () => {
    expectFailure(await pull(['acme/does-not-exist', '--endpoint', emu.url, ...out()]), 5, 'E_NOT_FOUND')
  })

  it('auth refused: exit 5, E_AUTH', async () => {
    emu.setToken('the-token')
    expectFailure(await pull([MODEL, '--endpoint', emu.url, '--token', 'wrong', ...out()]), 5, 'E_AUTH')
  })

  it('integrity (the hub lists another SHA-256 than it serves): exit 4, E_INTEGRITY, nothing at the final path', async () => {
    emu.addFile(MODEL, {path: 'lies.bin', size: 4096, listedSha256: 'b'.repeat(64)})
    expectFailure(await pull([MODEL, '--endpoint', emu.url, ...out()]), 4, 'E_INTEGRITY')
    await fs.access(path.join(home, 'out', 'lies.bin')).then(
      () => expect.fail('an unverified file reached its final path'),
      () => {},
    )
  })

  it('disk full (the listing is larger than the free space): exit 6, E_DISK_FULL, nothing fetched', async () => {
    emu.addFile(MODEL, {path: 'huge.bin', size: 1024, listedSize: 2 ** 50, listedSha256: 'c'.repeat(64)})
    expectFailure(await pull([MODEL, '--endpoint', emu.url, ...out()]), 6, 'E_DISK_FULL')
    expect(emu.contentRequests(MODEL)).to.have.length(0)
  })

  it('disk full on a real 2 MiB tmpfs: exit 6, E_DISK_FULL', async function () {
    const mnt = path.join(home, 'small')
    const reason = await mountTmpfs(mnt, 'size=2m')
    if (reason) skipBecause(this, reason)
    try {
      expectFailure(await pull([MODEL, '--endpoint', emu.url, '--local-dir', path.join(mnt, 'model')]), 6, 'E_DISK_FULL')
    } finally {
      await unmount(mnt)
    }
  })

  it('lock held by a running pull: exit 6, E_LOCKED; Ctrl-C on that pull: exit 130, E_INTERRUPTED', async () => {
    emu.setRateLimit(256 * 1024)
    const first = new RunningCli(startCli(['pull', MODEL, '--endpoint', emu.url, ...out()], {env}))
    try {
      await waitUntil(async () => fs.access(statePaths(path.join(home, 'out')).lock).then(() => true, () => false), 'the first pull to hold the lock')
      expectFailure(await pull([MODEL, '--endpoint', emu.url, '--lock-wait', '0', ...out()]), 6, 'E_LOCKED')
      expectFailure(await runCli(['clean', MODEL, ...out()], {env}), 6, 'E_LOCKED')
      const interrupted = await first.kill('SIGINT')
      expectFailure(interrupted, 130, 'E_INTERRUPTED')
    } finally {
      await first.kill('SIGKILL')
    }
  })

  it('--verbose and DEBUG=ms-resume* do show the stack (so the checks above mean something)', async () => {
    const verbose = await pull(['acme/does-not-exist', '--endpoint', emu.url, '--verbose', ...out()])
    expect(verbose.code).to.equal(5)
    expect(verbose.stderr).to.match(STACK_LINE)
    const debug = await pull(['acme/does-not-exist', '--endpoint', emu.url, ...out()], testEnv(home, {DEBUG: 'ms-resume*'}))
    expect(debug.stderr).to.match(STACK_LINE)
  })

  it('--json: the error is an event on stdout, stderr stays empty', async () => {
    const res = await pull(['not a model', '--json'])
    expect(res.code).to.equal(2)
    expect(res.stderr).to.equal('')
    expect(JSON.parse(res.stdout.trim())).to.include({type: 'error', code: 'E_USAGE', exitCode: 2})
  })
})
