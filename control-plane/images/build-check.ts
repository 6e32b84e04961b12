import type { Stats } from 'node:fs';
import { lstat, open, readdir, readFile } from 'node:fs/promises';
import { join, relative } from 'node:path';
import type { Runtime } from '../runtime/docker.js';
import { checkDockerfile, checkImageRef } from './dockerfile-policy.js';
import { DEFAULT_REGISTRIES, registryAllowed, registryOf } from './registries.js';

/**
 * The Dockerfile policy once more, right before a build, plus what only the daemon knows: every
 * image the build reads must not resolve to another user's berth image, whatever name reached it
 * (a tag an operator added, a digest). berth labels each image it builds with `berth.user`, and
 * images built FROM it inherit the label until berth sets it again.
 *
 * Nor may it carry ONBUILD triggers: the builder runs them before the Dockerfile's own steps and
 * the policy never sees them (a base image on Docker Hub with `ONBUILD ADD http://127.0.0.1:…` or
 * `ONBUILD COPY --from=<another user's image>` would read what the policy refuses). An image the
 * daemon does not have is pulled first so it can be looked at (the build would pull it anyway);
 * one that cannot be pulled fails the build here. Throws with the reason.
 */
export async function verifyBuildSources(
  runtime: Pick<Runtime, 'inspectImage' | 'pullImage' | 'buildRoom'>, userId: number, contextDir: string,
  o: { onOutput?: (text: string) => void; signal?: AbortSignal; minFreeBytes?: number | null; registries?: readonly string[] } = {},
): Promise<void> {
  const text = await readFile(join(contextDir, 'Dockerfile'), 'utf8');
  const { images, addSources } = checkDockerfile(text, userId, o.registries);
  if (addSources.length > 0) {
    const archive = await addedArchive(contextDir, addSources);
    if (archive !== null) {
      throw new Error(archive.named
        ? `ADD ${archive.path}: it is an archive, which ADD would unpack during the build, where nothing bounds what it expands to. Use COPY (and RUN tar … to unpack it, where the build's disk limit applies)`
        : `ADD: the build context holds an archive (${archive.path}), which ADD would unpack during the build, where nothing bounds what it expands to, and this ADD's sources (a glob, a \`..\` or a link) may reach it. Use COPY instead of ADD (and RUN tar … to unpack it, where the build's disk limit applies)`);
    }
  }
  const say = o.onOutput ?? (() => {});
  for (const ref of images) {
    let info = await runtime.inspectImage(ref);
    if (!info) {
      // a pull is disk too: not on a host already short of it (BERTH_BUILD_MIN_FREE)
      const short = await runtime.buildRoom(o.minFreeBytes);
      if (short !== null) throw new Error(short);
      const registry = registryOf(ref);
      if (!registryAllowed(registry, o.registries ?? DEFAULT_REGISTRIES)) {
        throw new Error(`the Dockerfile's image "${ref}" is not on this Docker daemon, and its registry "${registry}" is not one this platform pulls from (BERTH_REGISTRIES)`);
      }
      // fail closed: an image not looked at must not reach the builder (it would pull it itself,
      // maybe a different one, and run its triggers)
      say(`berth: pulling ${ref}\n`);
      try {
        await runtime.pullImage(ref, say, o.signal);
      } catch (e) {
        if (o.signal?.aborted) throw e;
        throw new Error(`the Dockerfile's image "${ref}" is not on this Docker daemon and could not be pulled: ${(e as Error).message}`);
      }
      info = await runtime.inspectImage(ref);
      if (!info) throw new Error(`the Dockerfile's image "${ref}" is not on this Docker daemon after pulling it`);
    }
    const owner = info.labels['berth.user'];
    const foreignTag = info.repoTags.find((t) => !checkImageRef(t, userId).ok);
    if ((owner !== undefined && owner !== String(userId)) || foreignTag) {
      throw new Error(`the Dockerfile's image "${ref}" resolves to another user's image (${info.id.slice(0, 19)}); it cannot be used`);
    }
    if (info.onBuild.length > 0) {
      throw new Error(`the Dockerfile's image "${ref}" has ONBUILD triggers (${info.onBuild.map((t) => JSON.stringify(t.slice(0, 80))).join(', ')}): berth does not run build steps its Dockerfile checks never saw; use an image without ONBUILD`);
    }
  }
}

/**
 * Does a file start like something the builder's ADD unpacks? tar (by its header checksum, as Go's
 * reader accepts old headers without the `ustar` magic; a sparse entry expands to any size),
 * gzip, bzip2, xz and zstd, including a zstd stream that starts with a skippable frame (moby's
 * archive.DetectCompression).
 */
export function isArchive(b: Buffer, n: number): boolean {
  if (n >= 2 && b[0] === 0x1f && b[1] === 0x8b) return true;
  if (n >= 3 && b.toString('latin1', 0, 3) === 'BZh') return true;
  if (n >= 6 && b[0] === 0xfd && b.toString('latin1', 1, 6) === '7zXZ\0') return true;
  if (n >= 4 && (b.readUInt32LE(0) === 0xfd2fb528 || (b.readUInt32LE(0) & 0xfffffff0) === 0x184d2a50)) return true;
  return n >= 512 && tarChecksumOk(b);
}

/**
 * A tar header's checksum (octal at 148–155) matches its bytes, counting the field as spaces —
 * read as Go's archive/tar reads it: NULs and spaces trimmed at both ends, the bytes summed
 * unsigned or signed (old writers did either).
 */
function tarChecksumOk(b: Buffer): boolean {
  const field = b.toString('latin1', 148, 156).replace(/^[\0 ]+|[\0 ]+$/g, '');
  if (!/^[0-7]{1,8}$/.test(field)) return false;
  let unsigned = 0;
  let signed = 0;
  for (let i = 0; i < 512; i++) {
    const v = i >= 148 && i < 156 ? 32 : b[i];
    unsigned += v;
    signed += v > 127 ? v - 256 : v;
  }
  const want = parseInt(field, 8);
  return (want === unsigned || want === signed) && unsigned !== 8 * 32; // an all-zero block is no header
}

/** A source as a plain context-relative path ('' for the root), or null when the builder would resolve it further: a glob or a `..` segment. */
function plainSource(src: string): string | null {
  if (/[*?[\\]/.test(src)) return null;
  const parts = src.split('/').filter((p) => p !== '' && p !== '.');
  return parts.includes('..') ? null : parts.join('/');
}

/**
 * What ADD would unpack, if anything. A plain source (no glob, no `..`, no link on its way) is
 * looked at itself: a file that starts like an archive is refused, a directory is copied as it is
 * (the builder never unpacks what a directory holds). Any other source — which files it reaches
 * is the builder's business (`..` segments, links to directories, globs) — refuses the ADD when
 * the context holds an archive anywhere: a re-implementation that missed one case would let one
 * through.
 */
async function addedArchive(contextDir: string, sources: string[]): Promise<{ path: string; named: boolean } | null> {
  const anywhere = async () => {
    const a = await findArchive(contextDir);
    return a === null ? null : { path: a, named: false };
  };
  for (const src of sources) {
    const rel = plainSource(src);
    if (rel === null) return anywhere();
    let p = contextDir;
    let st: Stats | null = null;
    for (const part of rel === '' ? [] : rel.split('/')) {
      p = join(p, part);
      st = await lstat(p).catch(() => null);
      if (st === null) break; // not there: the build fails on it
      if (st.isSymbolicLink()) return anywhere();
    }
    if (st !== null && st.isFile() && (await startsLikeArchive(p))) return { path: rel, named: true };
  }
  return null;
}

async function startsLikeArchive(path: string): Promise<boolean> {
  const f = await open(path, 'r').catch(() => null);
  if (f === null) return false;
  try {
    const head = Buffer.alloc(512);
    const { bytesRead } = await f.read(head, 0, 512, 0);
    return isArchive(head, bytesRead);
  } finally {
    await f.close();
  }
}

/**
 * The first file in the build context (already extracted, within the archive limits) whose first
 * bytes are an archive's, or null. Links are not followed: one to a file inside the context is
 * checked as that file, one outside is never read.
 */
async function findArchive(contextDir: string): Promise<string | null> {
  const dirs = [contextDir];
  while (dirs.length > 0) {
    const dir = dirs.pop()!;
    for (const e of await readdir(dir, { withFileTypes: true })) {
      const p = join(dir, e.name);
      if (e.isDirectory()) dirs.push(p);
      else if (e.isFile() && (await startsLikeArchive(p))) return relative(contextDir, p);
    }
  }
  return null;
}
