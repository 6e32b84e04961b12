import { open, readdir, readFile } from 'node:fs/promises';
import { join, relative } from 'node:path';
import type { Runtime } from '../runtime/docker.js';
import { checkDockerfile, checkImageRef } from './dockerfile-policy.js';

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
  runtime: Pick<Runtime, 'inspectImage' | 'pullImage'>, userId: number, contextDir: string,
  o: { onOutput?: (text: string) => void; signal?: AbortSignal } = {},
): Promise<void> {
  const text = await readFile(join(contextDir, 'Dockerfile'), 'utf8');
  const { images, addsLocal } = checkDockerfile(text, userId);
  if (addsLocal) {
    const archive = await findArchive(contextDir);
    if (archive !== null) {
      throw new Error(`the Dockerfile uses ADD and the upload holds an archive (${archive}): ADD would unpack it during the build, where nothing bounds what it expands to. Use COPY (and RUN tar … to unpack it, where the build's disk limit applies)`);
    }
  }
  const say = o.onOutput ?? (() => {});
  for (const ref of images) {
    let info = await runtime.inspectImage(ref);
    if (!info) {
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
 * Leading bytes of what the builder's ADD unpacks: tar (`ustar` at 257; a sparse entry expands to
 * any size), gzip, bzip2, xz and zstd (moby's archive.DetectCompression).
 */
function isArchive(b: Buffer, n: number): boolean {
  if (n >= 262 && b.toString('latin1', 257, 262) === 'ustar') return true;
  if (n >= 2 && b[0] === 0x1f && b[1] === 0x8b) return true;
  if (n >= 3 && b.toString('latin1', 0, 3) === 'BZh') return true;
  if (n >= 6 && b[0] === 0xfd && b.toString('latin1', 1, 6) === '7zXZ\0') return true;
  return n >= 4 && b.readUInt32LE(0) === 0xfd2fb528;
}

/**
 * The first file of the build context (already extracted, within the archive limits) that ADD
 * would unpack, as a path relative to the context; null when there is none. Reads 512 bytes of
 * each regular file; symlinks are not followed.
 */
async function findArchive(contextDir: string): Promise<string | null> {
  const head = Buffer.alloc(512);
  const dirs = [contextDir];
  while (dirs.length > 0) {
    const dir = dirs.pop()!;
    for (const e of await readdir(dir, { withFileTypes: true })) {
      const p = join(dir, e.name);
      if (e.isDirectory()) dirs.push(p);
      else if (e.isFile()) {
        const f = await open(p, 'r');
        try {
          const { bytesRead } = await f.read(head, 0, 512, 0);
          if (isArchive(head, bytesRead)) return relative(contextDir, p);
        } finally {
          await f.close();
        }
      }
    }
  }
  return null;
}
