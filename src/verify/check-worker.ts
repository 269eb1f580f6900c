import {parentPort} from 'node:worker_threads'

import {isMsrError} from '../errors.js'
import {type FileCheck, checkFile} from '../integrity/check.js'
import type {CheckJob} from './check-pool.js'

/** One file at a time, whole: see check-pool.ts. */
export interface CheckRequest {
  id: number
  job: CheckJob
}

export type CheckReply =
  | {id: number; result: FileCheck}
  | {id: number; error: {message: string; code?: string; msr: boolean}}

const port = parentPort
if (!port) throw new Error('check-worker.js runs only as a worker thread')

port.on('message', (request: CheckRequest) => {
  checkFile(request.job.filePath, request.job.expected, request.job.level).then(
    (result) => port.postMessage({id: request.id, result} satisfies CheckReply),
    (error: unknown) => {
      const e = error as NodeJS.ErrnoException
      port.postMessage({id: request.id, error: {message: e?.message ?? String(error), code: e?.code, msr: isMsrError(error)}} satisfies CheckReply)
    },
  )
})
