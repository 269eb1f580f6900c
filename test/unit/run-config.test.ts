import path from 'node:path'
import {fileURLToPath} from 'node:url'

import {Config} from '@oclif/core/config'
import {expect} from 'chai'

import {BIN_NAME, runConfig} from '../../src/cli/run-command.js'

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..')

describe('runConfig: what a command running from the bundle reads of oclif\'s Config', () => {
  it('answers as the Config oclif loads from package.json does', async () => {
    const real = await Config.load({root})
    const ours = runConfig(root)
    expect(BIN_NAME).to.equal(real.bin)
    expect(ours.bin).to.equal(real.bin)
    for (const name of ['REDIRECTED', 'CONTENT_TYPE', 'DEBUG']) {
      expect(ours.scopedEnvVarKey(name)).to.equal(real.scopedEnvVarKey(name))
      expect(ours.scopedEnvVarKeys(name)).to.deep.equal(real.scopedEnvVarKeys(name))
    }
    process.env.MS_RESUME_CONTENT_TYPE = 'json'
    try {
      expect(ours.scopedEnvVar('CONTENT_TYPE')).to.equal(real.scopedEnvVar('CONTENT_TYPE')).and.equal('json')
      for (const value of ['true', '1', 'yes', '0', '']) {
        process.env.MS_RESUME_FLAG = value
        expect(ours.scopedEnvVarTrue('FLAG'), value).to.equal(real.scopedEnvVarTrue('FLAG'))
      }
    } finally {
      delete process.env.MS_RESUME_CONTENT_TYPE
      delete process.env.MS_RESUME_FLAG
    }
    // The bundle runs no hooks: package.json declares none that a command's run fires.
    expect(Object.keys(real.pjson.oclif.hooks ?? {})).to.deep.equal(['command_not_found'])
    expect(await ours.runHook('preparse', {argv: [], options: {}})).to.deep.equal({successes: [], failures: []})
  })
})
