import {readFileSync} from 'node:fs'
import {createRequire} from 'node:module'
import path from 'node:path'
import {fileURLToPath} from 'node:url'
import vm from 'node:vm'

import {boundHeap} from './v8-flags.js'

/**
 * What bin/run.js runs. A command that does its work runs from one bundle (dist/ms-resume.cjs: our
 * code and its dependencies in one file, scripts/bundle.ts) compiled with the V8 code cache written
 * next to it at build time: resolving, reading and compiling ~100 ESM files and their node_modules
 * one by one took 0.3 s of a 0.48 s no-op pull. Help, --version, unknown commands and a missing
 * bundle go through oclif's `execute` as before.
 */
export const BUNDLE_FILE = 'ms-resume.cjs'
export const CODE_CACHE_FILE = 'ms-resume.cjs.v8-cache'
/**
 * The bundle's first line names its build; its code cache starts with the same id. A cache made for
 * another bundle is never used: V8 itself checks only the length of the source, and a stale cache
 * would run old code.
 */
export const BUILD_LINE_PREFIX = '// ms-resume build '
export const BUILD_ID_BYTES = 32

const COMMANDS = new Set(['clean', 'manifest', 'pull', 'serve', 'status', 'verify'])
const NOT_A_RUN = new Set(['--help', '-h', '--version', 'help'])

/** The command to run from the bundle, or undefined when oclif itself must handle argv. */
export function bundledCommand(argv: string[]): string | undefined {
  const [id, ...rest] = argv
  if (!id || !COMMANDS.has(id)) return undefined
  for (const arg of rest) {
    if (arg === '--') break
    if (NOT_A_RUN.has(arg)) return undefined
  }
  return id
}

export interface Bundle {
  runCommand(id: string, argv: string[], root: string): Promise<void>
}

/** The build id on the bundle's first line (32 hex digits), or undefined. */
export function buildIdOf(source: string): string | undefined {
  if (!source.startsWith(BUILD_LINE_PREFIX)) return undefined
  const id = source.slice(BUILD_LINE_PREFIX.length, BUILD_LINE_PREFIX.length + BUILD_ID_BYTES)
  return /^[0-9a-f]{32}$/.test(id) ? id : undefined
}

/**
 * The bundle's text. A bundle with a build line is scripts/bundle.ts's, which writes ASCII only: it
 * is read as Latin-1 (the same characters). readFileSync(file, 'utf8') of its 2.3 MB took 25-27 ms
 * of a no-op pull's start-up, the bytes and a Latin-1 string of them 15-17 ms (buffer.isAscii()
 * would add 3 ms: its first call). Any other file is decoded as UTF-8.
 */
export function sourceText(bytes: Buffer): string {
  return buildIdOf(bytes.toString('latin1', 0, BUILD_LINE_PREFIX.length + BUILD_ID_BYTES)) ? bytes.toString('latin1') : bytes.toString('utf8')
}

/** Wraps the bundle's source as Node wraps a CommonJS module (the code cache is made for this text). */
export function wrapBundle(source: string): string {
  return `(function (exports, require, module, __filename, __dirname) { ${source}\n});`
}

/** How the bundle was compiled: from its code cache, or from source (no cache, another build's, or V8 refused it). */
export type CodeCache = 'used' | 'none' | 'rejected'

/**
 * Compiles and runs the bundle with its code cache. A cache made from another bundle, by another
 * V8 or with other flags is not used (V8 itself checks the last two): the code is then compiled.
 */
export function loadBundle(file: string, cacheFile: string): {bundle: Bundle; cache: CodeCache} | undefined {
  let source: string
  try {
    source = sourceText(readFileSync(file))
  } catch {
    return undefined
  }
  let cachedData: Buffer | undefined
  try {
    const cache = readFileSync(cacheFile)
    const id = buildIdOf(source)
    if (id && cache.toString('latin1', 0, BUILD_ID_BYTES) === id) cachedData = cache.subarray(BUILD_ID_BYTES)
  } catch {
    // no cache: compiled from source
  }
  const {script, bundle} = runBundle(source, file, cachedData)
  return {bundle, cache: !cachedData ? 'none' : script.cachedDataRejected ? 'rejected' : 'used'}
}

/**
 * Compiles the bundle's `source` (from `file`) as launch does, with `cachedData` if given, and runs
 * its top level. scripts/train-code-cache.ts makes the code cache from the same Script.
 */
export function runBundle(source: string, file: string, cachedData?: Buffer): {script: vm.Script; bundle: Bundle} {
  const script = new vm.Script(wrapBundle(source), {
    filename: file,
    cachedData,
    importModuleDynamically: vm.constants.USE_MAIN_CONTEXT_DEFAULT_LOADER,
  })
  const module = {exports: {} as Bundle}
  const fn = script.runInThisContext() as (e: unknown, r: NodeJS.Require, m: unknown, f: string, d: string) => void
  fn.call(module.exports, module.exports, createRequire(file), module, file, path.dirname(file))
  return {script, bundle: module.exports}
}

export async function launch(binUrl: string): Promise<void> {
  const root = path.resolve(path.dirname(fileURLToPath(binUrl)), '..')
  const argv = process.argv.slice(2)
  const id = bundledCommand(argv)
  const loaded = id ? loadBundle(path.join(root, 'dist', BUNDLE_FILE), path.join(root, 'dist', CODE_CACHE_FILE)) : undefined
  if (id && loaded) {
    boundHeap()
    return loaded.bundle.runCommand(id, argv.slice(1), root)
  }
  const {execute} = await import('@oclif/core')
  await execute({dir: binUrl})
}
