import {expect} from 'chai'
import {execFile} from 'node:child_process'
import {createHash} from 'node:crypto'
import {existsSync, readFileSync} from 'node:fs'
import fs from 'node:fs/promises'
import os from 'node:os'
import path from 'node:path'
import {fileURLToPath, pathToFileURL} from 'node:url'
import {promisify} from 'node:util'

import {
  availableSha256Engines,
  createResumableSha256,
  restoreSha256,
  type ResumableSha256,
  type SavedSha256State,
  SHA256_ENGINE_ENV,
  SHA256_FILE_READ_BYTES,
  sha256EngineName,
  sha256FileHex,
  sha256PrefixFromDisk,
} from '../../src/integrity/sha256.js'
import {nativeAddonCandidates, nativeSha256EngineId, nativeSha256Problem} from '../../src/integrity/native-addon.js'
import {wasmEngineId} from '../../src/integrity/sha256-wasm.js'
import {skipBecause} from '../support/process.js'

const execFileAsync = promisify(execFile)
const repoRoot = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..')
const sha256ModuleUrl = pathToFileURL(path.join(repoRoot, 'src', 'integrity', 'sha256.ts')).href
const MIB = 1024 * 1024

const EMPTY = 'e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855'
const ABC = 'ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad'
const TWO_BLOCK_MSG = 'abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq'
const TWO_BLOCK = '248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1'

/** Deterministic pseudo-random bytes (xorshift32), so failures are reproducible. */
function pattern(length: number, seed = 0x9e3779b9): Buffer {
  const out = Buffer.allocUnsafe(length)
  let x = seed >>> 0 || 1
  for (let i = 0; i < length; i++) {
    x ^= x << 13
    x >>>= 0
    x ^= x >>> 17
    x ^= x << 5
    x >>>= 0
    out[i] = x & 0xff
  }
  return out
}

function nodeSha256(data: Uint8Array): string {
  return createHash('sha256').update(data).digest('hex')
}

/** Feeds data in irregular chunk sizes (and some empty updates) so block boundaries fall everywhere. */
function feed(hasher: ResumableSha256, data: Uint8Array): void {
  const sizes = [1, 0, 7, 63, 64, 65, 1000, 4096 + 3, 65_536 + 11, 1_048_576 + 5]
  let at = 0
  for (let i = 0; at < data.length; i++) {
    const n = Math.min(sizes[i % sizes.length], data.length - at)
    hasher.update(data.subarray(at, at + n))
    at += n
  }
}

function roundTrip(state: SavedSha256State): SavedSha256State {
  return JSON.parse(JSON.stringify(state)) as SavedSha256State
}

async function rejection(promise: Promise<unknown>): Promise<Error & {code?: string}> {
  try {
    await promise
  } catch (error) {
    return error as Error & {code?: string}
  }
  throw new Error('expected the promise to reject')
}

const nativeId = nativeSha256EngineId()
const hashWasmVersion = (JSON.parse(readFileSync(path.join(repoRoot, 'node_modules', 'hash-wasm', 'package.json'), 'utf8')) as {version: string}).version
const engines = [
  {choice: 'native' as const, id: nativeId, stateBytes: 112},
  {choice: 'wasm' as const, id: wasmEngineId(), stateBytes: 116},
]

describe('resumable SHA-256', function () {
  let savedEnv: string | undefined
  let tmp: string

  before(async function () {
    savedEnv = process.env[SHA256_ENGINE_ENV]
    tmp = await fs.mkdtemp(path.join(os.tmpdir(), 'ms-resume-sha256-'))
  })
  beforeEach(function () {
    delete process.env[SHA256_ENGINE_ENV]
  })
  after(async function () {
    if (savedEnv === undefined) delete process.env[SHA256_ENGINE_ENV]
    else process.env[SHA256_ENGINE_ENV] = savedEnv
    await fs.rm(tmp, {recursive: true, force: true})
  })

  it('loads the native addon whenever it has been built', function () {
    const built = nativeAddonCandidates().some((file) => existsSync(file))
    if (!built) skipBecause(this, 'the native addon was not built')
    expect(nativeId, nativeSha256Problem()).to.be.a('string')
  })

  it('names its engines with their versions', function () {
    expect(wasmEngineId()).to.equal(`hash-wasm-${hashWasmVersion}`)
    if (nativeId !== null) expect(nativeId).to.equal(os.endianness() === 'LE' ? 'openssl-ctx-v1-112' : 'openssl-ctx-v1-112-be')
  })

  for (const engine of engines) {
    const suite = engine.id === null ? describe.skip : describe
    suite(`${engine.choice} engine`, function () {
      const id = engine.id as string
      const create = () => createResumableSha256({engine: engine.choice})

      it('hashes the known vectors', async function () {
        for (const [message, expected] of [['', EMPTY], ['abc', ABC], [TWO_BLOCK_MSG, TWO_BLOCK]]) {
          const hasher = await create()
          expect(hasher.engine).to.equal(id)
          hasher.update(Buffer.from(message))
          expect(hasher.offsetBytes).to.equal(message.length)
          expect(hasher.digestHex()).to.equal(expected)
        }
        const oneByteAtATime = await create()
        for (const byte of Buffer.from(TWO_BLOCK_MSG)) oneByteAtATime.update(Uint8Array.of(byte))
        expect(oneByteAtATime.digestHex()).to.equal(TWO_BLOCK)
      })

      it('matches node crypto on 1 MiB of pattern fed in uneven chunks', async function () {
        const data = pattern(MIB)
        const hasher = await create()
        feed(hasher, data)
        expect(hasher.offsetBytes).to.equal(MIB)
        expect(hasher.digestHex()).to.equal(nodeSha256(data))
      })

      it('hashes a single large update and a view at an odd byteOffset', async function () {
        const backing = pattern(9 * MIB + 13)
        const view = new Uint8Array(backing.buffer, backing.byteOffset + 3, 9 * MIB + 7)
        const hasher = await create()
        hasher.update(view)
        expect(hasher.digestHex()).to.equal(nodeSha256(view))
      })

      it('refuses to be used after digestHex()', async function () {
        const hasher = await create()
        hasher.update(Buffer.from('abc'))
        hasher.digestHex()
        expect(() => hasher.update(Buffer.from('x'))).to.throw()
        expect(() => hasher.save()).to.throw()
        expect(() => hasher.digestHex()).to.throw()
      })

      describe('save and restore', function () {
        const data = pattern(3 * MIB + 123, 42)
        const expected = nodeSha256(data)
        const offsets = [0, 1, 55, 56, 63, 64, 65, 127, 128, 129, 4095, 65_536 + 3, MIB, MIB + 7, data.length - 1, data.length]

        for (const offset of offsets) {
          it(`continues in a fresh object from offset ${offset}`, async function () {
            const first = await create()
            feed(first, data.subarray(0, offset))
            const state = roundTrip(first.save())
            expect(state.engine).to.equal(id)
            expect(state.offsetBytes).to.equal(offset)
            expect(Buffer.from(state.stateB64, 'base64')).to.have.length(engine.stateBytes)

            const restored = await restoreSha256(state)
            expect(restored, 'restoreSha256 returned null').to.not.equal(null)
            expect(restored!.engine).to.equal(id)
            expect(restored!.offsetBytes).to.equal(offset)
            feed(restored!, data.subarray(offset))
            expect(restored!.offsetBytes).to.equal(data.length)
            expect(restored!.digestHex()).to.equal(expected)

            // save() does not disturb the original.
            feed(first, data.subarray(offset))
            expect(first.digestHex()).to.equal(expected)
          })
        }

        it('survives a chain of save/restore hops', async function () {
          let hasher: ResumableSha256 = await create()
          const cuts = [1, 64, 100, 4096, 4097, MIB + 1, 2 * MIB, data.length]
          let at = 0
          for (const cut of cuts) {
            feed(hasher, data.subarray(at, cut))
            at = cut
            const restored = await restoreSha256(roundTrip(hasher.save()))
            expect(restored, `restore at ${cut}`).to.not.equal(null)
            expect(restored!.offsetBytes).to.equal(cut)
            hasher = restored!
          }
          expect(hasher.digestHex()).to.equal(expected)
        })

        it('continues in a child process, and back again', async function () {
          const dataFile = path.join(tmp, `data-${engine.choice}.bin`)
          await fs.writeFile(dataFile, data)
          const parent = await create()
          parent.update(data.subarray(0, MIB + 7))
          const upTo = 2 * MIB + 61
          const out = await runChild(['continue', JSON.stringify(parent.save()), dataFile, String(upTo)])
          const childState = JSON.parse(out) as SavedSha256State
          expect(childState.engine).to.equal(id)
          expect(childState.offsetBytes).to.equal(upTo)
          const back = await restoreSha256(childState)
          expect(back, 'state from the child did not restore').to.not.equal(null)
          back!.update(data.subarray(upTo))
          expect(back!.digestHex()).to.equal(expected)
        })
      })

      describe('restoring bad states', function () {
        let good: SavedSha256State
        const data = pattern(1000, 7)

        before(async function () {
          const hasher = await create()
          hasher.update(data)
          good = roundTrip(hasher.save())
          const check = await restoreSha256(good)
          expect(check, 'the untouched state must restore').to.not.equal(null)
        })

        const withBytes = (edit: (bytes: Buffer) => void): SavedSha256State => {
          const bytes = Buffer.from(good.stateB64, 'base64')
          edit(bytes)
          return {...good, stateB64: bytes.toString('base64')}
        }

        it('returns null for a state of another engine', async function () {
          for (const other of engines) {
            if (other.choice === engine.choice) continue
            expect(await restoreSha256({...good, engine: other.id ?? 'openssl-ctx-v1-112'}), `labelled ${other.id}`).to.equal(null)
          }
          expect(await restoreSha256({...good, engine: 'hash-wasm-0.0.1'})).to.equal(null)
          expect(await restoreSha256({...good, engine: 'openssl-ctx-v0-112'})).to.equal(null)
          expect(await restoreSha256({...good, engine: ''})).to.equal(null)
        })

        it('returns null when the environment forces the other engine', async function () {
          process.env[SHA256_ENGINE_ENV] = engine.choice === 'native' ? 'wasm' : 'native'
          expect(await restoreSha256(good)).to.equal(null)
          process.env[SHA256_ENGINE_ENV] = engine.choice
          expect(await restoreSha256(good)).to.not.equal(null)
        })

        it('returns null for garbage stateB64', async function () {
          const raw = Buffer.from(good.stateB64, 'base64')
          const garbage = [
            '', 'not base64!!', '====', 'AAAA', ' ' + good.stateB64, good.stateB64.slice(0, -4), good.stateB64 + 'AAAA',
            good.stateB64.slice(0, 20) + '\n' + good.stateB64.slice(20),
            pattern(raw.length, 99).toString('base64'),
            Buffer.alloc(raw.length).toString('base64'),
            Buffer.concat([raw, Buffer.alloc(1)]).toString('base64'),
            raw.subarray(0, raw.length - 1).toString('base64'),
          ]
          for (const stateB64 of garbage) {
            expect(await restoreSha256({...good, stateB64}), JSON.stringify(stateB64)).to.equal(null)
          }
        })

        it('returns null when offsetBytes disagrees with the state or is not a byte count', async function () {
          for (const offsetBytes of [999, 1001, 0, -1000, 1000.5, Number.NaN, Infinity, 2 ** 60]) {
            expect(await restoreSha256({...good, offsetBytes}), String(offsetBytes)).to.equal(null)
          }
          expect(await restoreSha256({...good, offsetBytes: '1000'} as unknown as SavedSha256State)).to.equal(null)
        })

        it('returns null for anything that is not a saved state', async function () {
          for (const value of [null, undefined, 42, 'state', [], {}, {engine: id}, {...good, stateB64: 12}]) {
            expect(await restoreSha256(value as unknown as SavedSha256State), JSON.stringify(value)).to.equal(null)
          }
        })

        it('returns null for a damaged engine state', async function () {
          const damaged = engine.choice === 'native'
            ? [
                // SHA256_CTX: h[8] @0, Nl @32, Nh @36, data[16] @40, num @104, md_len @108
                withBytes((b) => b.writeUInt32LE(200, 104)), // num outside the block: would overflow in OpenSSL
                withBytes((b) => b.writeUInt32LE(0xffffffff, 104)),
                withBytes((b) => b.writeUInt32LE(28, 108)), // a SHA-224 context
                withBytes((b) => b.writeUInt32LE(b.readUInt32LE(32) + 8, 32)), // bit count no longer matches num
                withBytes((b) => b.writeUInt32LE(b.readUInt32LE(32) + 512, 32)), // one block more than offsetBytes
                withBytes((b) => b.writeUInt32LE(1, 36)),
              ]
            : [
                // fingerprint[4], message[64], length u64 @68, hash[8] @76, digest_length @108
                withBytes((b) => { b[0] ^= 0xff }),
                withBytes((b) => b.writeUInt32LE(1001, 68)),
                withBytes((b) => b.writeUInt32LE(1, 72)),
                withBytes((b) => b.writeUInt32LE(28, 108)),
              ]
          for (const [i, state] of damaged.entries()) {
            expect(await restoreSha256(state), `damage #${i}`).to.equal(null)
          }
        })
      })
    })
  }

  describe('engine selection', function () {
    it('prefers native when it is available', async function () {
      const expected = nativeId ?? wasmEngineId()
      expect(sha256EngineName()).to.equal(expected)
      expect((await createResumableSha256()).engine).to.equal(expected)
      expect(availableSha256Engines()[0]).to.equal(expected)
    })

    it('is forced to wasm by MS_RESUME_SHA256_ENGINE', async function () {
      process.env[SHA256_ENGINE_ENV] = 'wasm'
      expect(sha256EngineName()).to.equal(wasmEngineId())
      expect((await createResumableSha256()).engine).to.equal(wasmEngineId())
      expect((await createResumableSha256({engine: 'auto'})).engine).to.equal(wasmEngineId())
      expect(availableSha256Engines()).to.deep.equal([wasmEngineId()])
    })

    it('is forced to native by MS_RESUME_SHA256_ENGINE, and fails loudly without the addon', async function () {
      process.env[SHA256_ENGINE_ENV] = 'native'
      if (nativeId === null) {
        expect((await rejection(createResumableSha256())).code).to.equal('E_LOCAL')
        return
      }
      expect(sha256EngineName()).to.equal(nativeId)
      expect((await createResumableSha256()).engine).to.equal(nativeId)
      expect(availableSha256Engines()).to.deep.equal([nativeId])
    })

    it('lets an explicit engine option win over the environment', async function () {
      process.env[SHA256_ENGINE_ENV] = 'native'
      expect((await createResumableSha256({engine: 'wasm'})).engine).to.equal(wasmEngineId())
      expect(sha256EngineName({engine: 'wasm'})).to.equal(wasmEngineId())
    })

    it('rejects an unknown engine name but restore still never throws', async function () {
      process.env[SHA256_ENGINE_ENV] = 'sha-nope'
      expect((await rejection(createResumableSha256())).code).to.equal('E_USAGE')
      expect(() => sha256EngineName()).to.throw()
      const saved = (await createResumableSha256({engine: 'wasm'})).save()
      const restored = await restoreSha256(saved)
      expect(restored?.engine).to.equal(wasmEngineId())
    })

    it('reads MS_RESUME_SHA256_ENGINE in a real child process', async function () {
      expect((await runChild(['engine'], {[SHA256_ENGINE_ENV]: 'wasm'})).trim()).to.equal(wasmEngineId())
      expect((await runChild(['engine'], {[SHA256_ENGINE_ENV]: ''})).trim()).to.equal(nativeId ?? wasmEngineId())
    })
  })

  describe('file helpers', function () {
    const size = 2 * SHA256_FILE_READ_BYTES + 12_345
    let file: string
    let data: Buffer

    before(async function () {
      data = pattern(size, 3)
      file = path.join(tmp, 'file.bin')
      await fs.writeFile(file, data)
    })

    it('sha256FileHex hashes a whole file', async function () {
      expect(await sha256FileHex(file)).to.equal(nodeSha256(data))
      const empty = path.join(tmp, 'empty.bin')
      await fs.writeFile(empty, '')
      expect(await sha256FileHex(empty)).to.equal(EMPTY)
    })

    it('sha256FileHex hashes the byte range [start, end)', async function () {
      const ranges: Array<[number, number]> = [
        [0, 1], [1, 64], [63, 65], [5, SHA256_FILE_READ_BYTES + 9], [SHA256_FILE_READ_BYTES - 1, size], [size - 1, size], [777, 777],
      ]
      for (const [start, end] of ranges) {
        expect(await sha256FileHex(file, {start, end}), `[${start}, ${end})`).to.equal(nodeSha256(data.subarray(start, end)))
      }
      expect(await sha256FileHex(file, {start: 100})).to.equal(nodeSha256(data.subarray(100)))
      expect(await sha256FileHex(file, {end: 100})).to.equal(nodeSha256(data.subarray(0, 100)))
    })

    it('sha256FileHex rejects a range past the end, bad ranges, and missing files', async function () {
      const short = await rejection(sha256FileHex(file, {start: 10, end: size + 1}))
      expect(short.code).to.equal('E_SIZE')
      expect(await rejection(sha256FileHex(file, {start: 10, end: 9}))).to.be.instanceOf(RangeError)
      expect(await rejection(sha256FileHex(file, {start: -1}))).to.be.instanceOf(RangeError)
      expect((await rejection(sha256FileHex(path.join(tmp, 'missing.bin')))).code).to.equal('ENOENT')
    })

    it('sha256FileHex stops on abort', async function () {
      const before = new AbortController()
      before.abort()
      expect((await rejection(sha256FileHex(file, {signal: before.signal}))).name).to.equal('AbortError')
      const during = new AbortController()
      const pending = sha256FileHex(file, {signal: during.signal})
      during.abort()
      expect((await rejection(pending)).name).to.equal('AbortError')
    })

    for (const engine of engines) {
      const test = engine.id === null ? it.skip : it
      test(`sha256PrefixFromDisk rebuilds a ${engine.choice} state from the file`, async function () {
        const n = SHA256_FILE_READ_BYTES + 5
        const fresh = await createResumableSha256({engine: engine.choice})
        const hasher = await sha256PrefixFromDisk(file, n, fresh)
        expect(hasher).to.equal(fresh)
        expect(hasher.offsetBytes).to.equal(n)
        const restored = await restoreSha256(roundTrip(hasher.save()))
        expect(restored).to.not.equal(null)
        restored!.update(data.subarray(n))
        expect(restored!.digestHex()).to.equal(nodeSha256(data))
      })

      test(`sha256PrefixFromDisk catches a ${engine.choice} hasher up from its own offset`, async function () {
        const hasher = await createResumableSha256({engine: engine.choice})
        hasher.update(data.subarray(0, 1001))
        await sha256PrefixFromDisk(file, size, hasher)
        expect(hasher.offsetBytes).to.equal(size)
        expect(hasher.digestHex()).to.equal(nodeSha256(data))
      })
    }

    it('sha256PrefixFromDisk rejects a file shorter than the prefix and a hasher already past it', async function () {
      const hasher = await createResumableSha256()
      expect((await rejection(sha256PrefixFromDisk(file, size + 10, hasher))).code).to.equal('E_SIZE')
      const ahead = await createResumableSha256()
      ahead.update(data.subarray(0, 50))
      expect(await rejection(sha256PrefixFromDisk(file, 49, ahead))).to.be.instanceOf(RangeError)
    })
  })

  /** Runs the child script below in a real node process (through tsx) and returns its stdout. */
  async function runChild(args: string[], env: Record<string, string> = {}): Promise<string> {
    const script = path.join(tmp, 'child.mts')
    if (!existsSync(script)) await fs.writeFile(script, CHILD_SCRIPT.replace('__SHA256_MODULE__', sha256ModuleUrl))
    const {stdout} = await execFileAsync(process.execPath, ['--import', 'tsx', script, ...args], {
      cwd: repoRoot,
      env: {...process.env, ...env},
      maxBuffer: 1024 * 1024,
    })
    return stdout
  }
})

const CHILD_SCRIPT = `
import {readFileSync} from 'node:fs'
import {restoreSha256, sha256EngineName} from '__SHA256_MODULE__'

const [mode, ...rest] = process.argv.slice(2)
if (mode === 'engine') {
  console.log(sha256EngineName())
} else if (mode === 'continue') {
  const [stateJson, dataFile, upTo] = rest
  const state = JSON.parse(stateJson)
  const hasher = await restoreSha256(state)
  if (!hasher) {
    console.error('restore failed in the child')
    process.exit(3)
  }
  const data = readFileSync(dataFile)
  hasher.update(data.subarray(state.offsetBytes, Number(upTo)))
  console.log(JSON.stringify(hasher.save()))
} else {
  process.exit(2)
}
`
