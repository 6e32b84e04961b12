/**
 * What a build leaves in the daemon: the images its steps committed that lead to no tagged image.
 *
 * The classic builder commits an image after every step (" ---> <id>" in the output) and chains
 * them; only the last is tagged, when the whole build succeeds. A build that fails or is stopped
 * (BERTH_BUILD_DISK, a timeout) leaves its last committed step as an untagged image, and with it
 * every step before; a multi-stage build leaves each earlier stage's last step the same way. Up
 * to the disk bound per build, again at every build, until an operator prunes. Removing such a
 * leaf (without force) removes the chain under it too; the daemon refuses (409) to remove an
 * image a container or another image still uses, such as a step of the final image.
 *
 * The ids are read from the build's output, which a RUN step can also print. So an id is only
 * removed when it is an image no one could name on purpose: untagged, pulled by no digest,
 * created since the build began. A tenant knows no such id but its own build's (the policy
 * refuses `FROM <id>`, and builds never share a layer cache), so a made-up line can at most
 * leave its own build's images behind. Written by hand: a few lines over dockerode.
 */
import type Docker from 'dockerode';

/** " ---> 0123456789ab": the daemon's line after a step's image is committed. */
const COMMITTED = /^ ---> ([0-9a-f]{12,64})\s*$/gm;

/** How many ids are kept: a Dockerfile has far fewer steps; a build printing more lines forges them. */
export const MAX_STEP_IMAGES = 256;

/** The ids of the images a build's steps committed, newest last, from its output as it comes. */
export class StepImages {
  readonly ids: string[] = [];

  /** Read one output message (one or more lines). */
  see(text: string): void {
    if (text.indexOf(' ---> ') === -1) return;
    for (const m of text.matchAll(COMMITTED)) {
      const id = m[1];
      if (this.ids.includes(id)) continue;
      // the newest are the ones that matter (the leaf): the oldest go first
      if (this.ids.length === MAX_STEP_IMAGES) this.ids.shift();
      this.ids.push(id);
    }
  }
}

/** An image a failed build of `since` may remove: untagged, digestless, created since then. */
export function isLeftover(info: Pick<Docker.ImageInspectInfo, 'RepoTags' | 'RepoDigests' | 'Created'>, since: number): boolean {
  const tagged = (info.RepoTags ?? []).some((t) => t !== '<none>:<none>');
  const digested = (info.RepoDigests ?? []).some((d) => !d.startsWith('<none>@'));
  const created = Date.parse(info.Created);
  // (a second's slack: the daemon stamps to the nanosecond, this process saw the start a little later)
  return !tagged && !digested && Number.isFinite(created) && created >= since - 1000;
}

/** How long a removal waits for a stopped step's container to go (the daemon removes it as the build ends). */
export const CONFLICT_WAIT_MS = 10_000;

/**
 * Remove what a failed build committed, newest first (a step's image goes before its parent).
 * Best effort: an id that is not a leftover, or gone, stays; one still in use (409: a stopped
 * step's container the daemon is removing) is tried again for up to CONFLICT_WAIT_MS in all.
 * Returns how many were removed.
 */
export async function removeLeftovers(docker: Docker, ids: readonly string[], since: number, waitMs = CONFLICT_WAIT_MS): Promise<number> {
  const deadline = Date.now() + waitMs;
  let removed = 0;
  for (let i = ids.length - 1; i >= 0; i--) {
    const image = docker.getImage(ids[i]);
    const info = await image.inspect().catch(() => null);
    if (info === null || !isLeftover(info, since)) continue;
    for (;;) {
      // no force: the daemon refuses to remove an image a container or another image uses
      const status = await image.remove({ noprune: false }).then(() => 200, (e: { statusCode?: number }) => e.statusCode ?? 0);
      if (status === 200) removed++;
      if (status !== 409 || Date.now() >= deadline) break;
      await new Promise((res) => setTimeout(res, 200));
    }
  }
  return removed;
}
