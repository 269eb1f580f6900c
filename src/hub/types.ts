import type {EventSink} from '../events.js'

/** What the transfer code needs from a hub. A second hub implements this and nothing else changes. */
export interface HubFile {
  /** Repo-relative, '/'-separated: the key for everything. Untrusted. */
  path: string
  size: number
  sha256: string
  /** The commit id the file was listed at. */
  commit: string
}

export interface HubListing {
  files: HubFile[]
  /** The branch or tag asked for. */
  revision: string
  /** When the revision was created (unix seconds), if the hub says. */
  revisionCreatedAt?: number
}

export interface Hub {
  readonly name: string
  /** The API base URL. */
  readonly endpoint: string
  /** `emit`: retries and endpoint failovers on the way (failover-hub.ts); a single hub may ignore it. */
  listFiles(modelId: string, revision: string, signal?: AbortSignal, emit?: EventSink): Promise<HubListing>
  /** The URL that answers file bytes (possibly through redirects). Stable: re-resolved after a signed URL expires. */
  fileUrl(modelId: string, revision: string, filePath: string): string
  /** Credentials and hub headers for `url`: no credentials for any origin other than the hub's own (with several endpoints: the origins of those named). */
  headersFor(url: URL): Record<string, string>
  /** Hub-specific bookkeeping once a model is complete (e.g. the official client's index files). */
  afterComplete?(ctx: {modelDir: string; cacheRoot?: string; layout: string; modelId: string; listing: HubListing; emit?: EventSink}): Promise<void>
}
