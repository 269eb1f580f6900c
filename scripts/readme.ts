/**
 * Regenerates the parts of the docs that the code already knows, so they cannot drift:
 *   README.md        between <!-- commands --> and <!-- commandsstop -->: every command's help
 *   docs/errors.md   between <!-- errors --> and <!-- errorsstop -->: the error-code table
 *   README.md        the same table between the same markers
 * `npm run readme` runs it (after a build: commands are loaded from dist/ as the CLI loads them);
 * test/integration/docs.test.ts fails when the committed text differs from what it would write.
 */
import {existsSync} from 'node:fs'
import fs from 'node:fs/promises'
import path from 'node:path'
import {fileURLToPath} from 'node:url'

import {type Command, Config, Help} from '@oclif/core'

import {ERROR_GUIDE} from '../src/cli/error-guide.js'
import {ErrorCodes} from '../src/errors.js'

/** The package root, from scripts/ (tsx) or dist/scripts/ (compiled). */
export const REPO_ROOT = findUp(path.dirname(fileURLToPath(import.meta.url)), 'package.json')
export const COMMANDS_MARKERS = ['<!-- commands -->', '<!-- commandsstop -->'] as const
export const ERRORS_MARKERS = ['<!-- errors -->', '<!-- errorsstop -->'] as const
const WIDTH = 100

class ReferenceHelp extends Help {
  commandText(command: Command.Loadable): string {
    return this.formatCommand(command)
  }
}

/** Markdown for every visible command: a linked list, then per command its summary and full help. */
export async function commandReference(root = REPO_ROOT): Promise<string> {
  const config = await Config.load({root})
  const help = new ReferenceHelp(config, {maxWidth: WIDTH, stripAnsi: true})
  const commands = config.commands.filter((c) => !c.hidden).sort((a, b) => a.id.localeCompare(b.id))
  const title = (c: Command.Loadable) => `${config.bin} ${c.id.replaceAll(':', ' ')}${Object.keys(c.args ?? {}).map((a) => ` [${a.toUpperCase()}]`).join('')}`
  const out: string[] = [commands.map((c) => `* [\`${title(c)}\`](#${slug(title(c))})`).join('\n')]
  for (const c of commands) {
    const text = help.commandText(c).replace(/[ \t]+$/gm, '')
    out.push(`## \`${title(c)}\`\n\n${c.summary ?? ''}\n\n\`\`\`\n${text}\n\`\`\``)
  }
  return `${out.join('\n\n')}\n`
}

/** The table of docs/errors.md: code, exit code, meaning, what to do. */
export function errorTable(): string {
  const rows = Object.entries(ERROR_GUIDE).map(([code, g]) => `| \`${code}\` | ${ErrorCodes[code as keyof typeof ErrorCodes]} | ${g.meaning} | ${g.todo} |`)
  return ['| Code | Exit | Meaning | What to do |', '|---|---|---|---|', ...rows].join('\n') + '\n'
}

/** `text` with what lies between the two markers replaced by `content`. */
export function replaceBetween(text: string, [start, end]: readonly [string, string], content: string): string {
  const a = text.indexOf(start)
  const b = text.indexOf(end)
  if (a < 0 || b < a) throw new Error(`markers ${start} … ${end} not found`)
  return `${text.slice(0, a + start.length)}\n${content}${text.slice(b)}`
}

/** What lies between the markers, in the form replaceBetween writes it. */
export function sectionBetween(text: string, [start, end]: readonly [string, string]): string | undefined {
  const a = text.indexOf(start)
  const b = text.indexOf(end)
  return a < 0 || b < a ? undefined : text.slice(a + start.length + 1, b)
}

function findUp(dir: string, name: string): string {
  for (let d = dir; ; d = path.dirname(d)) {
    if (existsSync(path.join(d, name))) return d
    if (path.dirname(d) === d) throw new Error(`no ${name} above ${dir}`)
  }
}

function slug(heading: string): string {
  return heading.toLowerCase().replace(/[^a-z0-9 _-]/g, '').replaceAll(' ', '-')
}

async function main(): Promise<void> {
  const readme = path.join(REPO_ROOT, 'README.md')
  const errors = path.join(REPO_ROOT, 'docs', 'errors.md')
  const readmeText = replaceBetween(await fs.readFile(readme, 'utf8'), COMMANDS_MARKERS, await commandReference())
  await fs.writeFile(readme, replaceBetween(readmeText, ERRORS_MARKERS, errorTable()))
  await fs.writeFile(errors, replaceBetween(await fs.readFile(errors, 'utf8'), ERRORS_MARKERS, errorTable()))
  process.stdout.write(`updated ${path.relative(process.cwd(), readme)} and ${path.relative(process.cwd(), errors)}\n`)
}

if (process.argv[1] && path.resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  main().catch((error: unknown) => {
    process.stderr.write(`readme: ${(error as Error).message}\n`)
    process.exit(1)
  })
}
