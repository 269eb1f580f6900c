import {createHash} from 'node:crypto'
import fs from 'node:fs/promises'
import path from 'node:path'

import {expect} from 'chai'

import {readManifest} from '../../src/integrity/manifest.js'
import {readModelscopeIndex} from '../../src/hub/modelscope/python-index.js'
import {HubEmulator, datasetKey} from '../support/emulator.js'
import {makeTmpDir, runMeasured, testEnv} from '../support/cli.js'
import {datasetDir} from '../support/datasets.js'
import {readJournalOnDisk} from '../support/journal-read.js'
import {statePaths} from '../support/state-paths.js'

const MiB = 1024 * 1024


/** Figures for the lead and BENCHMARKS.md; never asserted (a loaded machine must not fail a test). */
function report(what: string, r: {ms: number; peakRssBytes: number}): void {
  console.log(`      measured: ${what}: ${(r.ms / 1000).toFixed(1)} s, peak RSS ${Math.round(r.peakRssBytes / MiB)} MiB`)
}

describe('datasets at scale (fault-matrix.md: Scale)', function () {
  let emu: HubEmulator | undefined
  let home: string

  beforeEach(async () => {
    home = await makeTmpDir('msr-dscale-')
  })
  afterEach(async () => {
    await emu?.stop()
    emu = undefined
    await fs.rm(home, {recursive: true, force: true})
  })

  it('10,000 small files through 101 pages: every file, its journal record and .msc entry; a few lines of output, not one per file', async function () {
    this.timeout(300_000)
    const ID = 'acme/ten-thousand'
    const COUNT = 10_000
    const files = Array.from({length: COUNT}, (_, i) => ({path: `shard-${String(i % 100).padStart(3, '0')}/f${i}.json`, size: 50 + ((i * 37) % 200)}))
    // Small files straight from the download route, as the hub does (no redirect per file).
    emu = await HubEmulator.start({datasets: [{id: ID, files, gitattributes: false}], directDownloadBelowBytes: MiB})
    const env = testEnv(home)
    const res = await runMeasured(['pull', '--dataset', ID, '--endpoint', emu.url, '--concurrency', '16'], env, 280_000)
    report(`pull of ${COUNT} files`, res)
    expect(res.code, res.stderr.slice(-2000)).to.equal(0)
    // Plain output (a pipe): listing, start, a progress line every 10 s, the summary; no line per file.
    expect(res.stderr.trim().split('\n').length, res.stderr.slice(0, 2000)).to.be.at.most(40)
    expect(res.stderr).not.to.match(/^done /m)
    const pages = emu.log.filter((e) => e.route === 'tree').map((e) => e.page!)
    expect(new Set(pages).size).to.be.at.least(101)

    const dir = datasetDir(path.join(home, 'cache'), ID)
    for (let i = 0; i < COUNT; i += 97) {
      const data = await fs.readFile(path.join(dir, files[i].path))
      expect(createHash('sha256').update(data).digest('hex'), files[i].path).to.equal(emu.sha256Of(datasetKey(ID), files[i].path))
    }
    // The snapshot and its log (the journal appends between compactions).
    const journal = await readJournalOnDisk<{files: Record<string, {status: string}>}>(dir)
    const records = Object.values(journal!.doc.files)
    expect(records).to.have.length(COUNT)
    expect(records.every((r) => r.status === 'complete')).to.equal(true)
    // Written one after the other above 5,000 files (finishModel): both in full.
    expect((await readModelscopeIndex(dir)).files).to.have.length(COUNT)
    expect((await readManifest(statePaths(dir).manifest)).files).to.have.length(COUNT)
    // Bounded: the listing, the journal and 16 files in flight, not the bytes of 10,000 files.
    expect(res.peakRssBytes, 'peak RSS').to.be.greaterThan(0).and.lessThan(600 * MiB)

    emu.clearLog()
    const again = await runMeasured(['pull', '--dataset', ID, '--endpoint', emu.url], env, 120_000)
    report(`no-op pull of ${COUNT} files`, again)
    expect(again.code, again.stderr).to.equal(0)
    expect(emu.log.filter((e) => e.content)).to.have.length(0)
  })

  it('a listing of 100,000 files (1,006 pages): read, checked and planned in bounded memory', async function () {
    this.timeout(300_000)
    const ID = 'acme/hundred-thousand'
    const COUNT = 100_000
    const files = Array.from({length: COUNT}, (_, i) => ({path: `part-${String(i % 500).padStart(3, '0')}/s${i}.txt`, size: 1 + (i % 900), ...(i % 1000 === 0 ? {noSha256: 'absent' as const} : {})}))
    emu = await HubEmulator.start({datasets: [{id: ID, files, gitattributes: false}]})
    const res = await runMeasured(['pull', '--dataset', ID, '--endpoint', emu.url, '--local-dir', path.join(home, 'out'), '--dry-run', '--json'], testEnv(home), 280_000)
    report(`listing (dry run) of ${COUNT} files`, res)
    expect(res.code, res.stderr.slice(-2000)).to.equal(0)
    const summary = JSON.parse(res.stdout.trim().split('\n').at(-1)!)
    expect(summary).to.include({type: 'summary', dryRun: true, files: COUNT, sizeOnlyFiles: COUNT / 1000})
    expect(summary.plan).to.have.length(COUNT)
    // 100,000 files and 500 folders: 1,005 full pages, then the empty page 1,006; at most four asked past it.
    const pages = new Set(emu.log.filter((e) => e.route === 'tree').map((e) => e.page!))
    for (let p = 1; p <= 1006; p++) expect(pages.has(p), `page ${p}`).to.equal(true)
    expect(Math.max(...pages)).to.be.at.most(1010)
    expect(res.peakRssBytes, 'peak RSS').to.be.greaterThan(0).and.lessThan(800 * MiB)
  })
})
