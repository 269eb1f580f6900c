import {execFileSync} from 'node:child_process'
import fs from 'node:fs'
import os from 'node:os'
import path from 'node:path'

/**
 * A throwaway self-signed certificate for 127.0.0.1, made with the openssl binary once per process.
 * Servers take `key`/`cert`; a CLI under test trusts it with NODE_EXTRA_CA_CERTS=`certPath` (read at
 * process start). Nothing comes from outside the machine.
 */
export interface TestCertificate {
  keyPath: string
  certPath: string
  key: string
  cert: string
}

let made: TestCertificate | undefined

export function makeTestCertificate(): TestCertificate {
  if (made) return made
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'msr-tls-'))
  const keyPath = path.join(dir, 'key.pem')
  const certPath = path.join(dir, 'cert.pem')
  execFileSync('openssl', ['req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-days', '2', '-subj', '/CN=127.0.0.1',
    '-addext', 'subjectAltName=IP:127.0.0.1', '-keyout', keyPath, '-out', certPath], {stdio: 'ignore'})
  made = {keyPath, certPath, key: fs.readFileSync(keyPath, 'utf8'), cert: fs.readFileSync(certPath, 'utf8')}
  return made
}

/** The two ways every transfer test runs: plain HTTP, and TLS with a certificate made here. */
export const TRANSPORTS = ['http', 'https'] as const
export type Transport = (typeof TRANSPORTS)[number]

/** Emulator options and CLI environment for one transport. */
export function transport(kind: Transport): {tls?: {key: string; cert: string}; env: Record<string, string>} {
  if (kind === 'http') return {env: {}}
  const c = makeTestCertificate()
  return {tls: {key: c.key, cert: c.cert}, env: {NODE_EXTRA_CA_CERTS: c.certPath}}
}
