import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import type { Runtime } from '../runtime/docker.js';
import { checkDockerfile, checkImageRef } from './dockerfile-policy.js';

/**
 * The Dockerfile policy once more, right before a build, plus what only the daemon knows: every
 * image the build reads must not resolve to another user's berth image, whatever name reached it
 * (a tag an operator added, a digest). berth labels each image it builds with `berth.user`, and
 * images built FROM it inherit the label until berth sets it again. Throws with the reason.
 */
export async function verifyBuildSources(runtime: Pick<Runtime, 'inspectImage'>, userId: number, contextDir: string): Promise<void> {
  const text = await readFile(join(contextDir, 'Dockerfile'), 'utf8');
  const { images } = checkDockerfile(text, userId);
  for (const ref of images) {
    const info = await runtime.inspectImage(ref);
    if (!info) continue; // the build itself reports a missing image
    const owner = info.labels['berth.user'];
    const foreignTag = info.repoTags.find((t) => !checkImageRef(t, userId).ok);
    if ((owner !== undefined && owner !== String(userId)) || foreignTag) {
      throw new Error(`the Dockerfile's image "${ref}" resolves to another user's image (${info.id.slice(0, 19)}); it cannot be used`);
    }
  }
}
