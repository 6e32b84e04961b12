import type { Logger } from '../../shared/logging.js';
import type { Db } from '../db/pool.js';
import { eachLimited, Periodic } from '../periodic.js';
import type { ContainerRow } from '../images/repo.js';
import type { ContainerRuntime } from '../runtime/containers.js';
import type { ContainerService } from './service.js';

export interface DiskWatchOptions {
  db: Db;
  runtime: Pick<ContainerRuntime, 'writableBytes' | 'stop' | 'remove'>;
  service: Pick<ContainerService, 'locks' | 'markDied'>;
  log: Logger;
  /** only the reconcile leader acts */
  isLeader: () => boolean;
  /** what an instance may write to its own filesystem; null: not bounded */
  limitBytes: number | null;
  /** what a stopped instance keeps of it (more: its container is removed, made afresh at its next start); null: everything */
  stoppedLimitBytes?: number | null;
  intervalMs: number;
  /** an instance was stopped: counted for the reconcile loop's replacement backoff */
  onDied?: (c: ContainerRow) => void;
}

/**
 * What an app instance may write to its own filesystem (`BERTH_CONTAINER_DISK`). An instance's
 * writes go to its container's writable layer on the Docker daemon's disk, and Docker bounds
 * them only with storage options most hosts lack (overlay2 on XFS with project quotas). One
 * instance writing without end (`dd if=/dev/zero of=/fill`) would fill that disk: every tenant's
 * builds stop, and every app that writes gets "no space left on device".
 *
 * So the reconcile leader looks at every running instance's writable layer every `intervalMs`
 * (Docker's `SizeRw`, a walk of the layer: two at once, off the API path). One
 * past the limit is stopped and recorded as died, with the reason; the reconcile loop replaces
 * it with a fresh container (its writable layer removed with the old one), as for any crash,
 * with the same backoff when it keeps doing it. A bound rather than a quota: an instance can
 * overshoot by what it writes between two looks. (Cloud Run counts an instance's file writes
 * against its memory; here they are counted on their own.)
 *
 * Stopped instances (by their user, by the autoscaler at zero) keep their container, so that the
 * next start is quick — and with it what they wrote, outside every running limit: a user could
 * stop instance after instance of an app that writes just under the limit and keep terabytes.
 * So a stopped instance's writable layer larger than `stoppedLimitBytes` (BERTH_CONTAINER_STOPPED_DISK,
 * 64 MiB) is removed with its container, as Cloud Run keeps nothing of a stopped instance's
 * files; its next start makes a fresh container (a little slower). That also catches an instance
 * stopped between two looks after writing past the running limit.
 */
export class ContainerDiskWatch {
  private readonly rounds: Periodic;
  /** stops (container and when) measured under the limit: a layer does not grow while stopped */
  private measuredStopped = new Set<string>();

  constructor(private readonly o: DiskWatchOptions) {
    this.rounds = new Periodic(o.intervalMs, () => this.once(), (e) => o.log.warn({ err: e.message }, 'container disk check failed'));
  }

  start(): void {
    if (this.o.limitBytes !== null || (this.o.stoppedLimitBytes ?? null) !== null) this.rounds.start();
  }

  stop(): Promise<void> {
    return this.rounds.stop();
  }

  /** One round (tests call it directly). Returns the ids of the instances stopped. */
  async once(): Promise<number[]> {
    if (!this.o.isLeader()) return [];
    const stopped = await this.overLimit();
    await this.trimStopped();
    return stopped;
  }

  private async overLimit(): Promise<number[]> {
    const limit = this.o.limitBytes;
    if (limit === null) return [];
    const { rows } = await this.o.db.query<{ id: number; docker_id: string }>(
      `SELECT id, docker_id FROM containers WHERE status = 'running' AND docker_id IS NOT NULL ORDER BY id`);
    const over: Array<{ id: number; dockerId: string; bytes: number }> = [];
    // (two at once: each walks a writable layer)
    await eachLimited(rows, 2, async (r) => {
      const bytes = await this.o.runtime.writableBytes(r.docker_id).catch(() => null);
      if (bytes !== null && bytes > limit) over.push({ id: r.id, dockerId: r.docker_id, bytes });
    });
    const stopped: number[] = [];
    for (const c of over) if (await this.stopOne(c, limit)) stopped.push(c.id);
    return stopped;
  }

  /**
   * Remove the containers of stopped instances that keep more than stoppedLimitBytes. Returns
   * their ids. A stopped container's layer does not grow: each is measured once per stop.
   */
  async trimStopped(): Promise<number[]> {
    const keep = this.o.stoppedLimitBytes ?? null;
    if (keep === null) return [];
    const { rows } = await this.o.db.query<{ id: number; docker_id: string; stop: string }>(
      `SELECT id, docker_id, docker_id || '@' || coalesce(stopped_at::text, '') AS stop FROM containers
        WHERE desired = 'stopped' AND status IN ('stopped', 'exited', 'failed') AND docker_id IS NOT NULL ORDER BY id`);
    const measured = new Set<string>();
    const over: Array<{ id: number; dockerId: string; bytes: number }> = [];
    await eachLimited(rows, 2, async (r) => {
      // (once per stop: the same container started, written to and stopped again is a new stop)
      if (this.measuredStopped.has(r.stop)) {
        measured.add(r.stop);
        return;
      }
      const bytes = await this.o.runtime.writableBytes(r.docker_id).catch(() => null);
      if (bytes === null) return;
      // (one over the limit is measured again next time, should its removal fail)
      if (bytes > keep) over.push({ id: r.id, dockerId: r.docker_id, bytes });
      else measured.add(r.stop);
    });
    this.measuredStopped = measured;
    const trimmed: number[] = [];
    for (const c of over) {
      const done = await this.o.service.locks.run(c.id, async () => {
        // claimed in the database first, still that container and still stopped: a start on
        // another control plane either comes before (and this does nothing) or finds no container
        // to reuse and makes a fresh one
        const { rowCount } = await this.o.db.query(
          `UPDATE containers SET docker_id = NULL, host_port = NULL, updated_at = now()
            WHERE id = $1 AND docker_id = $2 AND desired = 'stopped' AND status IN ('stopped', 'exited', 'failed')`, [c.id, c.dockerId]);
        if (!rowCount) return false;
        // (a removal that fails leaves a container no row names: the reconcile loop removes those)
        await this.o.runtime.remove(c.dockerId);
        this.o.log.info({ containerId: c.id, bytes: c.bytes, keepBytes: keep }, 'a stopped instance kept more than it may of what it wrote: its container is removed, made afresh at its next start');
        return true;
      }).catch((e: Error) => {
        this.o.log.warn({ containerId: c.id, err: e.message }, 'could not remove the container of a stopped instance');
        return false;
      });
      if (done) trimmed.push(c.id);
    }
    return trimmed;
  }

  private stopOne(c: { id: number; dockerId: string; bytes: number }, limit: number): Promise<boolean> {
    return this.o.service.locks.run(c.id, async () => {
      // still that instance, still running (a stop or a replacement may have come meanwhile)
      const { rows: [row] } = await this.o.db.query<ContainerRow>(`SELECT * FROM containers WHERE id = $1 AND status = 'running' AND docker_id = $2`, [c.id, c.dockerId]);
      if (!row) return false;
      const reason = `wrote ${size(c.bytes)} to its filesystem, more than the ${size(limit)} an instance may (BERTH_CONTAINER_DISK)`;
      await this.o.runtime.stop(c.dockerId, 0);
      const died = await this.o.service.markDied(row, { reason, exitCode: null });
      if (died) this.o.onDied?.(row);
      this.o.log.warn({ containerId: c.id, bytes: c.bytes, limitBytes: limit }, 'instance stopped: it wrote more than its disk limit');
      return true;
    });
  }
}

function size(n: number): string {
  return n >= 1024 ** 3 ? `${(n / 1024 ** 3).toFixed(1)} GiB` : `${Math.max(1, Math.round(n / 1024 ** 2))} MiB`;
}
