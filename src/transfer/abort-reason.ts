/** What an abort signal was aborted with, as an Error (a signal may carry any value, or none). */
export function abortReason(signal: AbortSignal | undefined): Error {
  return signal?.reason instanceof Error ? signal.reason : new Error('aborted')
}
