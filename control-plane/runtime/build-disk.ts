/**
 * A ceiling on the disk one build writes.
 *
 * A RUN step can write until the host's disk is full (`dd if=/dev/zero of=/x`), and the daemon's
 * build API cannot bound it: overlay2 layer sizes need XFS project quotas and a storage option
 * the build API does not have. So berth watches the build instead. Its output names each step's
 * container (` ---> Running in <id>`) and each finished layer (` ---> <id>`); every
 * POLL_MS the running step's writable layer (`SizeRw`) plus the image so far (`Size`, base image
 * included) is compared with the limit, and the build is aborted past it (the daemon then
 * removes the step's container and its layer with it: `forcerm`).
 *
 * A bound, not a quota: a step can overshoot by what it writes between two looks (one poll, or
 * the time one `SizeRw` takes to add up a large layer). Written by hand: it is a few lines over
 * dockerode and exists nowhere else.
 */
import type Docker from 'dockerode';

/** How often the running step's size is read. */
export const POLL_MS = 1000;

const RUNNING = / ---> Running in ([0-9a-f]{12,64})\b/g;
const LAYER = /^ ---> ([0-9a-f]{12,64})\s*$/gm;

export class BuildDiskWatch {
  private step: string | null = null;
  private layer: string | null = null;
  private layerBytes = 0;
  private timer: NodeJS.Timeout | undefined;
  private busy = false;
  private done = false;

  constructor(
    private readonly docker: Docker,
    readonly limitBytes: number,
    /** called once when the build is past the limit, with a message for the build log */
    private readonly onOver: (message: string) => void,
    private readonly pollMs = POLL_MS,
  ) {}

  /** Build output (the `stream` text of the daemon's messages). */
  see(text: string): void {
    for (const m of text.matchAll(RUNNING)) this.step = m[1];
    for (const m of text.matchAll(LAYER)) {
      this.layer = m[1];
      this.step = null;
    }
  }

  start(): void {
    this.timer = setInterval(() => { void this.poll(); }, this.pollMs);
    this.timer.unref();
  }

  stop(): void {
    this.done = true;
    clearInterval(this.timer);
  }

  overMessage(imageBytes: number, stepBytes: number): string {
    return `the build wrote more than ${mib(this.limitBytes)} of disk (the image so far ${mib(imageBytes)}, the running step ${mib(stepBytes)}; BERTH_BUILD_DISK)`;
  }

  /** One look; public for tests. Errors (a step's container already gone) are not the build's. */
  async poll(): Promise<void> {
    if (this.busy || this.done) return;
    this.busy = true;
    try {
      const layer = this.layer;
      if (layer !== null) {
        const info = await this.docker.getImage(layer).inspect().catch(() => null);
        // only while it is still the newest layer (a later one may have been seen meanwhile)
        if (info !== null && this.layer === layer) this.layerBytes = info.Size ?? 0;
      }
      let stepBytes = 0;
      const step = this.step;
      if (step !== null) {
        const c = await this.docker.getContainer(step).inspect({ size: true } as object).catch(() => null) as { SizeRw?: number } | null;
        stepBytes = c?.SizeRw ?? 0;
      }
      const total = this.layerBytes + stepBytes;
      if (total > this.limitBytes && !this.done) {
        this.stop();
        this.onOver(this.overMessage(this.layerBytes, stepBytes));
      }
    } finally {
      this.busy = false;
    }
  }
}

function mib(n: number): string {
  return n >= 1024 ** 3 ? `${(n / 1024 ** 3).toFixed(1)} GiB` : `${Math.round(n / 1024 ** 2)} MiB`;
}
