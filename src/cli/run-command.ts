import type {Command} from '@oclif/core/command'
import type {Config} from '@oclif/core/config'
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

/** package.json's oclif.bin (test/unit/run-config.test.ts holds them equal). */
export const BIN_NAME = 'ms-resume'

/**
 * What a command running from the bundle reads of oclif's Config, and no more: its name (error
 * messages), its scoped environment variables (oclif drops MS_RESUME_REDIRECTED), and hooks, of
 * which the bundle runs none (the one we have, command_not_found, is oclif's own business, outside
 * the bundle). Config.load read package.json and the manifest, sorted the commands and loaded
 * plugin machinery (~30 ms of module initialisation and 10 ms of work on every start-up), and
 * Command.run loaded it once more from the Config it was given. `topicSeparator` ':' tells oclif's
 * normalizeArgv that argv needs no rewriting (the command is already chosen).
 */
export function runConfig(root: string): Config {
  const scopedEnvVarKey = (name: string) => `${BIN_NAME.replaceAll('-', '_').toUpperCase()}_${name}`
  const config = {
    root,
    bin: BIN_NAME,
    name: BIN_NAME,
    topicSeparator: ':',
    userAgent: `${BIN_NAME} ${process.platform}-${process.arch} node-${process.version}`,
    scopedEnvVarKey,
    scopedEnvVarKeys: (name: string) => [scopedEnvVarKey(name)],
    scopedEnvVar: (name: string) => process.env[scopedEnvVarKey(name)],
    scopedEnvVarTrue: (name: string) => ['true', '1'].includes(process.env[scopedEnvVarKey(name)] ?? ''),
    runHook: async () => ({successes: [], failures: []}),
  }
  return config as unknown as Config
}

export async function runCommand(id: string, argv: string[], root: string): Promise<void> {
  try {
    const {default: command} = await COMMANDS[id]()
    command.id = id
    // What Command.run does once it has a Config.
    await (new command(argv, runConfig(root)) as unknown as {_run(): Promise<unknown>})._run()
    void flush()
  } catch (error) {
    await handle(error as Error)
  }
}
