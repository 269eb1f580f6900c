import crypto from 'node:crypto'
import type {ServerResponse} from 'node:http'

/** The hub's JSON envelope (hub-protocol.md): success means Code 200; errors carry the HTTP status. */
export function envelope(code: number, data: unknown, message: string): Record<string, unknown> {
  return {Code: code, Data: data, Message: message, RequestId: crypto.randomUUID(), Success: code === 200}
}

export function sendJson(res: ServerResponse, status: number, data: unknown, message: string, headers: Record<string, string> = {}): void {
  const body = Buffer.from(JSON.stringify(envelope(status, data, message)))
  // setHeader, not writeHead(status, headers): the access log reads Content-Length back.
  for (const [k, v] of Object.entries({'Content-Type': 'application/json; charset=utf-8', 'Content-Length': String(body.length), ...headers})) res.setHeader(k, v)
  res.writeHead(status)
  // HEAD: Node sends the headers and drops the body.
  res.end(body)
}
