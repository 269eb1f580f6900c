/**
 * --include / --exclude as the official client applies allow_patterns / ignore_patterns: Python's
 * fnmatch on the whole repo path (so `*` also matches `/`), and a pattern ending in `/` means
 * everything below that directory.
 */
export function globToRegExp(pattern: string): RegExp {
  const p = pattern.endsWith('/') ? `${pattern}*` : pattern
  let out = ''
  for (let i = 0; i < p.length; i++) {
    const c = p[i]
    if (c === '*') out += '.*'
    else if (c === '?') out += '.'
    else if (c === '[') {
      const close = p.indexOf(']', i + 2)
      if (close === -1) {
        out += '\\['
      } else {
        let body = p.slice(i + 1, close)
        if (body.startsWith('!')) body = `^${body.slice(1)}`
        out += `[${body.replaceAll('\\', '\\\\')}]`
        i = close
      }
    } else out += c.replace(/[.+^${}()|\\/]/g, '\\$&')
  }
  return new RegExp(`^${out}$`, 's')
}

export function makePathFilter(include: string[], exclude: string[]): (path: string) => boolean {
  const inc = include.map(globToRegExp)
  const exc = exclude.map(globToRegExp)
  return (path) => (inc.length === 0 || inc.some((r) => r.test(path))) && !exc.some((r) => r.test(path))
}
