import type {Command} from '@oclif/core/command'
import {Config} from '@oclif/core/config'
import {flush} from '@oclif/core/flush'
import {handle} from '@oclif/core/handle'

/**
 * The entry point of the bundle (dist/ms-resume.cjs, see scripts/bundle.ts and launch.ts): runs one
 * of our commands the way oclif's `execute` does (parse, run, flush; errors through oclif's handler,
 * which sets the exit code), without finding the command through the manifest and importing it file
 * by file. A command is initialised only when it is the one asked for: `serve` or `verify` have no
 * business in the start-up of a pull.
 */
type CommandClass = (new (argv: string[], config: Config) => Command) & typeof Command

const COMMANDS: Record<string, () => Promise<{default: CommandClass}>> = {
  clean: () => import('../commands/clean.js'),
  manifest: () => import('../commands/manifest.js'),
  pull: () => import('../commands/pull.js'),
  serve: () => import('../commands/serve.js'),
  status: () => import('../commands/status.js'),
  verify: () => import('../commands/verify.js'),
}

export function hasCommand(id: string): boolean {
  return Object.hasOwn(COMMANDS, id)
}

export async function runCommand(id: string, argv: string[], root: string): Promise<void> {
  try {
    const [config, {default: command}] = await Promise.all([Config.load({root}), COMMANDS[id]()])
    command.id = id
    await command.run(argv, config)
    void flush()
  } catch (error) {
    await handle(error as Error)
  }
}
