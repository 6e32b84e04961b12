import Docker from 'dockerode';
import { ensureBusyboxImage } from '../../bench/lib/busybox-image.js';
import { describe, it } from 'vitest';

/**
 * Docker for tests. A suite that needs Docker is skipped, with the reason printed, when no daemon
 * answers — unless BERTH_REQUIRE_DOCKER=1 (CI), in which case it fails.
 */

export const BASE_IMAGE = 'berth-test/busybox:1';
export const docker = new Docker(process.env.DOCKER_HOST?.startsWith('unix://') ? { socketPath: process.env.DOCKER_HOST.slice(7) } : undefined);
export const dockerRequired = process.env.BERTH_REQUIRE_DOCKER === '1';


let status: Promise<{ ok: boolean; reason: string }> | undefined;

/** Is a daemon reachable and is the local base image available (built on first call)? */
export function dockerStatus(): Promise<{ ok: boolean; reason: string }> {
  status ??= (async () => {
    try {
      const ac = new AbortController();
      const t = setTimeout(() => ac.abort(), 3000);
      try { await (docker.ping as (o: object) => Promise<unknown>)({ abortSignal: ac.signal }); } finally { clearTimeout(t); }
    } catch (e) {
      return { ok: false, reason: `no Docker daemon reachable (${(e as Error).message}); start dockerd or run .ci/run` };
    }
    try {
      await ensureBaseImage();
    } catch (e) {
      return { ok: false, reason: `could not create ${BASE_IMAGE}: ${(e as Error).message}` };
    }
    return { ok: true, reason: '' };
  })();
  return status;
}

/**
 * `describe` that runs only with Docker. Without a daemon: skipped with a printed reason, or a
 * failing test when BERTH_REQUIRE_DOCKER=1.
 */
export async function describeWithDocker(name: string, fn: () => void): Promise<void> {
  const s = await dockerStatus();
  if (s.ok) { describe(name, fn); return; }
  if (dockerRequired) {
    describe(name, () => { it('requires Docker (BERTH_REQUIRE_DOCKER=1)', () => { throw new Error(s.reason); }); });
    return;
  }
  process.stderr.write(`[skip] ${name}: ${s.reason}\n`);
  describe.skip(`${name} (skipped: ${s.reason})`, fn);
}

/** The base image `berth-test/busybox:1` from the host's static busybox (bench/lib/busybox-image.ts). */
export function ensureBaseImage(ref = BASE_IMAGE): Promise<void> {
  return ensureBusyboxImage(docker, ref);
}

/** Remove every container of one berth cluster (tests: containers outlive a stopped control plane by design). */
export async function removeClusterContainers(clusterId: string): Promise<void> {
  const list = await docker.listContainers({ all: true, filters: JSON.stringify({ label: [`berth.cluster=${clusterId}`] }) });
  await Promise.all(list.map((c) => docker.getContainer(c.Id).remove({ force: true }).catch(() => {})));
}
