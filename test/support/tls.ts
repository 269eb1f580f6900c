import {execFileSync} from 'node:child_process'
import fs from 'node:fs'
import os from 'node:os'
import path from 'node:path'

/**
 * A throwaway self-signed certificate for 127.0.0.1, made with the openssl binary once per process.
 * Servers (the emulator, nginx) take `key`/`cert` or the paths; a CLI under test trusts it with
 * NODE_EXTRA_CA_CERTS=`certPath` (read at process start), aria2c with `--ca-certificate`, curl with
 * `--cacert`. Nothing comes from outside the machine. Plain Node: tests and scripts both use it.
 */
export interface TestCertificate {
  keyPath: string
  certPath: string
  key: string
  cert: string
}

let made: TestCertificate | undefined

function writePems(dir: string, pems: {key: string; cert: string}): TestCertificate {
  fs.mkdirSync(dir, {recursive: true})
  const keyPath = path.join(dir, 'key.pem')
  const certPath = path.join(dir, 'cert.pem')
  fs.writeFileSync(keyPath, pems.key, {mode: 0o600})
  fs.writeFileSync(certPath, pems.cert)
  return {keyPath, certPath, key: pems.key, cert: pems.cert}
}

/**
 * The process's certificate. openssl runs once per process (an RSA key takes up to a second); later
 * calls return the same one, so every server and client of one run agree on it. With `dir`, the
 * same PEMs are also written there as key.pem/cert.pem (for a server config that lives in `dir`).
 */
export function makeTestCertificate(dir?: string): TestCertificate {
  if (!made || !fs.existsSync(made.certPath) || !fs.existsSync(made.keyPath)) {
    const tmp = made ? path.dirname(made.certPath) : fs.mkdtempSync(path.join(os.tmpdir(), 'msr-tls-'))
    fs.mkdirSync(tmp, {recursive: true})
    if (made) {
      made = writePems(tmp, made)
    } else {
      const keyPath = path.join(tmp, 'key.pem')
      const certPath = path.join(tmp, 'cert.pem')
      execFileSync('openssl', ['req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-days', '2', '-subj', '/CN=127.0.0.1',
        '-addext', 'subjectAltName=IP:127.0.0.1', '-keyout', keyPath, '-out', certPath], {stdio: 'ignore'})
      made = {keyPath, certPath, key: fs.readFileSync(keyPath, 'utf8'), cert: fs.readFileSync(certPath, 'utf8')}
    }
  }
  return dir === undefined ? made : writePems(dir, made)
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
