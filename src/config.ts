import {staleMsFromEnv} from './journal/lock-staleness.js'

/**
 * The MS_RESUME_* knobs, read once at start-up (MS_RESUME_SHA256_ENGINE stays with the engines: it
 * is read per hasher, and tests switch it within one process). Modules take values from here instead of reading the
 * environment deep inside a hot path (an unknown or malformed value falls back to the default).
 */
export interface Knobs {
  /** MS_RESUME_DIRECT_IO=0: write every partial through the page cache (no O_DIRECT). */
  directIo: boolean
  /** MS_RESUME_TEST_WRITE_DELAY_MS: tests only, delay each write to a partial (a slow disk). */
  testWriteDelayMs: number
  /** MS_RESUME_RETRY_BASE_MS: first retry delay (tests make it short). */
  retryBaseMs: number | undefined
  /** MS_RESUME_CONNECT_TIMEOUT_MS: TCP + TLS connect timeout (default 10 s). */
  connectTimeoutMs: number
  /**
   * MS_RESUME_HTTP_CLIENT=undici: read file bodies through undici only (default `raw`: our onread
   * reader where it applies, undici for the rest; see transfer/raw-http.ts). For A/B benchmarks and
   * as an escape hatch.
   */
  httpClient: 'raw' | 'undici'
  /** MS_RESUME_LOCK_STALE_MS: a model lock whose heartbeat is older (by the filesystem's clock) is taken over (default 10 s). */
  lockStaleMs: number
  /** MS_RESUME_CRASH_AT="<point>[:<n>]": tests only, SIGKILL at the n-th pass of a crash point. */
  crashAt: {point: string; count: number} | undefined
  /** MS_RESUME_MAX_LISTING_PAGES: tests only, the bound on a dataset listing's pages (default 10,000). */
  maxListingPages: number | undefined
  /** MS_RESUME_TEST_JOURNAL_COMPACT_BYTES: tests only, compact the journal once its log is larger (0: at every write). */
  journalCompactBytes: number | undefined
}

function crashAtKnob(): Knobs['crashAt'] {
  const spec = process.env.MS_RESUME_CRASH_AT?.trim()
  if (!spec) return undefined
  const [point, count] = spec.split(':')
  const n = count === undefined ? 1 : Number(count)
  return point && Number.isSafeInteger(n) && n > 0 ? {point, count: n} : undefined
}

function numberKnob(name: string, min: number, max: number): number | undefined {
  const raw = process.env[name]?.trim()
  if (!raw) return undefined
  const n = Number(raw)
  return Number.isFinite(n) && n >= min && n <= max ? n : undefined
}

function readKnobs(): Knobs {
  return {
    directIo: !['0', 'off', 'false', 'no'].includes((process.env.MS_RESUME_DIRECT_IO ?? '').trim().toLowerCase()),
    testWriteDelayMs: numberKnob('MS_RESUME_TEST_WRITE_DELAY_MS', 0, 60_000) ?? 0,
    retryBaseMs: numberKnob('MS_RESUME_RETRY_BASE_MS', 0, 600_000),
    connectTimeoutMs: numberKnob('MS_RESUME_CONNECT_TIMEOUT_MS', 1, 600_000) ?? 10_000,
    httpClient: (process.env.MS_RESUME_HTTP_CLIENT ?? '').trim().toLowerCase() === 'undici' ? 'undici' : 'raw',
    lockStaleMs: staleMsFromEnv(process.env),
    crashAt: crashAtKnob(),
    maxListingPages: numberKnob('MS_RESUME_MAX_LISTING_PAGES', 1, 1_000_000),
    journalCompactBytes: numberKnob('MS_RESUME_TEST_JOURNAL_COMPACT_BYTES', 0, Number.MAX_SAFE_INTEGER),
  }
}

export const knobs: Readonly<Knobs> = Object.freeze(readKnobs())
