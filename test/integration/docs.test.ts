import fs from 'node:fs/promises'
import path from 'node:path'

import {Config} from '@oclif/core'
import {expect} from 'chai'

import {COMMANDS_MARKERS, ERRORS_MARKERS, REPO_ROOT, commandReference, errorTable, sectionBetween} from '../../scripts/readme.js'
import {ErrorCodes} from '../../src/errors.js'
import {JSON_EVENT_TYPES} from '../../src/ui/json-reporter.js'
import {makeTmpDir, runCli, testEnv} from '../support/cli.js'

const read = (rel: string) => fs.readFile(path.join(REPO_ROOT, rel), 'utf8')
const STALE = 'out of date: run `npm run readme` and commit the result'

describe('docs generated from the code are up to date', function () {
  this.timeout(60_000)

  it('README.md: the command reference is what `npm run readme` writes (commands loaded from dist/)', async () => {
    expect(sectionBetween(await read('README.md'), COMMANDS_MARKERS), STALE).to.equal(await commandReference())
  })

  it('README.md: the error-code table is the generated one', async () => {
    expect(sectionBetween(await read('README.md'), ERRORS_MARKERS), STALE).to.equal(errorTable())
  })

  it('docs/errors.md: the table lists every error code with its exit code', async () => {
    const doc = await read('docs/errors.md')
    expect(sectionBetween(doc, ERRORS_MARKERS), STALE).to.equal(errorTable())
    for (const [code, exit] of Object.entries(ErrorCodes)) expect(doc).to.match(new RegExp(`\\| \`${code}\` \\| ${exit} \\|`))
  })

  it('docs/json-output.md documents every event type --json can print', async () => {
    const doc = await read('docs/json-output.md')
    for (const type of Object.keys(JSON_EVENT_TYPES)) expect(doc, type).to.contain(`| \`${type}\` |`)
  })

  it('every command has a summary, a description and examples; the root help reads like a manual', async () => {
    const config = await Config.load({root: REPO_ROOT})
    for (const id of ['pull', 'status', 'clean']) expect(config.findCommand(id), id).not.to.equal(undefined)
    for (const c of config.commands.filter((c) => !c.hidden)) {
      expect(c.summary, `${c.id} summary`).to.be.a('string').and.not.equal('')
      expect(c.description, `${c.id} description`).to.be.a('string').and.not.equal('')
      expect(c.examples ?? [], `${c.id} examples`).to.have.length.greaterThan(0)
    }
    const home = await makeTmpDir()
    try {
      const res = await runCli(['--help'], {env: testEnv(home)})
      expect(res.code).to.equal(0)
      for (const section of ['USAGE', 'DESCRIPTION', 'COMMANDS', 'ENVIRONMENT', 'EXIT CODES', 'FILES']) expect(res.stdout, section).to.contain(`\n${section}\n`)
      for (const code of Object.keys(ErrorCodes)) expect(res.stdout, code).to.contain(code)
      const sub = await runCli(['help', 'status'], {env: testEnv(home)})
      expect(sub.code).to.equal(0)
      expect(sub.stdout).to.contain('EXAMPLES')
    } finally {
      await fs.rm(home, {recursive: true, force: true})
    }
  })
})
