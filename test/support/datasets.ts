import {spawnSync} from 'node:child_process'
import http from 'node:http'
import https from 'node:https'
import path from 'node:path'

import type {EmulatorFileSpec} from './emulator.js'
import {makeTestCertificate} from './tls.js'

/**
 * Shared by the dataset tests: a dataset fixture with every shape the issue names (nested folders,
 * a dotted name, 1,000+ files over many pages, entries without Sha256), where pull puts it, and
 * what the official 1.x client's dataset_snapshot_download would decide about it.
 */
export const DATASET = 'acme/corpus.v1.5'
export const MiB = 1024 * 1024

export const SIZE_ONLY = ['unverified/a.bin', 'unverified/b.txt', 'unverified/c-empty.txt']

export function datasetFiles(many = 1050): EmulatorFileSpec[] {
  return [
    {path: 'README.md', content: '# corpus\n'},
    {path: 'data/train/part-0001.jsonl', size: 3 * MiB + 7},
    {path: 'data/train/part-0002.jsonl', size: 200_000},
    {path: 'data/dev/nested/deep/x.json', size: 777},
    {path: 'empty.txt', content: ''},
    {path: 'sub dir/näme v1.2.txt', size: 4321},
    {path: SIZE_ONLY[0], size: 70_000, noSha256: 'absent'},
    {path: SIZE_ONLY[1], size: 5, noSha256: 'null'},
    {path: SIZE_ONLY[2], content: '', noSha256: 'empty'},
    ...Array.from({length: many}, (_, i) => ({path: `many/f${String(i).padStart(4, '0')}.txt`, size: 20 + ((i * 37) % 180)})),
  ]
}

/** `<cache>/datasets/<owner>/<name with . as ___>`, as the official 1.x client lays a dataset out. */
export function datasetDir(cacheRoot: string, id = DATASET): string {
  const [owner, name] = id.split('/')
  return path.join(cacheRoot, 'datasets', owner, name.replaceAll('.', '___'))
}

export function modelDirOf(cacheRoot: string, id: string): string {
  const [owner, name] = id.split('/')
  return path.join(cacheRoot, 'models', owner, name.replaceAll('.', '___'))
}

/** Every entry of a dataset's listing, read page by page from a hub (or a mirror). */
export async function fullListing(base: string, id: string, byNumericId?: number, pageSize = 100): Promise<Array<Record<string, unknown>>> {
  const all: Array<Record<string, unknown>> = []
  for (let page = 1; page < 10_000; page++) {
    const route = byNumericId === undefined ? `/api/v1/datasets/${id}/repo/tree` : `/api/v1/datasets/${byNumericId}/repo/tree`
    const body = (await getJson(`${base}${route}?Revision=master&Root=/&Recursive=True&PageNumber=${page}&PageSize=${pageSize}`)) as {Code: number; Data: {Files: Array<Record<string, unknown>>}}
    if (body.Code !== 200) throw new Error(`listing page ${page}: ${JSON.stringify(body)}`)
    all.push(...body.Data.Files)
    if (body.Data.Files.length < pageSize) return all
  }
  throw new Error('listing did not end')
}

/** GET a JSON body over http, or https with the tests' own certificate. */
function getJson(url: string): Promise<unknown> {
  const u = new URL(url)
  return new Promise((resolve, reject) => {
    const onRes = (res: http.IncomingMessage) => {
      const chunks: Buffer[] = []
      res.on('data', (c: Buffer) => chunks.push(c))
      res.on('end', () => {
        try {
          resolve(JSON.parse(Buffer.concat(chunks).toString('utf8')))
        } catch (error) {
          reject(error)
        }
      })
      res.on('error', reject)
    }
    const req = u.protocol === 'https:' ? https.get(u, {ca: makeTestCertificate().cert, agent: false}, onRes) : http.get(u, {agent: false}, onRes)
    req.on('error', reject)
  })
}

export const hasPython = spawnSync('python3', ['-c', 'import pickle'], {stdio: 'ignore'}).status === 0

/**
 * What the official 1.x client decides for each listed file, with its own rules: the dataset's
 * cache directory is `<root>/datasets/<owner>/<name with . as ___>` (create_temporary_directory_
 * and_cache), and a file is present when `.msc` holds its Path with a Revision one of which starts
 * with the other, and the file exists (ModelFileSystemCache.exists, hash validation off).
 */
export function pythonClientView(cacheRoot: string, id: string, listing: Array<Record<string, unknown>>): {missing: string[]; id: string; mv: string; entries: number} {
  const code = `
import json, os, pickle, sys
root, owner, name, listing = sys.argv[1], sys.argv[2], sys.argv[3], json.loads(sys.stdin.read())
d = os.path.join(root, 'datasets', owner, name.replace('.', '___'))
cached = pickle.load(open(os.path.join(d, '.msc'), 'rb'))
meta = pickle.load(open(os.path.join(d, '.mdl'), 'rb'))
mv = open(os.path.join(d, '.mv')).read().strip()
index = {}
for c in cached:
    index.setdefault(c['Path'], []).append(c['Revision'])
missing = []
for f in listing:
    if f['Type'] == 'tree':
        continue
    revs = index.get(f['Path'], [])
    ok = any(r.startswith(f['Revision']) or f['Revision'].startswith(r) for r in revs) and os.path.exists(os.path.join(d, f['Path']))
    if not ok:
        missing.append(f['Path'])
print(json.dumps({'missing': missing, 'id': meta['id'], 'mv': mv, 'entries': len(cached)}))
`
  const [owner, name] = id.split('/')
  const res = spawnSync('python3', ['-c', code, cacheRoot, owner, name], {input: JSON.stringify(listing), maxBuffer: 1 << 26})
  if (res.status !== 0) throw new Error(`python3 failed: ${res.stderr.toString()}`)
  return JSON.parse(res.stdout.toString('utf8'))
}
