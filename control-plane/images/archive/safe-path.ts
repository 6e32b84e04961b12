import { lstat, mkdir, realpath } from 'node:fs/promises';
import { join, posix, sep } from 'node:path';

/** Rejected archive content: answered with 400 and this message (which names the entry). */
export class ArchiveError extends Error {}

export interface ArchiveLimits {
  maxEntries: number;
  maxBytes: number;
}

/**
 * Entry names and link targets: at most this long and this many directories deep. Real sources
 * stay far below (deep node_modules trees reach ~20 levels, ~250 characters); without a bound, every
 * entry of a 20,000-entry archive 1,900 levels deep cost a check per level (hours of extraction).
 */
export const MAX_PATH_LENGTH = 1024;
export const MAX_PATH_DEPTH = 64;
/** One file or directory name (Linux NAME_MAX). */
export const MAX_NAME_BYTES = 255;

/** A clipped name for messages (a hostile one can be a megabyte long). */
const shown = (name: string) => (name.length > 200 ? `${name.slice(0, 200)}…` : name);

/**
 * Validate an entry name and return it as a clean relative POSIX path ('' for the root itself).
 * Rejects NUL bytes, absolute paths (/x, C:\x, \\server), any `..` segment, and names longer or
 * deeper than MAX_PATH_LENGTH / MAX_PATH_DEPTH.
 */
export function safeEntryPath(name: string): string {
  if (name.length > MAX_PATH_LENGTH) throw new ArchiveError(`entry "${shown(name)}": name longer than ${MAX_PATH_LENGTH} characters`);
  if (name.includes('\0')) throw new ArchiveError(`entry "${name.replace(/\0/g, '\\0')}": NUL byte in name`);
  if (name.startsWith('/') || name.startsWith('\\') || /^[A-Za-z]:/.test(name)) throw new ArchiveError(`entry "${name}": absolute path not allowed`);
  const parts = name.split(/[\\/]+/).filter((p) => p !== '' && p !== '.');
  if (parts.some((p) => p === '..')) throw new ArchiveError(`entry "${name}": ".." path traversal not allowed`);
  if (parts.length > MAX_PATH_DEPTH) throw new ArchiveError(`entry "${shown(name)}": more than ${MAX_PATH_DEPTH} directories deep`);
  // what a file system takes (NAME_MAX): past it the write fails deep in extraction instead
  if (parts.some((p) => Buffer.byteLength(p) > MAX_NAME_BYTES)) throw new ArchiveError(`entry "${shown(name)}": a name in its path is longer than ${MAX_NAME_BYTES} bytes`);
  return parts.join('/');
}

/** Symlink targets must stay inside the archive: relative, and not climbing above the root. */
export function checkLinkTarget(entry: string, target: string): void {
  if (target === '' || target.includes('\0')) throw new ArchiveError(`entry "${entry}": invalid link target`);
  if (target.length > MAX_PATH_LENGTH || target.split(/[\\/]+/).length > MAX_PATH_DEPTH) {
    throw new ArchiveError(`entry "${entry}": link target "${shown(target)}" is longer than ${MAX_PATH_LENGTH} characters or ${MAX_PATH_DEPTH} components`);
  }
  if (target.startsWith('/') || target.startsWith('\\') || /^[A-Za-z]:/.test(target)) throw new ArchiveError(`entry "${entry}": link to absolute path "${target}" not allowed`);
  const resolved = posix.normalize(posix.join(posix.dirname(entry), target.replace(/\\/g, '/')));
  if (resolved === '..' || resolved.startsWith('../')) throw new ArchiveError(`entry "${entry}": link target "${target}" points outside the archive`);
}

export function isInside(root: string, p: string): boolean {
  return p === root || p.startsWith(root.endsWith(sep) ? root : root + sep);
}

/**
 * Create `rel` (a directory under `root`) one component at a time, never creating anything
 * through a symlink that leads outside `root` (which a plain `mkdir -p` would do).
 * `realRoot` is realpath(root). Returns the absolute path.
 */
export async function ensureDir(root: string, realRoot: string, rel: string, entry: string, known?: Set<string>): Promise<string> {
  let cur = root;
  if (!rel) return cur;
  let prefix = '';
  // `known`: directories made or checked for an earlier entry. Only real directories reached
  // without a link go in: a directory is never replaced by a later entry (Writer refuses), a link is.
  let viaLink = false;
  for (const comp of rel.split('/')) {
    cur = join(cur, comp);
    prefix = prefix ? `${prefix}/${comp}` : comp;
    if (!viaLink && known?.has(prefix)) continue;
    let st;
    try { st = await lstat(cur); } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== 'ENOENT') throw e;
      await mkdir(cur, { mode: 0o700 }); // readable by berth only (the image gets 0755: packDirectory)
      if (!viaLink) known?.add(prefix);
      continue;
    }
    if (st.isDirectory() && !viaLink) known?.add(prefix);
    if (st.isSymbolicLink()) {
      viaLink = true;
      let real: string;
      try { real = await realpath(cur); } catch { throw new ArchiveError(`entry "${entry}": goes through a dangling link "${comp}"`); }
      if (!isInside(realRoot, real)) throw new ArchiveError(`entry "${entry}": goes through a link that points outside the archive`);
      if (!(await lstat(real)).isDirectory()) throw new ArchiveError(`entry "${entry}": "${comp}" is not a directory`);
    } else if (!st.isDirectory()) {
      throw new ArchiveError(`entry "${entry}": "${comp}" is a file, not a directory`);
    }
  }
  return cur;
}
