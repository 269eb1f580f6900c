/**
 * Runs the hub emulator as a standalone process, for the demo and for manual poking:
 *
 *   npx tsx test/support/emulator-cli.ts [--spec spec.json] [--port N] [--blob-port N] [--log]
 *
 * The spec is a JSON HubEmulatorOptions (see emulator.ts). In JSON a file's `content` may be a string
 * (UTF-8) or `{"base64": "..."}`. Without --spec a small demo model `demo/tiny-model` is served.
 * Prints one JSON line on stdout: {"url", "blobUrl", "otherOriginUrl", "models"}; with --log every
 * finished request is printed as a JSON line on stderr. SIGINT/SIGTERM stop it cleanly.
 */
import {readFileSync} from 'node:fs'
import {HubEmulator, type EmulatorModelSpec, type HubEmulatorOptions} from './emulator.js'

const DEMO: HubEmulatorOptions = {
  models: [
    {
      id: 'demo/tiny-model',
      files: [
        {path: 'config.json', content: '{"architectures": ["DemoModel"], "hidden_size": 64}\n'},
        {path: 'README.md', content: '# tiny-model\n\nServed by the ms-resume hub emulator.\n'},
        {path: 'model.safetensors', size: 64 * 1024 * 1024},
        {path: 'tokenizer/tokenizer.json', size: 300 * 1024},
      ],
      tags: ['v1.0'],
    },
  ],
}

function usage(msg?: string): never {
  if (msg) process.stderr.write(`${msg}\n`)
  process.stderr.write('usage: emulator-cli.ts [--spec spec.json] [--port N] [--blob-port N] [--log]\n')
  process.exit(2)
}

function reviveContent(spec: HubEmulatorOptions): HubEmulatorOptions {
  const models = (spec.models ?? []).map(
    (m): EmulatorModelSpec => ({
      ...m,
      files: m.files.map((f) => {
        const c: unknown = f.content
        if (c && typeof c === 'object' && !Buffer.isBuffer(c) && typeof (c as {base64?: unknown}).base64 === 'string') {
          return {...f, content: Buffer.from((c as {base64: string}).base64, 'base64')}
        }
        return f
      }),
    }),
  )
  return {...spec, models}
}

async function main(): Promise<void> {
  const args = process.argv.slice(2)
  let opts: HubEmulatorOptions = DEMO
  let log = false
  const num = (s: string | undefined, name: string) => {
    const n = Number(s)
    if (s === undefined || !Number.isInteger(n) || n < 0 || n > 65535) usage(`bad ${name}: ${s}`)
    return n
  }
  let port: number | undefined
  let blobPort: number | undefined
  for (let i = 0; i < args.length; i++) {
    const a = args[i]
    if (a === '--spec') {
      const file = args[++i]
      if (!file) usage('--spec needs a file')
      try {
        opts = reviveContent(JSON.parse(readFileSync(file, 'utf8')) as HubEmulatorOptions)
      } catch (err) {
        usage(`cannot read spec ${file}: ${(err as Error).message}`)
      }
    } else if (a === '--port') port = num(args[++i], '--port')
    else if (a === '--blob-port') blobPort = num(args[++i], '--blob-port')
    else if (a === '--log') log = true
    else if (a === '--help' || a === '-h') usage()
    else usage(`unknown argument ${a}`)
  }
  const emu = await HubEmulator.start({
    ...opts,
    port: port ?? opts.port,
    blobPort: blobPort ?? opts.blobPort,
    onLog: log
      ? (e) => {
          const {headers, ...rest} = e
          // Never echo credentials.
          const h = {...headers}
          if (h.cookie) h.cookie = '<redacted>'
          if (h.authorization) h.authorization = '<redacted>'
          process.stderr.write(`${JSON.stringify({...rest, headers: h})}\n`)
        }
      : undefined,
  })
  process.stdout.write(
    `${JSON.stringify({
      url: emu.url,
      blobUrl: emu.blobUrl,
      otherOriginUrl: emu.otherOriginUrl,
      models: (opts.models ?? []).map((m) => m.id),
    })}\n`,
  )
  const shutdown = () => {
    void emu.stop().then(() => process.exit(0))
  }
  process.on('SIGINT', shutdown)
  process.on('SIGTERM', shutdown)
}

main().catch((err: unknown) => {
  process.stderr.write(`emulator-cli: ${(err as Error).stack ?? String(err)}\n`)
  process.exit(1)
})
