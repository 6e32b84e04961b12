/**
 * Bounds on the disk builds fill.
 *
 * A RUN step can write until the host's disk is full (`dd if=/dev/zero of=/x`), and the daemon's
 * build API cannot bound it: overlay2 layer sizes need XFS project quotas and a storage option
 * the build API does not have. So berth watches each build, once every POLL_MS:
 *
 * - **What its steps wrote** (`BERTH_BUILD_DISK`): the writable layer (`SizeRw`) of every
 *   container the build has run, summed over the build (each becomes a layer; every stage of a
 *   multi-stage build counts). The containers are found in the build's own cgroup
 *   (build-cgroup.ts), which only the daemon writes — never in the build's output, where a step
 *   could print a made-up ` ---> Running in <id>`. Without that cgroup (not a local cgroupfs
 *   daemon) this part does not run; the finished image is still measured (docker.ts).
 * - **The host's free disk** (`BERTH_BUILD_MIN_FREE`), where the daemon keeps its data: below
 *   the floor the build stops, whatever wrote the bytes (a COPY, an archive, a pull, another
 *   build). Needs the daemon's data directory to be visible here (a local daemon).
 *
 * Past either the build is aborted (the daemon removes the running step's container and what it
 * wrote: `forcerm`). A bound rather than a quota: a step can overshoot by what it writes between
 * two looks, and a layer too slow to measure (millions of files) fails the build after
 * MEASURE_TIMEOUT_MS. Written by hand: a few lines over dockerode and statfs; nothing does this.
 */
import { statfs } from 'node:fs/promises';
import type Docker from 'dockerode';

/** What a tenant hears when the floor stops a build (the figures go to the operator's log). */
export const SHORT_OF_DISK = 'the build host is short of disk space; try again later';

/** The free bytes of the filesystem holding `path` when fewer than `floorBytes`; null when there is room (or it cannot be read). */
export async function freeBelow(path: string, floorBytes: number): Promise<number | null> {
  const s = await statfs(path).catch(() => null);
  if (s === null) return null;
  const free = s.bavail * s.bsize;
  return free < floorBytes ? free : null;
}

/** How often a build is looked at. */
export const POLL_MS = 1000;
/** A step's layer that the daemon cannot add up within this long fails the build. */
export const MEASURE_TIMEOUT_MS = 60_000;

export interface DiskWatchOptions {
  /** what the build's steps may write in all; null: not bounded */
  limitBytes: number | null;
  /** the build's containers now (BuildCgroup.containers); null: they cannot be known here */
  containers: (() => Promise<string[]>) | null;
  /** stop the build when the filesystem holding `path` has less than `bytes` free; null: no floor */
  floor: { path: string; bytes: number } | null;
  /** called once, with the reason for the build log, when the build must stop */
  onOver: (message: string) => void;
  /** the floor was crossed (for the operator's log: the tenant only hears that the host is short of disk) */
  onLowDisk?: (freeBytes: number, floorBytes: number) => void;
  pollMs?: number;
}

export class BuildDiskWatch {
  /** the most each container of the build was seen to have written */
  private readonly written = new Map<string, number>();
  private timer: NodeJS.Timeout | undefined;
  private busy = false;
  private done = false;

  constructor(private readonly docker: Docker, private readonly o: DiskWatchOptions) {}

  /** The build's containers seen so far (its steps'; each was in the build's own cgroup). */
  get containers(): string[] {
    return [...this.written.keys()];
  }

  get writtenBytes(): number {
    let n = 0;
    for (const v of this.written.values()) n += v;
    return n;
  }

  start(): void {
    this.timer = setInterval(() => { void this.poll(); }, this.o.pollMs ?? POLL_MS);
    this.timer.unref();
  }

  stop(): void {
    this.done = true;
    clearInterval(this.timer);
  }

  /** One look; public for tests. Never throws. */
  async poll(): Promise<void> {
    if (this.busy || this.done) return;
    this.busy = true;
    try {
      const why = (await this.lowOnDisk()) ?? (await this.overLimit());
      if (why !== null && !this.done) {
        this.stop();
        this.o.onOver(why);
      }
    } catch {
      // a daemon hiccup: the next look tries again
    } finally {
      this.busy = false;
    }
  }

  private async lowOnDisk(): Promise<string | null> {
    const f = this.o.floor;
    if (f === null) return null;
    const free = await freeBelow(f.path, f.bytes);
    if (free === null) return null;
    this.o.onLowDisk?.(free, f.bytes);
    return SHORT_OF_DISK;
  }

  private async overLimit(): Promise<string | null> {
    const limit = this.o.limitBytes;
    if (limit === null || this.o.containers === null) return null;
    for (const id of await this.o.containers()) {
      const c = await this.docker.getContainer(id).inspect({ size: true, abortSignal: AbortSignal.timeout(MEASURE_TIMEOUT_MS) } as object)
        .catch((e: Error) => (e.name === 'AbortError' || e.name === 'TimeoutError' ? 'timeout' as const : null)) as { SizeRw?: number } | 'timeout' | null;
      if (c === 'timeout') return `a build step wrote more than could be measured in ${MEASURE_TIMEOUT_MS / 1000} s (BERTH_BUILD_DISK)`;
      if (c === null) continue; // the step ended meanwhile: what it wrote was seen before
      this.written.set(id, Math.max(this.written.get(id) ?? 0, c.SizeRw ?? 0));
    }
    const total = this.writtenBytes;
    return total > limit ? this.overMessage(total) : null;
  }

  overMessage(bytes: number, what = 'its steps wrote'): string {
    return `the build used more than ${size(this.o.limitBytes ?? 0)} of disk (${what} ${size(bytes)}; BERTH_BUILD_DISK)`;
  }
}

function size(n: number): string {
  return n >= 1024 ** 3 ? `${(n / 1024 ** 3).toFixed(1)} GiB` : `${Math.round(n / 1024 ** 2)} MiB`;
}
