/**
 * Writes oclif.manifest.json after a build: with it, oclif reads the command list from one JSON file
 * instead of importing every command (and so every dependency) on each start (~0.4 s here).
 * `npm run build` runs it; the file is generated, not committed.
 */
import fs from 'node:fs/promises'
import path from 'node:path'
import {fileURLToPath} from 'node:url'

import {Config} from '@oclif/core'

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..')
const target = path.join(root, 'oclif.manifest.json')
await fs.rm(target, {force: true})
const config = await Config.load({root})
const plugin = config.getPluginsList().find((p) => p.root === root) as unknown as {manifest: {commands: Record<string, unknown>}} | undefined
if (!plugin) throw new Error('ms-resume: root plugin not found')
await fs.writeFile(target, `${JSON.stringify(plugin.manifest, null, 2)}\n`)
process.stdout.write(`wrote ${path.relative(process.cwd(), target)} (${Object.keys(plugin.manifest.commands).length} commands)\n`)
