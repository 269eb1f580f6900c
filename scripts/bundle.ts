/**
 * Writes dist/ms-resume.cjs, the bundle launch.ts runs commands from (our compiled code and its
 * dependencies in one CommonJS file), and its V8 code cache. `npm run build` runs it after tsc.
 * Measured on a no-op pull (2 cores, Node 20): 0.48 s from ~100 ESM files and node_modules, about
 * 0.25 s from the bundle with the code cache. Node 22 has module.enableCompileCache() for ESM;
 * Node 20 can only cache a script compiled through vm, hence one CommonJS file.
 */
import {randomBytes} from 'node:crypto'
import fs from 'node:fs/promises'
import path from 'node:path'
import {fileURLToPath} from 'node:url'
import vm from 'node:vm'

import {build, type Plugin} from 'esbuild'

import {BUILD_LINE_PREFIX, BUNDLE_FILE, CODE_CACHE_FILE, wrapBundle} from '../src/cli/launch.js'

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..')
const dist = path.join(root, 'dist')
const bundlePath = path.join(dist, BUNDLE_FILE)

/**
 * `import.meta.url` of each of our modules becomes the URL of its compiled file in dist/, so what is
 * found relative to it (the native addon, the verify worker script, hash-wasm's package.json) is
 * found from the bundle too. CommonJS has no import.meta: esbuild would leave it empty. The helper
 * is defined outside every module: a module's own `require` (native-addon.ts has one) must not
 * shadow the one it uses.
 */
const META_URL_HELPER = '__msResumeModuleUrl'
const metaUrlOfEachFile: Plugin = {
  name: 'import-meta-url',
  setup(b) {
    b.onLoad({filter: /\/dist\/src\/.*\.js$/}, async (args) => {
      const text = await fs.readFile(args.path, 'utf8')
      const rel = path.relative(dist, args.path).split(path.sep).join('/')
      return {contents: text.replaceAll('import.meta.url', `${META_URL_HELPER}(${JSON.stringify(rel)})`), loader: 'js'}
    })
  },
}

/**
 * Our code takes two classes from undici (Agent, EnvHttpProxyAgent; http-body.ts); undici's index
 * also loads fetch, WebSocket, EventSource, cookies and caches: 40 ms of a resume's start-up. In
 * the bundle `undici` is those two classes.
 */
const undiciDispatchersOnly: Plugin = {
  name: 'undici-dispatchers-only',
  setup(b) {
    b.onResolve({filter: /^undici$/}, (args) => (args.importer.includes(`${path.sep}dist${path.sep}src${path.sep}`) ? {path: 'undici-dispatchers', namespace: 'msr'} : undefined))
    b.onLoad({filter: /^undici-dispatchers$/, namespace: 'msr'}, () => ({
      // As undici's index does: the request API on every dispatcher (its proxy agent tunnels with connect()).
      contents: `Object.assign(require('undici/lib/dispatcher/dispatcher.js').prototype, require('undici/lib/api/index.js'))
module.exports = {Agent: require('undici/lib/dispatcher/agent.js'), EnvHttpProxyAgent: require('undici/lib/dispatcher/env-http-proxy-agent.js')}`,
      loader: 'js',
      resolveDir: root,
    }))
  },
}

await fs.rm(path.join(dist, CODE_CACHE_FILE), {force: true})
const buildId = randomBytes(16).toString('hex')
await build({
  entryPoints: [path.join(dist, 'src', 'cli', 'run-command.js')],
  outfile: bundlePath,
  bundle: true,
  platform: 'node',
  format: 'cjs',
  target: 'node20',
  // `error.constructor.name === 'ExitError'` (base-command.ts) must survive the bundling.
  keepNames: true,
  // Required only by oclif's development mode (ts-node/tsx), never by a built CLI.
  external: ['typescript'],
  plugins: [metaUrlOfEachFile, undiciDispatchersOnly],
  banner: {js: `${BUILD_LINE_PREFIX}${buildId}`},
  // A declaration (hoisted) at the end: code before "use strict" would turn strict mode off.
  footer: {js: `function ${META_URL_HELPER}(rel) { return require('node:url').pathToFileURL(require('node:path').join(__dirname, rel)).href }`},
  logLevel: 'warning',
})
const source = await fs.readFile(bundlePath, 'utf8')
const script = new vm.Script(wrapBundle(source), {filename: bundlePath})
await fs.writeFile(path.join(dist, CODE_CACHE_FILE), Buffer.concat([Buffer.from(buildId, 'latin1'), script.createCachedData()]))
process.stdout.write(`wrote ${path.relative(process.cwd(), bundlePath)} (${(source.length / 1024).toFixed(0)} KiB) and its code cache\n`)
