import { lstat, mkdir, realpath } from 'node:fs/promises';
import { join, posix, sep } from 'node:path';

/** Rejected archive content: answered with 400 and this message (which names the entry). */
export class ArchiveError extends Error {}

export interface ArchiveLimits {
  maxEntries: number;
  maxBytes: number;
}

/**
 * Validate an entry name and return it as a clean relative POSIX path ('' for the root itself).
 * Rejects NUL bytes, absolute paths (/x, C:\x, \\server), and any `..` segment.
 */
export function safeEntryPath(name: string): string {
  if (name.includes('\0')) throw new ArchiveError(`entry "${name.replace(/\0/g, '\\0')}": NUL byte in name`);
  if (name.startsWith('/') || name.startsWith('\\') || /^[A-Za-z]:/.test(name)) throw new ArchiveError(`entry "${name}": absolute path not allowed`);
  const parts = name.split(/[\\/]+/).filter((p) => p !== '' && p !== '.');
  if (parts.some((p) => p === '..')) throw new ArchiveError(`entry "${name}": ".." path traversal not allowed`);
  return parts.join('/');
}

/** Symlink targets must stay inside the archive: relative, and not climbing above the root. */
export function checkLinkTarget(entry: string, target: string): void {
  if (target === '' || target.includes('\0')) throw new ArchiveError(`entry "${entry}": invalid link target`);
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
export async function ensureDir(root: string, realRoot: string, rel: string, entry: string): Promise<string> {
  let cur = root;
  if (!rel) return cur;
  for (const comp of rel.split('/')) {
    cur = join(cur, comp);
    let st;
    try { st = await lstat(cur); } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== 'ENOENT') throw e;
      await mkdir(cur, { mode: 0o700 }); // readable by berth only (the image gets 0755: packDirectory)
      continue;
    }
    if (st.isSymbolicLink()) {
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
