/**
 * Writes dist/ms-resume.cjs, the bundle launch.ts runs commands from (our compiled code and its
 * dependencies in one CommonJS file), and its V8 code cache. `npm run build` runs it after tsc.
 * Measured on a no-op pull (2 cores, Node 20): 0.48 s from ~100 ESM files and node_modules, about
 * 0.25 s from the bundle with the code cache. Node 22 has module.enableCompileCache() for ESM;
 * Node 20 can only cache a script compiled through vm, hence one CommonJS file.
 */
import {spawnSync} from 'node:child_process'
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
/**
 * A module required on first use: `__msResumeLazy(() => require(x))` is an object whose properties
 * are the module's, loaded at the first property read (defined in the bundle's footer). Used for
 * axios's https and http2 and for oclif's modules a command's run seldom needs (OCLIF_LAZY).
 */
const LAZY_HELPER = '__msResumeLazy'
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
const UNDICI_DISPATCHERS = `Object.assign(require('undici/lib/dispatcher/dispatcher.js').prototype, require('undici/lib/api/index.js'))
module.exports = {Agent: require('undici/lib/dispatcher/agent.js'), EnvHttpProxyAgent: require('undici/lib/dispatcher/env-http-proxy-agent.js')}`
/**
 * Those two classes are a bundle of their own, required from the main one when first asked for:
 * the bodies travel on our own reader (raw-http.ts), undici only through a proxy or when that
 * reader declines a reply. In the main bundle they were 0.5 MB that every start-up read and made
 * a string of. (As undici's index does: the request API on every dispatcher, which its proxy agent
 * tunnels with.)
 */
const UNDICI_BUNDLE_FILE = 'ms-resume-undici.cjs'
const undiciDispatchersOnly: Plugin = {
  name: 'undici-dispatchers-only',
  setup(b) {
    b.onResolve({filter: /^undici$/}, (args) => (args.importer.includes(`${path.sep}dist${path.sep}src${path.sep}`) ? {path: 'undici-dispatchers', namespace: 'msr'} : undefined))
    b.onLoad({filter: /^undici-dispatchers$/, namespace: 'msr'}, () => ({
      contents: `module.exports = require(require('node:path').join(__dirname, ${JSON.stringify(UNDICI_BUNDLE_FILE)}))`,
      loader: 'js',
      resolveDir: root,
    }))
  },
}

/**
 * axios (the hub API, http.ts) as its Node build, one CommonJS file (from an ESM importer esbuild
 * would take its ESM sources by the package's exports), required on the first API call (http.ts
 * imports it lazily). Its initialisation is kept to axios itself: at load it read the global
 * FormData (a getter that loads Node's own undici, and with it tls), probed fetch support, and
 * required form-data (with mime-db), https-proxy-agent (with debug) and follow-redirects, all for
 * what getJson does not use (multipart bodies, proxies, redirects, the fetch adapter). Bundled as
 * is, axios added 135 ms to a no-op pull (0.36 -> 0.49 s, hyperfine, 2 cores) and 9 MiB of RSS;
 * with each of those loaded at its first use (the same behaviour then), about 20 ms of CPU and
 * 3 MiB. An axios whose code no longer has a patched line exactly once fails the build rather than
 * being bundled unpatched.
 */
const AXIOS_NODE_BUILD = path.join(root, 'node_modules', 'axios', 'dist', 'node', 'axios.cjs')
const IS_AXIOS_NODE_BUILD = /[/\\]axios[/\\]dist[/\\]node[/\\]axios\.cjs$/
const AXIOS_PATCHES: Array<[string, string]> = [
  // The fetch adapter is probed when (if ever) it is asked for, not at load: its probe builds Requests.
  ['\ngetFetch();\n', '\n'],
  // The global FormData (a getter that loads Node's bundled undici) read when a body is tested.
  ["const FormDataCtor = typeof G.FormData !== 'undefined' ? G.FormData : undefined;", "const formDataCtor = () => (typeof G.FormData !== 'undefined' ? G.FormData : undefined);"],
  ['  if (FormDataCtor && thing instanceof FormDataCtor) return true;', '  const FormDataCtor = formDataCtor();\n  if (FormDataCtor && thing instanceof FormDataCtor) return true;'],
  // Node's http2 (three modules, ~3 ms) loaded on the first HTTP/2 request: axios only calls
  // http2.connect and reads http2.constants inside its HTTP/2 transport, which getJson never asks for.
  ["var http2 = require('http2');", `var http2 = ${LAZY_HELPER}(() => require('http2'));`],
  // Node's TLS stack on the first https: request (http.ts's own agent and the bodies' reader load
  // it the same way, tls-on-demand.ts): axios reads https.globalAgent and https.request in calls only.
  ["var https = require('https');", `var https = ${LAZY_HELPER}(() => require('https'));`],
]
/**
 * Classes (constructed, or tested with instanceof) and objects axios takes from these modules,
 * required on first use from node_modules, resolved as axios itself resolves them: they are not in
 * the bundle at all (form-data and mime-db alone were 250 KB of it, read and kept by every run).
 */
const AXIOS_DEPENDENCY = (name: string) => `let real; const load = () => (real ??= require('node:module').createRequire(require.resolve('axios'))(${JSON.stringify(name)}))`
/** A module whose export is a class: constructed and tested with instanceof through the real one. */
const lazyClass = (name: string, className: string) => `${AXIOS_DEPENDENCY(name)}
module.exports = class ${className} { constructor(...a) { return new (load())(...a) } static [Symbol.hasInstance](x) { return x instanceof load() } }`
const LAZY_FOR_AXIOS: Record<string, string> = {
  'form-data': lazyClass('form-data', 'FormData'),
  'https-proxy-agent': lazyClass('https-proxy-agent', 'HttpsProxyAgent'),
  'follow-redirects': `${AXIOS_DEPENDENCY('follow-redirects')}
const transport = (k) => ({request: (...a) => load()[k].request(...a), get: (...a) => load()[k].get(...a)})
module.exports = {http: transport('http'), https: transport('https')}`,
}
const axiosNodeBuild: Plugin = {
  name: 'axios-node-build',
  setup(b) {
    b.onResolve({filter: /^axios$/}, () => ({path: AXIOS_NODE_BUILD}))
    b.onLoad({filter: IS_AXIOS_NODE_BUILD}, async (args) => ({contents: patched(await fs.readFile(args.path, 'utf8'), AXIOS_PATCHES, args.path), loader: 'js'}))
    const names = Object.keys(LAZY_FOR_AXIOS).join('|')
    b.onResolve({filter: new RegExp(`^(${names})$`)}, (args) => (IS_AXIOS_NODE_BUILD.test(args.importer) ? {path: args.path, namespace: 'msr-lazy'} : undefined))
    b.onLoad({filter: /.*/, namespace: 'msr-lazy'}, (args) => ({contents: LAZY_FOR_AXIOS[args.path], loader: 'js', resolveDir: root}))
  },
}

/** Lines of oclif changed in the bundle, keyed by file under @oclif/core/lib/ (see `patched`). */
const OCLIF_PATCHES: Record<string, Array<[string, string]>> = {
  // The debug package (with tty and supports-color: 5 ms) only when DEBUG asks for output: without
  // it, debug() makes loggers that print nothing, and nothing in a command's run enables one later.
  'logger.js': [['    const debug = (0, debug_1.default)(namespace);', '    const debug = process.env.DEBUG ? (0, debug_1.default)(namespace) : () => {};']],
}

/**
 * Modules of oclif a command's run needs only on some paths, required on first use (LAZY_HELPER):
 * its Config (run-command.ts gives a command the little it reads, runConfig: Config.load's sort of
 * the commands alone cost 8 ms, its first localeCompare setting up ICU's collation), help (only for
 * --help, which oclif itself handles outside the bundle), ux (spinners, JSON colouring), and what
 * error rendering uses (wrapping, indenting, stack cleaning, colours) when an error is printed.
 * Loaded eagerly they were ~30 ms of every start-up: config.js alone pulled in its plugin loader,
 * ejs, tinyglobby, fdir, picomatch, minimatch and is-wsl. Keyed by file under @oclif/core/lib/.
 */
const OCLIF_LAZY: Record<string, string[]> = {
  'command.js': ['./config', './ux'],
  'flags.js': ['./help'],
  'errors/handle.js': ['../help/index'],
  'help/util.js': ['ejs'],
  'errors/errors/cli.js': ['clean-stack', 'indent-string', 'wrap-ansi', '../../screen', '../../ux/theme'],
  'errors/errors/pretty-print.js': ['indent-string', 'wrap-ansi', '../../screen'],
  'parser/parse.js': ['node:readline'],
  'parser/help.js': ['../ux'],
  'parser/errors.js': ['../ux/list', '../ux/theme'],
  'logger.js': ['debug'],
}
/**
 * `const x = require("spec")` (bare, or through TypeScript's __importDefault/__importStar) made a
 * module whose properties are the real one's, loaded at the first property read. Each must be
 * found exactly once, or the build fails.
 */
function lazyRequires(text: string, specs: string[], file: string): string {
  for (const spec of specs) {
    const quoted = JSON.stringify(spec).replaceAll(/[.*+?^${}()|[\]\\]/g, '\\$&')
    const statement = new RegExp(`^(const|var) (\\w+) = ((?:__importDefault\\(|__importStar\\()?require\\(${quoted}\\)\\)?);$`, 'gm')
    const found = text.match(statement)?.length ?? 0
    if (found !== 1) throw new Error(`scripts/bundle.ts: ${file} requires ${spec} ${found} times as a statement, not once; review OCLIF_LAZY`)
    text = text.replace(statement, `$1 $2 = ${LAZY_HELPER}(() => $3);`)
  }
  return text
}
const OCLIF_LIB = /[/\\]@oclif[/\\]core[/\\]lib[/\\](.+\.js)$/
const oclifTrimmed: Plugin = {
  name: 'oclif-trimmed',
  setup(b) {
    b.onLoad({filter: OCLIF_LIB}, async (args) => {
      const rel = OCLIF_LIB.exec(args.path)![1].split(path.sep).join('/')
      let text = await fs.readFile(args.path, 'utf8')
      if (OCLIF_PATCHES[rel]) text = patched(text, OCLIF_PATCHES[rel], args.path)
      if (OCLIF_LAZY[rel]) text = lazyRequires(text, OCLIF_LAZY[rel], args.path)
      return {contents: text, loader: 'js'}
    })
  },
}

/** `text` with each `from` (found exactly once, or the build fails) replaced by its `to`. */
function patched(text: string, patches: Array<[string, string]>, file: string): string {
  for (const [from, to] of patches) {
    if (text.split(from).length !== 2) throw new Error(`scripts/bundle.ts: ${file} no longer has ${JSON.stringify(from)} once; review its patches`)
    text = text.replace(from, () => to)
  }
  return text
}

/** What both bundles are: one CommonJS file for Node 20, whitespace and syntax minified. */
const BUNDLE_OPTIONS = {
  bundle: true,
  platform: 'node',
  format: 'cjs',
  target: 'node20',
  // `error.constructor.name === 'ExitError'` (base-command.ts) must survive the bundling.
  keepNames: true,
  // Whitespace and syntax only (2.3 -> 1.6 MB): reading the bundle, making a string of it and
  // parsing each function on its first call all scale with its size; 11 ms of a no-op pull (40
  // runs interleaved: median 278 -> 265 ms). Identifiers stay, for stack traces under DEBUG.
  minifyWhitespace: true,
  minifySyntax: true,
  logLevel: 'warning',
} as const

await fs.rm(path.join(dist, CODE_CACHE_FILE), {force: true})
await build({
  ...BUNDLE_OPTIONS,
  stdin: {contents: UNDICI_DISPATCHERS, resolveDir: root, sourcefile: 'undici-dispatchers.cjs', loader: 'js'},
  outfile: path.join(dist, UNDICI_BUNDLE_FILE),
})
const buildId = randomBytes(16).toString('hex')
await build({
  ...BUNDLE_OPTIONS,
  entryPoints: [path.join(dist, 'src', 'cli', 'run-command.js')],
  outfile: bundlePath,
  // typescript: required only by oclif's development mode (ts-node/tsx), never by a built CLI.
  // hash-wasm: only where the native engine is not built (or is refused), from node_modules then:
  // its every algorithm's wasm as text was 0.28 MB of the bundle each start-up read.
  external: ['typescript', 'hash-wasm'],
  plugins: [metaUrlOfEachFile, undiciDispatchersOnly, axiosNodeBuild, oclifTrimmed],
  banner: {js: `${BUILD_LINE_PREFIX}${buildId}`},
  // A declaration (hoisted) at the end: code before "use strict" would turn strict mode off.
  footer: {
    js: `function ${META_URL_HELPER}(rel) { return require('node:url').pathToFileURL(require('node:path').join(__dirname, rel)).href }
function ${LAZY_HELPER}(load) { let real; const get = () => (real ??= load()); return new Proxy({}, {get: (_, key) => get()[key], has: (_, key) => key in get(), ownKeys: () => Reflect.ownKeys(get()), getOwnPropertyDescriptor: (_, key) => { const d = Reflect.getOwnPropertyDescriptor(get(), key); return d && {...d, configurable: true} }}) }`,
  },
  // LAZY_FOR_AXIOS resolves axios's own dependencies at run time, from where axios is installed.
  logOverride: {'require-resolve-not-external': 'silent'},
})
// ASCII only (launch.ts reads it as Latin-1): esbuild escapes strings and identifiers itself but
// leaves comments and regular expression literals as they are. A \uXXXX escape means the same
// character in both (a surrogate pair's two halves too); in a comment it is only text.
// After a backslash the escape would mean something else: such a bundle fails the build.
const bundled = await fs.readFile(bundlePath, 'utf8')
if (/\\[^\0-\x7f]/.test(bundled)) throw new Error('scripts/bundle.ts: the bundle has an escaped non-ASCII character; make it ASCII another way')
const source = bundled.replace(/[^\0-\x7f]/g, (c) => `\\u${c.charCodeAt(0).toString(16).padStart(4, '0')}`)
await fs.writeFile(bundlePath, source)
const script = new vm.Script(wrapBundle(source), {filename: bundlePath})
await fs.writeFile(path.join(dist, CODE_CACHE_FILE), Buffer.concat([Buffer.from(buildId, 'latin1'), script.createCachedData()]))
process.stdout.write(`wrote ${path.relative(process.cwd(), bundlePath)} (${(source.length / 1024).toFixed(0)} KiB) and its code cache\n`)
// The cache above holds the top level only; train-code-cache.ts replaces it with one made after
// a no-op pull ran (a fresh process: V8's default flags). Should that fail, this one stays.
const training = spawnSync(process.execPath, [path.join(dist, 'scripts', 'train-code-cache.js')], {stdio: ['ignore', 'inherit', 'pipe'], encoding: 'utf8', timeout: 120_000})
if (training.status !== 0) {
  const lines = training.stderr.trim().split('\n')
  const why = training.error?.message ?? (lines.reverse().find((line) => /error/i.test(line)) ?? lines[0]) ?? `exit ${training.status ?? training.signal}`
  process.stderr.write(`scripts/bundle.ts: the code cache was not trained (${why}); the untrained one stays (start-up ~15 ms slower)\n`)
}
