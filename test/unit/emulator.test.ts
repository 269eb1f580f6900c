import {expect} from 'chai'
import crypto from 'node:crypto'
import http from 'node:http'
import net from 'node:net'
import zlib from 'node:zlib'
import {HubEmulator, deterministicBytes, type HubEmulatorOptions} from '../support/emulator.js'

const GiB = 1024 ** 3
const REPO = 'acme/tiny.model'
const BIG = 'acme/huge'

interface Reply {
  status: number
  headers: http.IncomingHttpHeaders
  body: Buffer
  complete: boolean
}

/** node:http GET without automatic decompression or redirects; resolves even if the body is cut. */
function get(url: string, headers: Record<string, string> = {}, method = 'GET'): Promise<Reply> {
  return new Promise((resolve, reject) => {
    const req = http.request(url, {method, headers, agent: false}, (res) => {
      const chunks: Buffer[] = []
      res.on('data', (c: Buffer) => chunks.push(c))
      res.on('error', () => {})
      res.on('close', () =>
        resolve({status: res.statusCode ?? 0, headers: res.headers, body: Buffer.concat(chunks), complete: res.complete}),
      )
    })
    req.on('error', reject)
    req.end()
  })
}

/** Raw HTTP/1.1 exchange over a socket: returns everything the server sent until it closed. */
function rawGet(url: string, headers: Record<string, string> = {}): Promise<Buffer> {
  const u = new URL(url)
  return new Promise((resolve, reject) => {
    const s = net.connect(Number(u.port), u.hostname)
    const chunks: Buffer[] = []
    s.on('data', (c) => chunks.push(c))
    s.on('error', reject)
    s.on('close', () => resolve(Buffer.concat(chunks)))
    let head = `GET ${u.pathname}${u.search} HTTP/1.1\r\nHost: ${u.host}\r\nConnection: close\r\n`
    for (const [k, v] of Object.entries(headers)) head += `${k}: ${v}\r\n`
    s.write(`${head}\r\n`)
  })
}

function splitRaw(raw: Buffer): {head: string; body: Buffer} {
  const i = raw.indexOf('\r\n\r\n')
  return {head: raw.subarray(0, i).toString('latin1'), body: raw.subarray(i + 4)}
}

function downloadUrl(emu: HubEmulator, repo: string, path: string, rev = 'master'): string {
  const q = new URLSearchParams({Revision: rev, FilePath: path})
  return `${emu.url}/api/v1/models/${repo}/repo?${q.toString()}`
}

async function blobLocation(emu: HubEmulator, repo: string, path: string): Promise<string> {
  const r = await get(downloadUrl(emu, repo, path))
  expect(r.status).to.equal(302)
  return String(r.headers.location)
}

const sha = (b: Buffer) => crypto.createHash('sha256').update(b).digest('hex')

const SPEC: HubEmulatorOptions = {
  models: [
    {
      id: REPO,
      branches: ['dev'],
      tags: ['v1.0'],
      files: [
        {path: 'config.json', content: '{"a": 1}\n'},
        {path: 'weights/model-00001.safetensors', size: 3 * 1024 * 1024 + 7},
        {path: 'weights/sub dir/notes.txt', size: 1000, seed: 42},
        {path: 'wrong.bin', size: 4096, listedSha256: '0'.repeat(64), listedSize: 4000},
      ],
    },
    {id: BIG, files: [{path: 'model.gguf', size: 5 * GiB, listedSha256: 'f'.repeat(64)}]},
  ],
}

describe('hub emulator', function () {
  this.timeout(10_000)
  let emu: HubEmulator

  beforeEach(async () => {
    emu = await HubEmulator.start(SPEC)
  })
  afterEach(async () => {
    await emu.stop()
  })

  describe('API routes', () => {
    it('answers the probe, revisions, and 404 envelopes', async () => {
      const probe = await fetch(`${emu.url}/api/v1/models/${REPO}`)
      expect(probe.status).to.equal(200)
      const pj = (await probe.json()) as Record<string, unknown>
      expect(pj).to.include({Code: 200, Message: 'success', Success: true})
      expect(pj.RequestId).to.match(/^[0-9a-f-]{36}$/)

      const rev = (await (await fetch(`${emu.url}/api/v1/models/${REPO}/revisions`)).json()) as {
        Data: {RevisionMap: {Branches: Array<{Revision: string; CreatedAt: number}>; Tags: Array<{Revision: string}>}}
      }
      expect(rev.Data.RevisionMap.Branches.map((b) => b.Revision)).to.deep.equal(['master', 'dev'])
      expect(rev.Data.RevisionMap.Branches[0].CreatedAt).to.be.a('number')
      expect(rev.Data.RevisionMap.Tags.map((b) => b.Revision)).to.deep.equal(['v1.0'])

      const missing = await fetch(`${emu.url}/api/v1/models/acme/nope/revisions`)
      expect(missing.status).to.equal(404)
      expect(((await missing.json()) as {Code: number; Success: boolean}).Code).to.equal(404)

      const badRev = await fetch(`${emu.url}/api/v1/models/${REPO}/repo/files?Revision=nope&Recursive=True`)
      expect(badRev.status).to.equal(404)
      expect(((await badRev.json()) as {Code: number}).Code).to.equal(404)
      const badFile = await get(downloadUrl(emu, REPO, 'absent.bin'))
      expect(badFile.status).to.equal(404)
      expect(JSON.parse(badFile.body.toString()).Code).to.equal(404)
    })

    it('lists blobs with every field, tree entries, .gitattributes, Recursive and Root', async () => {
      const res = await fetch(`${emu.url}/api/v1/models/${REPO}/repo/files?Revision=master&Recursive=True`)
      const body = (await res.json()) as {Code: number; Data: {Files: Array<Record<string, unknown>>}}
      expect(body.Code).to.equal(200)
      const files = body.Data.Files
      const byPath = new Map(files.map((f) => [f.Path as string, f]))
      expect([...byPath.keys()].sort()).to.deep.equal(
        [
          '.gitattributes',
          'config.json',
          'weights',
          'weights/model-00001.safetensors',
          'weights/sub dir',
          'weights/sub dir/notes.txt',
          'wrong.bin',
        ].sort(),
      )
      const w = byPath.get('weights/model-00001.safetensors')!
      expect(Object.keys(w)).to.include.members([
        'Name',
        'Path',
        'Type',
        'Size',
        'Sha256',
        'Revision',
        'IsLFS',
        'Mode',
        'CommitMessage',
        'CommitterName',
        'CommittedDate',
        'InCheck',
      ])
      expect(w).to.include({Name: 'model-00001.safetensors', Type: 'blob', Size: 3 * 1024 * 1024 + 7, IsLFS: true})
      expect(w.Mode).to.equal('33188')
      expect(w.Revision).to.match(/^[0-9a-f]{40}$/)
      expect(w.Sha256).to.equal(emu.sha256Of(REPO, 'weights/model-00001.safetensors'))
      expect(byPath.get('weights')).to.include({Type: 'tree', Name: 'weights'})
      expect(byPath.get('config.json')!.Sha256).to.equal(sha(Buffer.from('{"a": 1}\n')))
      expect(byPath.get('wrong.bin')).to.include({Sha256: '0'.repeat(64), Size: 4000})

      const top = (await (
        await fetch(`${emu.url}/api/v1/models/${REPO}/repo/files?Revision=v1.0&Recursive=False`)
      ).json()) as {Data: {Files: Array<{Path: string; Type: string}>}}
      expect(top.Data.Files.map((f) => `${f.Type}:${f.Path}`).sort()).to.deep.equal(
        ['blob:.gitattributes', 'blob:config.json', 'blob:wrong.bin', 'tree:weights'].sort(),
      )
      const sub = (await (
        await fetch(`${emu.url}/api/v1/models/${REPO}/repo/files?Revision=master&Recursive=True&Root=weights`)
      ).json()) as {Data: {Files: Array<{Path: string}>}}
      expect(sub.Data.Files.map((f) => f.Path).sort()).to.deep.equal(
        ['weights/model-00001.safetensors', 'weights/sub dir', 'weights/sub dir/notes.txt'].sort(),
      )
    })

    it('checks the token on API routes only (401 missing, 403 wrong)', async () => {
      await emu.stop()
      emu = await HubEmulator.start({...SPEC, token: 'sekrit'})
      const url = `${emu.url}/api/v1/models/${REPO}/revisions`
      const none = await fetch(url)
      expect(none.status).to.equal(401)
      expect(((await none.json()) as {Code: number}).Code).to.equal(401)
      const wrong = await fetch(url, {headers: {Cookie: 'm_session_id=nope'}})
      expect(wrong.status).to.equal(403)
      expect(((await wrong.json()) as {Code: number}).Code).to.equal(403)
      expect((await fetch(url, {headers: {Cookie: 'a=b; m_session_id=sekrit'}})).status).to.equal(200)
      expect((await fetch(url, {headers: {Authorization: 'Bearer sekrit'}})).status).to.equal(200)
      const r = await get(downloadUrl(emu, REPO, 'config.json'), {Authorization: 'Bearer sekrit'})
      expect(r.status).to.equal(302)
      const blob = await get(String(r.headers.location))
      expect(blob.status).to.equal(200)
      expect(blob.body.toString()).to.equal('{"a": 1}\n')
    })
  })

  describe('content and ranges', () => {
    it('redirects, then serves exact 206 ranges past 2^32 of a virtual 5 GiB file', async () => {
      const loc = await blobLocation(emu, BIG, 'model.gguf')
      expect(loc).to.match(/\/blobs\/[0-9a-f]+\?path=model\.gguf&expires=\d+&sig=[0-9a-f]+$/)
      const start = 2 ** 32 + 13
      const end = start + 4099
      const r = await get(loc, {Range: `bytes=${start}-${end}`})
      expect(r.status).to.equal(206)
      expect(r.headers['content-range']).to.equal(`bytes ${start}-${end}/${5 * GiB}`)
      expect(r.headers['content-length']).to.equal('4100')
      expect(r.headers['accept-ranges']).to.equal('bytes')
      expect(r.headers.etag).to.match(/^"[0-9a-f]{64}"$/)
      expect(r.body.equals(emu.rangeOf(BIG, 'model.gguf', start, end + 1))).to.equal(true)
      expect(r.body.equals(deterministicBytes(BIG, 'model.gguf', start, end + 1))).to.equal(true)
      // Ranges are consistent with each other (any offset, not only 16-byte aligned).
      const wider = emu.rangeOf(BIG, 'model.gguf', start - 100, end + 101)
      expect(wider.subarray(100, 100 + 4100).equals(r.body)).to.equal(true)

      const tail = await get(loc, {Range: `bytes=${5 * GiB - 10}-`})
      expect(tail.status).to.equal(206)
      expect(tail.headers['content-range']).to.equal(`bytes ${5 * GiB - 10}-${5 * GiB - 1}/${5 * GiB}`)
      expect(tail.body.length).to.equal(10)

      const head = await get(loc, {}, 'HEAD')
      expect(head.status).to.equal(200)
      expect(head.headers['content-length']).to.equal(String(5 * GiB))

      const log = emu.contentRequests(BIG, 'model.gguf')
      expect(log.map((e) => e.rangeStart)).to.deep.equal([start, 5 * GiB - 10, undefined])
      expect(log[0]).to.include({route: 'blob', origin: 'main', status: 206, bytesSent: 4100, attempt: 0, complete: true})
      expect(log[2].attempt).to.equal(undefined) // HEAD consumes no attempt
    })

    it('answers 416 with bytes */total and honours If-Range / If-Match', async () => {
      const p = 'weights/sub dir/notes.txt'
      const loc = await blobLocation(emu, REPO, p)
      expect(loc).to.include('path=weights%2Fsub%20dir%2Fnotes.txt')
      const r416 = await get(loc, {Range: 'bytes=1000-'})
      expect(r416.status).to.equal(416)
      expect(r416.headers['content-range']).to.equal('bytes */1000')

      const etag = emu.etagOf(REPO, p)
      const ok = await get(loc, {Range: 'bytes=10-19', 'If-Range': etag})
      expect(ok.status).to.equal(206)
      expect(ok.body.equals(emu.rangeOf(REPO, p, 10, 20))).to.equal(true)
      const full = await get(loc, {Range: 'bytes=10-19', 'If-Range': '"stale"'})
      expect(full.status).to.equal(200)
      expect(full.body.equals(emu.contentOf(REPO, p))).to.equal(true)
      expect((await get(loc, {Range: 'bytes=0-1', 'If-Match': '"stale"'})).status).to.equal(412)
      expect((await get(loc, {Range: 'bytes=0-1', 'If-Match': etag})).status).to.equal(206)
    })

    it('is deterministic across instances and its listed hash matches the bytes', async () => {
      const other = await HubEmulator.start(SPEC)
      try {
        const p = 'weights/model-00001.safetensors'
        const a = (await get(await blobLocation(emu, REPO, p))).body
        const b = (await get(await blobLocation(other, REPO, p))).body
        expect(a.length).to.equal(3 * 1024 * 1024 + 7)
        expect(a.equals(b)).to.equal(true)
        expect(sha(a)).to.equal(emu.sha256Of(REPO, p))
        expect(await other.sha256OfAsync(REPO, p)).to.equal(sha(a))
        expect(emu.revisionOf(REPO, p)).to.equal(other.revisionOf(REPO, p))
        // Different path or seed, different bytes.
        expect(emu.rangeOf(REPO, 'weights/sub dir/notes.txt', 0, 64).equals(a.subarray(0, 64))).to.equal(false)
      } finally {
        await other.stop()
      }
    })

    it('mutateFile changes bytes, sha, ETag and Revision; old If-Range gets 200', async () => {
      const p = 'weights/sub dir/notes.txt'
      const before = {bytes: emu.contentOf(REPO, p), sha: emu.sha256Of(REPO, p), etag: emu.etagOf(REPO, p), rev: emu.revisionOf(REPO, p)}
      const loc = await blobLocation(emu, REPO, p)
      emu.mutateFile(REPO, p)
      expect(emu.contentOf(REPO, p).equals(before.bytes)).to.equal(false)
      expect(emu.sha256Of(REPO, p)).to.not.equal(before.sha)
      expect(emu.etagOf(REPO, p)).to.not.equal(before.etag)
      expect(emu.revisionOf(REPO, p)).to.not.equal(before.rev)
      const r = await get(loc, {Range: 'bytes=500-', 'If-Range': before.etag})
      expect(r.status).to.equal(200)
      expect(r.headers.etag).to.equal(emu.etagOf(REPO, p))
      expect(sha(r.body)).to.equal(emu.sha256Of(REPO, p))
      emu.mutateFile(REPO, p, {content: 'hello'})
      const files = (await (await fetch(`${emu.url}/api/v1/models/${REPO}/repo/files?Revision=master&Recursive=True`)).json()) as {
        Data: {Files: Array<{Path: string; Size: number; Sha256: string; Revision: string}>}
      }
      const f = files.Data.Files.find((x) => x.Path === p)!
      expect(f).to.include({Size: 5, Sha256: sha(Buffer.from('hello')), Revision: emu.revisionOf(REPO, p)})
    })

    it('serves small files directly and can put blobs on a second origin', async () => {
      await emu.stop()
      emu = await HubEmulator.start({...SPEC, directDownloadBelowBytes: 2000, blobOnSeparateOrigin: true})
      const direct = await get(downloadUrl(emu, REPO, 'config.json'), {Range: 'bytes=0-3'})
      expect(direct.status).to.equal(206)
      expect(direct.body.toString()).to.equal('{"a"')
      expect(emu.contentRequests(REPO, 'config.json')[0]).to.include({route: 'download', attempt: 0, content: true})

      const r = await get(downloadUrl(emu, REPO, 'wrong.bin'), {Cookie: 'm_session_id=t'})
      expect(r.status).to.equal(302)
      expect(String(r.headers.location).startsWith(emu.otherOriginUrl)).to.equal(true)
      expect(emu.blobUrl).to.equal(emu.otherOriginUrl)
      await get(String(r.headers.location), {Range: 'bytes=0-9'})
      const entries = emu.log.filter((e) => e.path === 'wrong.bin')
      expect(entries.map((e) => `${e.route}@${e.origin}`)).to.deep.equal(['download@main', 'blob@blob'])
      expect(entries[0].headers.cookie).to.equal('m_session_id=t')
      expect(entries[1].headers.cookie).to.equal(undefined)
      expect(entries[1].range).to.equal('bytes=0-9')
    })

    it('expires signed URLs', async () => {
      const loc = await blobLocation(emu, REPO, 'config.json')
      emu.expireSignedUrls()
      const r = await get(loc)
      expect(r.status).to.equal(403)
      expect(r.body.toString()).to.include('Request has expired')
      const tampered = (await blobLocation(emu, REPO, 'config.json')).replace(/sig=[0-9a-f]/, 'sig=z')
      expect((await get(tampered)).status).to.equal(403)
      expect((await get(await blobLocation(emu, REPO, 'config.json'))).status).to.equal(200)
    })
  })

  describe('faults and log', () => {
    const P = 'weights/model-00001.safetensors'

    it('reset: cuts after exactly afterBytes and logs bytesSent; the next attempt behaves', async () => {
      emu.setFaults(REPO, P, [{kind: 'reset', afterBytes: 100_000}, null])
      const loc = await blobLocation(emu, REPO, P)
      const r = await get(loc, {Range: 'bytes=5-'})
      expect(r.status).to.equal(206)
      expect(r.complete).to.equal(false)
      expect(r.body.length).to.equal(100_000)
      expect(r.body.equals(emu.rangeOf(REPO, P, 5, 100_005))).to.equal(true)
      const r2 = await get(loc, {Range: `bytes=${100_005}-`})
      expect(r2.complete).to.equal(true)
      expect(Buffer.concat([r.body, r2.body]).equals(emu.rangeOf(REPO, P, 5, 3 * 1024 * 1024 + 7))).to.equal(true)
      const [e0, e1] = emu.contentRequests(REPO, P)
      expect(e0).to.include({attempt: 0, fault: 'reset', bytesSent: 100_000, complete: false, rangeStart: 5})
      expect(e1.fault).to.equal(undefined)
      expect(e1).to.include({attempt: 1, bytesSent: 3 * 1024 * 1024 + 7 - 100_005, complete: true})
      expect(emu.totalBytesSent(REPO, P)).to.equal(3 * 1024 * 1024 + 2)
    })

    it('duplicateContentLength: two different Content-Length headers on the wire', async () => {
      emu.setFaults(REPO, P, [{kind: 'duplicateContentLength'}])
      const {head, body} = splitRaw(await rawGet(await blobLocation(emu, REPO, P), {Range: 'bytes=0-99'}))
      const cls = head.split('\r\n').filter((l) => /^content-length:/i.test(l))
      expect(cls).to.deep.equal(['Content-Length: 100', 'Content-Length: 101'])
      expect(head).to.match(/^HTTP\/1\.1 206 /)
      expect(body.equals(emu.rangeOf(REPO, P, 0, 100))).to.equal(true)
      expect(emu.contentRequests(REPO, P)[0]).to.include({fault: 'duplicateContentLength', bytesSent: 100})
    })

    it('gzip: a really gzipped range reply; corrupt: flips the given offsets', async () => {
      emu.setFaults(REPO, P, [{kind: 'gzip'}, {kind: 'corrupt', offsets: [1000, 1001, 5000]}])
      const loc = await blobLocation(emu, REPO, P)
      const g = await get(loc, {Range: 'bytes=1000-2999', 'Accept-Encoding': 'identity'})
      expect(g.status).to.equal(206)
      expect(g.headers['content-encoding']).to.equal('gzip')
      expect(g.headers['content-range']).to.equal(`bytes 1000-2999/${3 * 1024 * 1024 + 7}`)
      expect(Number(g.headers['content-length'])).to.equal(g.body.length)
      expect(zlib.gunzipSync(g.body).equals(emu.rangeOf(REPO, P, 1000, 3000))).to.equal(true)

      const c = await get(loc, {Range: 'bytes=1000-1999'})
      const good = emu.rangeOf(REPO, P, 1000, 2000)
      expect(c.body.length).to.equal(1000)
      const diff = [...c.body.keys()].filter((i) => c.body[i] !== good[i])
      expect(diff).to.deep.equal([0, 1])
      expect(c.body[0]).to.equal(good[0] ^ 0xff)
    })

    it('range faults: ignoreRange, wrongRangeStart, wrongTotal, multipart, status with Retry-After', async () => {
      const size = 3 * 1024 * 1024 + 7
      emu.setFaults(REPO, P, [
        {kind: 'ignoreRange'},
        {kind: 'wrongRangeStart', delta: 10},
        {kind: 'wrongTotal'},
        {kind: 'multipart', parts: 2},
        {kind: 'status', status: 503, headers: {'Retry-After': '2'}},
        {kind: 'empty'},
      ])
      const loc = await blobLocation(emu, REPO, P)
      const a = await get(loc, {Range: 'bytes=100-199'})
      expect(a.status).to.equal(200)
      expect(a.body.length).to.equal(size)
      const b = await get(loc, {Range: 'bytes=100-199'})
      expect(b.headers['content-range']).to.equal(`bytes 110-209/${size}`)
      expect(b.body.equals(emu.rangeOf(REPO, P, 110, 210))).to.equal(true)
      const c = await get(loc, {Range: 'bytes=100-199'})
      expect(c.headers['content-range']).to.equal(`bytes 100-199/${size + 1}`)
      const d = await get(loc, {Range: 'bytes=100-199'})
      expect(d.status).to.equal(206)
      expect(d.headers['content-type']).to.match(/^multipart\/byteranges; boundary=/)
      expect(d.body.toString('latin1')).to.include(`Content-Range: bytes 100-149/${size}`)
      expect(d.body.toString('latin1')).to.include(`Content-Range: bytes 150-199/${size}`)
      const e = await get(loc, {Range: 'bytes=100-199'})
      expect(e.status).to.equal(503)
      expect(e.headers['retry-after']).to.equal('2')
      const f = await get(loc, {Range: 'bytes=100-199'})
      expect(f.status).to.equal(200)
      expect(f.headers['content-length']).to.equal('0')
      expect(f.body.length).to.equal(0)
      expect(emu.contentRequests(REPO, P).map((x) => x.fault)).to.deep.equal([
        'ignoreRange',
        'wrongRangeStart',
        'wrongTotal',
        'multipart',
        'status',
        'empty',
      ])
    })

    it('hub-level faults on the download route share the attempt counter', async () => {
      emu.setFaults(REPO, P, [
        {kind: 'badLocation', location: 'file:///etc/passwd'},
        {kind: 'redirectLoop'},
        {kind: 'crossOriginRedirect'},
        {kind: 'status', status: 401, on: 'download'},
      ])
      const url = downloadUrl(emu, REPO, P)
      expect((await get(url)).headers.location).to.equal('file:///etc/passwd')
      let loc = String((await get(url)).headers.location)
      const seen = new Set<string>()
      for (let i = 0; i < 5; i++) {
        const hop = await get(loc)
        expect(hop.status).to.equal(302)
        seen.add(loc)
        loc = String(hop.headers.location)
      }
      expect(seen.size).to.equal(5)
      const x = await get(url)
      expect(String(x.headers.location).startsWith(emu.otherOriginUrl)).to.equal(true)
      const y = await get(url)
      expect(y.status).to.equal(401)
      expect(JSON.parse(y.body.toString()).Code).to.equal(401)
      expect(emu.attemptsOf(REPO, P)).to.equal(4)
      const blob = await get(String(x.headers.location), {Range: 'bytes=0-0'})
      expect(blob.status).to.equal(206)
      expect(emu.contentRequests(REPO, P).at(-1)).to.include({origin: 'blob', attempt: 4})
    })

    it('stall then resume, and stop() closes a forever-stalled socket at once', async () => {
      emu.setFaults(REPO, P, [{kind: 'stall', afterBytes: 10, ms: 150}, {kind: 'stall', afterBytes: 5}])
      const loc = await blobLocation(emu, REPO, P)
      const t = performance.now()
      const r = await get(loc, {Range: 'bytes=0-99'})
      expect(performance.now() - t).to.be.greaterThan(120)
      expect(r.complete).to.equal(true)
      expect(r.body.equals(emu.rangeOf(REPO, P, 0, 100))).to.equal(true)
      const pending = get(loc, {Range: 'bytes=0-99'})
      await new Promise((res) => setTimeout(res, 100))
      const live = emu.contentRequests(REPO, P)[1]
      expect(live).to.include({bytesSent: 5, status: 206, complete: false})
      const t2 = performance.now()
      await emu.stop()
      const cut = await pending
      expect(cut.body.length).to.equal(5)
      expect(performance.now() - t2).to.be.lessThan(1000)
    })

    it('rate limit caps a connection', async () => {
      emu.setRateLimit(1_000_000)
      const loc = await blobLocation(emu, REPO, P)
      const t = performance.now()
      const r = await get(loc, {Range: 'bytes=0-299999'})
      const ms = performance.now() - t
      expect(r.body.length).to.equal(300_000)
      expect(ms).to.be.greaterThan(200)
      expect(ms).to.be.lessThan(3000)
    })

    it('logs every request with route, origin, headers and status; clearLog empties it', async () => {
      await fetch(`${emu.url}/api/v1/models/${REPO}`, {headers: {'X-Probe': '1'}})
      await fetch(`${emu.url}/api/v1/models/${REPO}/revisions`)
      await fetch(`${emu.url}/api/v1/models/${REPO}/repo/files?Revision=master&Recursive=True`)
      const loc = await blobLocation(emu, REPO, 'config.json')
      await get(loc)
      await get(`${emu.url}/nowhere`)
      expect(emu.log.map((e) => `${e.route}:${e.status}`)).to.deep.equal([
        'probe:200',
        'revisions:200',
        'files:200',
        'download:302',
        'blob:200',
        'other:404',
      ])
      expect(emu.log[0].headers['x-probe']).to.equal('1')
      expect(emu.log[3]).to.include({repo: REPO, path: 'config.json', revision: 'master', location: loc})
      expect(emu.log[4]).to.include({bytesSent: 9, content: true})
      expect(emu.log.every((e) => typeof e.t === 'number' && e.origin === 'main')).to.equal(true)
      expect(emu.contentRequests().length).to.equal(1)
      emu.clearLog()
      expect(emu.log).to.have.length(0)
    })
  })
})

describe('emulator: datasets', () => {
  let emu: HubEmulator
  const DS = 'acme/set.v1'
  const json = async (url: string) => JSON.parse((await get(url)).body.toString('utf8'))
  const tree = (route: string, page: number, size = 3) => json(`${emu.url}/api/v1/datasets/${route}/repo/tree?Revision=master&Root=/&Recursive=True&PageNumber=${page}&PageSize=${size}`)

  beforeEach(async () => {
    emu = await HubEmulator.start({
      datasets: [{id: DS, gitattributes: false, files: [
        {path: 'a/x.txt', content: 'x'},
        {path: 'a/y.txt', content: 'yy', noSha256: 'absent'},
        {path: 'b.txt', content: 'bbb', noSha256: 'null'},
        {path: 'c.txt', content: 'cccc', noSha256: 'empty'},
      ]}],
      models: [{id: DS, gitattributes: false, files: [{path: 'a/x.txt', content: 'the model'}]}],
    })
  })
  afterEach(async () => emu.stop())

  it('pages the tree (trees count), by owner/name and by the Id of the info route; missing Sha256 in its three shapes', async () => {
    const info = await json(`${emu.url}/api/v1/datasets/${DS}`)
    expect(info.Data.Id).to.equal(emu.datasetIdOf(DS))
    const pages = [await tree(DS, 1), await tree(DS, 2), await tree(DS, 3)]
    expect(pages.map((p) => p.Data.Files.map((f: {Path: string}) => f.Path))).to.deep.equal([['a', 'a/x.txt', 'a/y.txt'], ['b.txt', 'c.txt'], []])
    expect(await tree(String(info.Data.Id), 2)).to.deep.include({Data: pages[1].Data})
    const [x, y] = pages[0].Data.Files.slice(1)
    expect(x.Sha256).to.equal(crypto.createHash('sha256').update('x').digest('hex'))
    expect(y).not.to.have.property('Sha256')
    expect(pages[1].Data.Files.map((f: {Sha256: unknown}) => f.Sha256)).to.deep.equal([null, ''])
    expect(emu.log.filter((e) => e.route === 'tree').map((e) => [e.repo, e.page, e.pageSize])).to.deep.include(['datasets/acme/set.v1', 2, 3])
  })

  it('a dataset and a model of one id are two repos; downloads come from the dataset route', async () => {
    const ds = await get(`${emu.url}/api/v1/datasets/${DS}/repo?${new URLSearchParams({Source: 'SDK', Revision: 'master', FilePath: 'a/x.txt'})}`)
    expect(ds.status).to.equal(302)
    const blob = await get(ds.headers.location!)
    expect(blob.body.toString()).to.equal('x')
    expect(emu.contentOf(DS, 'a/x.txt').toString()).to.equal('the model')
    expect((await json(`${emu.url}/api/v1/datasets/acme/nope`)).Code).to.equal(404)
    expect((await json(`${emu.url}/api/v1/datasets/${DS}/repo/tree?Revision=v9`)).Code).to.equal(404)
  })

  it('paging misbehaviour on demand: ignorePageNumber, ignorePageSize, endless', async () => {
    emu.setPaging(DS, 'ignorePageNumber')
    expect((await tree(DS, 2)).Data.Files.map((f: {Path: string}) => f.Path)).to.deep.equal(['a', 'a/x.txt', 'a/y.txt'])
    emu.setPaging(DS, 'ignorePageSize')
    expect((await tree(DS, 1)).Data.Files).to.have.length(5)
    expect((await tree(DS, 2)).Data.Files).to.have.length(0)
    emu.setPaging(DS, 'endless')
    const far = await tree(DS, 50)
    expect(far.Data.Files).to.have.length(3)
    expect(new Set(far.Data.Files.map((f: {Path: string}) => f.Path)).size).to.equal(3)
  })
})
