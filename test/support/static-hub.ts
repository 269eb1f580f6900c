import crypto from 'node:crypto'
import fs from 'node:fs/promises'
import path from 'node:path'

import {deterministicBytes} from './emulator.js'

/**
 * A ModelScope hub as a tree of static files, for a static server (test/support/nginx.ts) to serve:
 *
 *   <root>/hub/<owner>/<name>/probe.json       GET /api/v1/models/{o}/{n}
 *   <root>/hub/<owner>/<name>/revisions.json   GET /api/v1/models/{o}/{n}/revisions
 *   <root>/hub/<owner>/<name>/files.json       GET /api/v1/models/{o}/{n}/repo/files?...
 *   <root>/blobs/<owner>/<name>/<Path>         where /api/v1/models/{o}/{n}/repo?FilePath=<Path> redirects
 *
 * The JSON has the emulator's shapes (the envelope and listing fields of hub-protocol.md). A file's
 * bytes are the emulator's deterministic content for the same seed (default: the model id) and path,
 * so a test may compare against either. Paths must be plain (letters, digits, `._-/`): the download
 * route hands FilePath to the file system as the client encoded it.
 */
export interface StaticFileSpec {
  path: string
  /** Required unless `content` is given. */
  size?: number
  seed?: string | number
  content?: Buffer | string
}

export interface StaticFile {
  path: string
  size: number
  sha256: string
}

export interface StaticModel {
  id: string
  files: StaticFile[]
}

const PLAIN_PATH = /^[A-Za-z0-9._-]+(\/[A-Za-z0-9._-]+)*$/
const BLOCK = 4 * 1024 * 1024
const COMMITTED = 1_733_000_000

function envelope(data: unknown): string {
  return JSON.stringify({Code: 200, Data: data, Message: 'success', RequestId: crypto.randomUUID(), Success: true})
}

function commitOf(id: string, revision: string): string {
  return crypto.createHash('sha1').update(`${id}@${revision}`).digest('hex')
}

/** The URL ms-resume asks for a file (same encoding as src/hub/modelscope). */
export function downloadUrl(endpoint: string, id: string, filePath: string, revision = 'master'): string {
  return `${endpoint}/api/v1/models/${id}/repo?${new URLSearchParams({Revision: revision, FilePath: filePath}).toString()}`
}

/** Where the download route redirects to. */
export function blobUrl(endpoint: string, id: string, filePath: string): string {
  return `${endpoint}/blobs/${id}/${filePath}`
}

/** The file's bytes written to `target` in 4 MiB blocks; returns the SHA-256 hex. */
async function writeContent(target: string, spec: StaticFileSpec, seed: string | number, size: number): Promise<string> {
  const hash = crypto.createHash('sha256')
  const fh = await fs.open(target, 'w')
  try {
    if (spec.content !== undefined) {
      const buf = Buffer.from(spec.content)
      hash.update(buf)
      await fh.writeFile(buf)
    } else {
      for (let at = 0; at < size; at += BLOCK) {
        const block = deterministicBytes(seed, spec.path, at, Math.min(at + BLOCK, size))
        hash.update(block)
        await fh.write(block)
      }
    }
  } finally {
    await fh.close()
  }
  return hash.digest('hex')
}

interface ContentRecord {
  size: number
  seed: string
  sha256: string
}

/**
 * Writes a model's files and JSON under `root`. Files already there from an earlier call with the
 * same seed and size are kept (content.json remembers their hash), so a benchmark that keeps its
 * directory generates a multi-GiB file once.
 */
export async function writeStaticModel(root: string, model: {id: string; files: StaticFileSpec[]; revision?: string}): Promise<StaticModel> {
  const [owner, name, ...extra] = model.id.split('/')
  if (!owner || !name || extra.length > 0 || !PLAIN_PATH.test(owner) || !PLAIN_PATH.test(name)) throw new Error(`not a plain owner/name: ${model.id}`)
  const revision = model.revision ?? 'master'
  const hubDir = path.join(root, 'hub', owner, name)
  const blobDir = path.join(root, 'blobs', owner, name)
  await fs.mkdir(hubDir, {recursive: true})
  const recordsPath = path.join(hubDir, 'content.json')
  const known = JSON.parse(await fs.readFile(recordsPath, 'utf8').catch(() => '{}')) as Record<string, ContentRecord>
  const records: Record<string, ContentRecord> = {}
  const out: StaticFile[] = new Array(model.files.length)
  const dirs = new Set<string>()
  let next = 0
  const work = async () => {
    while (next < model.files.length) {
      const i = next++
      const spec = model.files[i]
      if (!PLAIN_PATH.test(spec.path)) throw new Error(`not a plain file path: ${spec.path}`)
      const size = spec.content !== undefined ? Buffer.byteLength(spec.content) : spec.size
      if (size === undefined || !Number.isSafeInteger(size) || size < 0) throw new Error(`file ${spec.path} needs a size or content`)
      const seed = spec.content !== undefined ? `content:${crypto.createHash('sha256').update(spec.content).digest('hex')}` : String(spec.seed ?? model.id)
      const target = path.join(blobDir, spec.path)
      const old = known[spec.path]
      let sha256: string
      const st = await fs.stat(target).catch(() => undefined)
      if (old && old.seed === seed && old.size === size && st?.size === size) {
        sha256 = old.sha256
      } else {
        await fs.mkdir(path.dirname(target), {recursive: true})
        sha256 = await writeContent(target, spec, seed, size)
      }
      records[spec.path] = {size, seed, sha256}
      out[i] = {path: spec.path, size, sha256}
      const segs = spec.path.split('/')
      for (let j = 1; j < segs.length; j++) dirs.add(segs.slice(0, j).join('/'))
    }
  }
  // Small files are mostly syscalls: a few at a time keeps 100,000 of them to seconds.
  await Promise.all(Array.from({length: 16}, work))
  const commit = commitOf(model.id, revision)
  const common = {Revision: commit, CommitMessage: 'bench', CommitterName: 'ms-resume-static-hub', CommittedDate: COMMITTED, InCheck: false}
  const trees = [...dirs].sort().map((d) => ({Name: path.posix.basename(d), Path: d, Type: 'tree', Size: 0, Sha256: '', IsLFS: false, Mode: '16384', ...common}))
  const blobs = [...out].sort((a, b) => (a.path < b.path ? -1 : a.path > b.path ? 1 : 0)).map((f) => ({
    Name: path.posix.basename(f.path), Path: f.path, Type: 'blob', Size: f.size, Sha256: f.sha256, IsLFS: f.size >= 1024 * 1024, Mode: '33188', ...common,
  }))
  await fs.writeFile(path.join(hubDir, 'files.json'), envelope({Files: [...trees, ...blobs]}))
  await fs.writeFile(path.join(hubDir, 'revisions.json'), envelope({RevisionMap: {Branches: [{Revision: revision, CreatedAt: COMMITTED}], Tags: []}}))
  await fs.writeFile(path.join(hubDir, 'probe.json'), envelope({Id: parseInt(commit.slice(0, 8), 16), Name: name, Path: owner, ChineseName: '', Description: `static model ${model.id}`, Revision: revision, Visibility: 5}))
  await fs.writeFile(recordsPath, JSON.stringify(records))
  return {id: model.id, files: out}
}
