import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
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
  const { images } = checkDockerfile(text, userId);
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
