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
 * Which images are the build's: those whose ids its output printed, and, where the build has a
 * cgroup of its own (build-cgroup.ts), those committed from a container seen in it — then their
 * untagged parents and children made since the build began (no other build can make a child of
 * them: the policy refuses `FROM <id>` and builds share no layer cache). The output is the
 * tenant's too, so a printed id only marks an image as a candidate: one listing of the daemon's
 * images decides, and an id nobody committed costs nothing. Only untagged, digestless images
 * made since the build began are removed, without force. A step that prints more than
 * MAX_STEP_IMAGES ids fills the list; the later steps' images are then found through the cgroup
 * only (a stage made of COPY steps alone after such a step stays, bounded by the upload).
 * Written by hand: a few lines over dockerode.
 */
import type Docker from 'dockerode';

/** " ---> 0123456789ab": the daemon's line after a step's image is committed. */
const COMMITTED = /^ ---> ([0-9a-f]{12,64})\s*$/gm;

/** How many printed ids are kept (the first ones): a Dockerfile has far fewer steps. */
export const MAX_STEP_IMAGES = 100_000;

/** The ids (12 hex digits) a build's output says its steps committed, from its output as it comes. */
export class StepImages {
  readonly ids = new Set<string>();

  /** Read one output message (one or more lines). */
  see(text: string): void {
    if (text.indexOf(' ---> ') === -1) return;
    for (const m of text.matchAll(COMMITTED)) {
      if (this.ids.size >= MAX_STEP_IMAGES) return;
      this.ids.add(m[1].slice(0, 12));
    }
  }
}

interface Listed {
  Id: string;
  ParentId: string;
  Created: number;
  RepoTags?: string[] | null;
  RepoDigests?: string[] | null;
}

/** An image a build of `since` (ms) may remove: untagged, digestless, created since then. */
export function isLeftover(info: { RepoTags?: string[] | null; RepoDigests?: string[] | null; created: number }, since: number): boolean {
  const tagged = (info.RepoTags ?? []).some((t) => t !== '<none>:<none>');
  const digested = (info.RepoDigests ?? []).some((d) => !d.startsWith('<none>@'));
  // (a second's slack: the daemon stamps whole seconds in listings)
  return !tagged && !digested && Number.isFinite(info.created) && info.created >= since - 1000;
}

/** How long a removal waits for a stopped step's container to go (the daemon removes it as the build ends). */
export const CONFLICT_WAIT_MS = 10_000;

export interface BuildTrace {
  /** ids its output printed */
  printed: ReadonlySet<string>;
  /** containers seen in its cgroup */
  containers: readonly string[];
  /** when it began (ms) */
  since: number;
}

/**
 * Remove the build's images that lead to no tagged image: its leaves (no child image), each
 * taking its untagged parents with it. Best effort: a leaf still in use (409: a stopped step's
 * container the daemon is removing) is tried again for up to `waitMs` in all. Returns how many
 * leaves were removed.
 */
export async function removeLeftovers(docker: Docker, trace: BuildTrace, waitMs = CONFLICT_WAIT_MS): Promise<number> {
  if (trace.printed.size === 0 && trace.containers.length === 0) return 0;
  const all = (await docker.listImages({ all: true }).catch(() => [])) as unknown as Listed[];
  const byId = new Map<string, Listed>();
  const children = new Map<string, string[]>();
  for (const i of all) {
    byId.set(i.Id, i);
    if (i.ParentId) {
      const c = children.get(i.ParentId);
      if (c) c.push(i.Id); else children.set(i.ParentId, [i.Id]);
    }
  }
  const candidate = (i: Listed | undefined): i is Listed => i !== undefined && isLeftover({ ...i, created: i.Created * 1000 }, trace.since);
  const recent = all.filter(candidate);
  // the build's own: printed, or committed from one of its containers
  const mine = new Set<string>();
  const anchors = new Set(trace.containers);
  for (const i of recent) {
    if (trace.printed.has(i.Id.replace(/^sha256:/, '').slice(0, 12))) mine.add(i.Id);
    else if (anchors.size > 0) {
      const c = await docker.getImage(i.Id).inspect().then((x) => x.Container, () => '');
      if (c && anchors.has(c)) mine.add(i.Id);
    }
  }
  // and their untagged parents and children made since it began
  const todo = [...mine];
  while (todo.length > 0) {
    const id = todo.pop()!;
    const related = [byId.get(id)?.ParentId ?? '', ...(children.get(id) ?? [])];
    for (const r of related) if (r && !mine.has(r) && candidate(byId.get(r))) { mine.add(r); todo.push(r); }
  }
  const leaves = [...mine].filter((id) => !children.has(id)).sort((a, b) => byId.get(b)!.Created - byId.get(a)!.Created);
  const deadline = Date.now() + waitMs;
  let removed = 0;
  for (const id of leaves) {
    for (;;) {
      // no force: the daemon refuses to remove an image a container or another image uses
      const status = await docker.getImage(id).remove({ noprune: false }).then(() => 200, (e: { statusCode?: number }) => e.statusCode ?? 0);
      if (status === 200) removed++;
      if (status !== 409 || Date.now() >= deadline) break;
      await new Promise((res) => setTimeout(res, 200));
    }
  }
  return removed;
}
