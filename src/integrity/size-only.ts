/**
 * Files the hub lists without a SHA-256 (it happens on real datasets) are "size only": downloaded
 * with their size held to the listing and their chunk sums recorded, and the SHA-256 we computed
 * kept as `observedSha256` so verify, repair and serve still have a hash to hold the copy to. In a
 * listing, a journal record and a HubFile such a file has `sha256: ''`; nothing else marks it.
 * Without a hash, a file is the same version when its size and its commit are.
 */
export const SIZE_ONLY_SHA256 = ''

export function isSizeOnly(f: {sha256: string}): boolean {
  return f.sha256 === SIZE_ONLY_SHA256
}

interface Listed {
  size: number
  sha256: string
  commit: string
}

/**
 * Whether what we hold (a journal record, or a file listed earlier) is the version the hub lists
 * now. With a listed SHA-256 it decides; without one, size and commit do (a record holding a hash
 * from a pinned manifest still matches its size-only listing entry).
 */
export function sameVersion(held: Listed, listed: Listed): boolean {
  if (held.size !== listed.size) return false
  if (isSizeOnly(listed) || isSizeOnly(held)) return held.commit === listed.commit
  return held.sha256 === listed.sha256
}
