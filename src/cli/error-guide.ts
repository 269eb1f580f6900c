import type {ErrorCode} from '../errors.js'

export interface ErrorGuideEntry {
  meaning: string
  todo: string
}

/**
 * What each stable error code means and what to do about it: the source of docs/errors.md and of
 * the EXIT CODES section of `ms-resume --help`. Typed by ErrorCode, so a new code cannot ship
 * undocumented.
 */
export const ERROR_GUIDE: Record<ErrorCode, ErrorGuideEntry> = {
  E_USAGE: {meaning: 'A flag, argument or model id is missing or malformed (including unknown flags and commands), or the target directory already holds another model.', todo: 'Fix the command line; `ms-resume COMMAND --help` lists the flags with examples. Pull each model into its own `--local-dir`.'},
  E_NETWORK: {meaning: 'The hub or its download host could not be reached, or kept failing, until the retries ran out (every byte received resets the retry count).', todo: 'Check the network, proxy variables and `--endpoint`, then run the same command again: it resumes where it stopped.'},
  E_PROTOCOL: {meaning: 'A server kept answering in a way a correct download cannot build on (wrong Content-Range, redirect loop, malformed reply).', todo: 'Run again later; if it persists, report it with the output of `--verbose`.'},
  E_TIMEOUT: {meaning: 'A connection sent nothing for `--timeout` seconds, on every retry.', todo: 'Run again (it resumes); on a slow or congested link raise `--timeout`.'},
  E_ENDPOINTS: {meaning: 'Several endpoints were given (`--endpoint` repeated) and every one failed in turn: refused, unreachable, TLS failure, or 5xx and stalls until its retries ran out. The message names each with its failure.', todo: 'Check the network and the `--endpoint` URLs, then run the same command again: it resumes where it stopped, on any endpoint that lists the same files.'},
  E_INTEGRITY: {meaning: 'A file\'s SHA-256 did not match the hub\'s listing after repeated downloads. Nothing was placed at its final path.', todo: 'Try again later or report it to the model owner. The bad downloads stay in the quarantine folder for a post-mortem; `ms-resume clean` removes them.'},
  E_SIZE: {meaning: 'A file on disk or a served body has another size than the listing says.', todo: 'Run the same command again: the file is checked and fetched again where needed.'},
  E_DAMAGED: {meaning: 'Files at their final paths no longer match what was verified (missing, truncated or changed).', todo: 'Run `ms-resume pull` (or `verify --repair`) to fetch only the damaged parts again.'},
  E_NOT_FOUND: {meaning: 'The model, the revision or a file does not exist on the hub.', todo: 'Check the model id and `--revision`; a private model also needs a token.'},
  E_AUTH: {meaning: 'The hub refused access (HTTP 401/403): no token, or a token that may not read this model.', todo: 'Pass a valid token with `--token` or `MODELSCOPE_API_TOKEN`.'},
  E_REMOTE_CHANGED: {meaning: 'Files changed on the hub while they were being downloaded, more often than a pull keeps chasing them.', todo: 'Run again to pull the current version; pin a version with `--manifest` if you need exactly one.'},
  E_MANIFEST_MISMATCH: {meaning: 'The hub no longer serves what the pinned manifest says.', todo: 'Update the manifest deliberately, or pass `--allow-manifest-mismatch` to take the hub\'s current files.'},
  E_UNSAFE_PATH: {meaning: "The hub listed a path that would land outside the model directory or on ms-resume's or the ModelScope client's own files (`.ms-resume/`, `.msc`, `.mdl`, `.mv`, `.lock`), or a symlink stands in the way (also inside `.ms-resume`).", todo: 'Nothing was written there. Remove a symlink you did not make; otherwise report the model to its owner.'},
  E_REMOTE: {meaning: 'The hub answered with an error or a reply it should not send.', todo: 'Try again later; check `--endpoint`.'},
  E_DISK_FULL: {meaning: 'Not enough free space: checked before the first byte is fetched, or the disk filled up on the way.', todo: 'Free some space or choose another place (`--local-dir`, `--cache-dir`), then run again; it resumes.'},
  E_PERMISSION: {meaning: 'A file or directory of the target cannot be written.', todo: 'Fix the permissions or choose a writable place with `--local-dir` or `--cache-dir`.'},
  E_JOURNAL: {meaning: 'The journal in `<model dir>/.ms-resume` cannot be read or written.', todo: 'Check the permissions and free space of that directory, then run again.'},
  E_LOCKED: {meaning: 'Another ms-resume is pulling or cleaning this model in the same place.', todo: 'Wait for it to finish; `pull --lock-wait SECONDS` waits for it.'},
  E_LOCAL: {meaning: 'Another local failure, or an error ms-resume did not foresee.', todo: 'Run again with `--verbose` and report the output.'},
  E_INTERRUPTED: {meaning: 'Interrupted by Ctrl-C or SIGTERM; progress up to the last checkpoint was saved.', todo: 'Run the same command again to resume.'},
}
