import {expect} from 'chai'

import {judgeRangeReply, parseContentRange, parseUnsatisfiedRange, rangeHeader, strongEtag} from '../../src/transfer/content-range.js'

const SIZE = 10_000
const ETAG = '"abc"'

/** A correct 206 for bytes [start, SIZE), with one field overridden per test. */
function judge(over: Partial<Parameters<typeof judgeRangeReply>[0]> = {}) {
  const start = over.requestedStart ?? 4096
  return judgeRangeReply({
    status: 206,
    requestedStart: start,
    expectedTotal: SIZE,
    contentRange: `bytes ${start}-${SIZE - 1}/${SIZE}`,
    contentLength: String(SIZE - start),
    contentEncoding: undefined,
    contentType: 'application/octet-stream',
    ...over,
  })
}

describe('content-range: a resumed reply must prove itself', () => {
  it('accepts a 206 that starts where we asked, with the listed total and a consistent length', () => {
    expect(judge()).to.deep.equal({ok: true, skipBytes: 0})
  })

  it('206 whose Content-Range start differs from the request: protocol error (never written at a wrong offset)', () => {
    for (const start of [4095, 4097, 0]) {
      const v = judge({contentRange: `bytes ${start}-${SIZE - 1}/${SIZE}`, contentLength: String(SIZE - start)})
      expect(v, `start ${start}`).to.include({ok: false, reason: 'protocol'})
    }
  })

  it('206 whose /total differs from the listed size: the remote file changed', () => {
    expect(judge({contentRange: `bytes 4096-9999/${SIZE + 1}`})).to.include({ok: false, reason: 'changed'})
    expect(judge({contentRange: 'bytes 4096-9998/9999'})).to.include({ok: false, reason: 'changed'})
  })

  it('the ETag is no verdict: mirrors and CDNs give one file different ETags (the SHA-256 decides)', () => {
    // judgeRangeReply takes no ETag at all: a reply is judged by status, offset and sizes only.
    expect(judgeRangeReply.length).to.equal(1)
    const v = judgeRangeReply({status: 206, requestedStart: 0, expectedTotal: SIZE, contentRange: `bytes 0-${SIZE - 1}/${SIZE}`, contentLength: String(SIZE), contentEncoding: undefined, contentType: undefined, etag: '"other"'} as Parameters<typeof judgeRangeReply>[0])
    expect(v).to.deep.equal({ok: true, skipBytes: 0})
  })

  it('200 longer than the listed size: read up to the listed size (the SHA-256 decides); shorter: changed', () => {
    expect(judge({status: 200, contentRange: undefined, contentLength: String(SIZE + 4096)})).to.deep.equal({ok: true, skipBytes: 4096})
    expect(judge({status: 200, contentRange: undefined, contentLength: String(SIZE - 1)})).to.include({ok: false, reason: 'changed'})
  })

  it('malformed or missing Content-Range on a 206: protocol error', () => {
    for (const contentRange of [undefined, '', 'bytes 4096-9999', 'bytes=4096-9999/10000', 'bytes 4096-/10000', 'bytes 9999-4096/10000', 'bytes 4096-10000/10000', 'items 4096-9999/10000', 'bytes -1-9999/10000']) {
      expect(judge({contentRange}), String(contentRange)).to.include({ok: false, reason: 'protocol'})
    }
  })

  it('negative, non-numeric, doubled or inconsistent Content-Length: protocol error', () => {
    for (const contentLength of ['-1', 'abc', '5904, 5905', '1.5', '5905']) {
      expect(judge({contentLength}), contentLength).to.include({ok: false, reason: 'protocol'})
    }
  })

  it('a multipart reply to a single range: protocol error', () => {
    expect(judge({contentType: 'multipart/byteranges; boundary=x', contentRange: undefined})).to.include({ok: false, reason: 'protocol'})
  })

  it('a compressed range (gzip, br, anything but identity): refused as a protocol error', () => {
    for (const contentEncoding of ['gzip', 'br', 'deflate', ' GZIP ']) {
      expect(judge({contentEncoding}), contentEncoding).to.include({ok: false, reason: 'protocol'})
    }
    expect(judge({contentEncoding: 'identity'})).to.deep.equal({ok: true, skipBytes: 0})
  })

  it('200 with the whole file to a Range request: skip to the offset, never append', () => {
    expect(judge({status: 200, contentRange: undefined, contentLength: String(SIZE)})).to.deep.equal({ok: true, skipBytes: 4096})
    expect(judge({status: 200, contentRange: undefined, contentLength: undefined})).to.deep.equal({ok: true, skipBytes: 4096})
    // Shorter than listed: another file. Longer: read up to the listed size, the SHA-256 decides.
    expect(judge({status: 200, contentRange: undefined, contentLength: String(SIZE - 1)})).to.include({ok: false, reason: 'changed'})
    expect(judge({status: 200, contentRange: undefined, contentLength: String(SIZE + 1)})).to.deep.equal({ok: true, skipBytes: 4096})
  })

  it('an empty body: a 200 of 0 bytes is another file; a 206 of 0 bytes contradicts its own Content-Range', () => {
    expect(judge({status: 200, contentRange: undefined, contentLength: '0'})).to.include({ok: false, reason: 'changed'})
    expect(judge({contentLength: '0'})).to.include({ok: false, reason: 'protocol'})
  })

  it('416 */N: N equal to the listed size is a server glitch (retry); another N means the file changed', () => {
    expect(judge({status: 416, contentRange: `bytes */${SIZE}`, contentLength: '0'})).to.include({ok: false, reason: 'protocol'})
    expect(judge({status: 416, contentRange: 'bytes */4096', contentLength: '0'})).to.include({ok: false, reason: 'changed'})
    expect(judge({status: 416, contentRange: `bytes */${SIZE + 5}`, contentLength: '0'})).to.include({ok: false, reason: 'changed'})
    // No (or an unreadable) Content-Range proves nothing: retry.
    expect(judge({status: 416, contentRange: undefined, contentLength: '0'})).to.include({ok: false, reason: 'protocol'})
    expect(judge({status: 416, contentRange: 'bytes */x', contentLength: '0'})).to.include({ok: false, reason: 'protocol'})
  })

  it('other statuses to a range request: protocol error', () => {
    expect(judge({status: 204})).to.include({ok: false, reason: 'protocol'})
  })

  it('offsets past 2^32 are exact in both directions', () => {
    const big = 2 ** 32 + 5 * 2 ** 20 + 17
    const start = 2 ** 32 + 2 ** 20
    expect(rangeHeader(start, big)).to.equal('bytes=4296015872-4300210192')
    expect(parseContentRange(`bytes ${start}-${big - 1}/${big}`)).to.deep.equal({start, end: big - 1, total: big})
    expect(judgeRangeReply({
      status: 206, requestedStart: start, expectedTotal: big, contentRange: `bytes ${start}-${big - 1}/${big}`,
      contentLength: String(big - start), contentEncoding: undefined, contentType: undefined,
    })).to.deep.equal({ok: true, skipBytes: 0})
    expect(parseUnsatisfiedRange(`bytes */${big}`)).to.equal(big)
  })

  it('parseContentRange rejects unsafe integers and accepts an unknown total', () => {
    expect(parseContentRange('bytes 0-99999999999999999999/100000000000000000000')).to.equal(undefined)
    expect(parseContentRange('bytes 0-9/*')).to.deep.equal({start: 0, end: 9, total: undefined})
  })

  it('strongEtag: weak and empty ETags cannot guard a byte range', () => {
    expect(strongEtag('"x"')).to.equal('"x"')
    expect(strongEtag('W/"x"')).to.equal(undefined)
    expect(strongEtag('')).to.equal(undefined)
    expect(strongEtag(undefined)).to.equal(undefined)
  })
})
