import type { Logger } from '../../shared/logging.js';
import type { Db } from '../db/pool.js';
import { eachLimited, Periodic } from '../periodic.js';
import type { ContainerRuntime } from '../runtime/containers.js';
import type { ImageRow } from '../images/repo.js';
import { billedSize } from './usage.js';

export interface SamplerOptions {
  db: Db;
  runtime: ContainerRuntime;
  log: Logger;
  /** only the reconcile leader writes */
  isLeader: () => boolean;
  intervalMs: number;
  /** Docker stats calls at once */
  concurrency?: number;
  defaultMemoryBytes: number;
}

interface OpenRecord {
  id: string;
  container_id: string;
  docker_id: string | null;
  c_docker_id: string | null;
  c_status: string | null;
  last_sample_at: Date | null;
  start_time: Date;
}

/**
 * Samples what every open usage record's container actually uses (Docker stats: the cgroup's
 * CPU time since the container started, memory in use) every `intervalMs`, off the API path, at
 * most `concurrency` Docker calls at once, on the reconcile leader only. CPU time is a counter of
 * the container's run, so a missed sample loses nothing; memory is integrated over time
 * (byte-seconds, and the peak).
 *
 * Safety net for the lifecycle hooks: an open record whose container is gone, not running, or
 * now another Docker container is closed; a running container without an open record (one that
 * was running before metering existed) gets one from now.
 */
export class UsageSampler {
  private readonly rounds: Periodic;

  constructor(private readonly o: SamplerOptions) {
    this.rounds = new Periodic(o.intervalMs, () => this.once(), (e) => o.log.warn({ err: e.message }, 'usage sampling failed'));
  }

  start(): void {
    this.rounds.start();
  }

  stop(): Promise<void> {
    return this.rounds.stop();
  }

  /** One round (tests call it directly). */
  async once(): Promise<void> {
    if (!this.o.isLeader()) return;
    const db = this.o.db;
    await this.adoptRunning();
    const { rows } = await db.query<OpenRecord>(
      `SELECT u.id, u.container_id, u.docker_id, c.docker_id AS c_docker_id, c.status AS c_status, u.last_sample_at, u.start_time
         FROM usage_records u LEFT JOIN containers c ON c.id = u.container_id
        WHERE u.end_time IS NULL`);
    const live: OpenRecord[] = [];
    for (const r of rows) {
      const gone = r.c_status === null || !['running', 'stopping'].includes(r.c_status) || (r.docker_id !== null && r.c_docker_id !== r.docker_id);
      if (gone) {
        await db.query(`UPDATE usage_records SET end_time = GREATEST(start_time, COALESCE(last_sample_at, now())), end_reason = 'closed by the sampler: container no longer running'
                         WHERE id = $1 AND end_time IS NULL`, [r.id]);
        this.o.log.warn({ usageRecord: r.id, containerId: r.container_id }, 'closed a usage record the lifecycle left open');
      } else if (r.c_docker_id) live.push(r);
    }
    await eachLimited(live, this.o.concurrency ?? 4, (r) =>
      this.sample(r).catch((e) => this.o.log.debug({ containerId: r.container_id, err: (e as Error).message }, 'stats sample failed')));
  }

  private async sample(r: OpenRecord): Promise<void> {
    const s = await this.o.runtime.stats(r.c_docker_id!);
    if (!s) return;
    // memory integrated over the time since the last sample (or the start); CPU is the cgroup's counter
    await this.o.db.query(
      `UPDATE usage_records SET
         cpu_seconds_used = GREATEST(cpu_seconds_used, $2::double precision),
         memory_byte_seconds = memory_byte_seconds + $3::double precision * GREATEST(0, extract(epoch FROM now() - COALESCE(last_sample_at, start_time))),
         memory_peak_bytes = GREATEST(memory_peak_bytes, $3::bigint),
         samples = samples + 1, last_sample_at = now()
       WHERE id = $1 AND end_time IS NULL`, [r.id, s.cpuNs / 1e9, s.memoryBytes]);
  }

  /**
   * Running containers with no open record (running since before metering, or a missed hook) get
   * one from now, billed for what Docker says each has (its limits may differ from the image's
   * since: they apply at the next start). A container Docker no longer runs is left to the
   * reconcile loop.
   */
  private async adoptRunning(): Promise<void> {
    const { rows } = await this.o.db.query<{ id: number; docker_id: string } & Pick<ImageRow, 'cpu_limit' | 'memory_limit_bytes'>>(
      `SELECT c.id, c.docker_id, i.cpu_limit, i.memory_limit_bytes
         FROM containers c JOIN images i ON i.id = c.image_id
        WHERE c.status = 'running' AND c.docker_id IS NOT NULL
          AND NOT EXISTS (SELECT 1 FROM usage_records u WHERE u.container_id = c.id AND u.end_time IS NULL)
        ORDER BY c.id LIMIT 100`);
    let adopted = 0;
    for (const r of rows) {
      const st = await this.o.runtime.inspect(r.docker_id).catch(() => null);
      if (!st?.running) continue;
      const size = billedSize(r, this.o.defaultMemoryBytes, st);
      // the lifecycle may have opened one meanwhile (a partial unique index keeps one open per container)
      const { rowCount } = await this.o.db.query(
        `INSERT INTO usage_records (user_id, image_id, container_id, app_hostname, docker_id, vcpu, memory_bytes, start_time)
         SELECT c.user_id, c.image_id, c.id, i.app_hostname, c.docker_id, $3, $4, now()
           FROM containers c JOIN images i ON i.id = c.image_id
          WHERE c.id = $1 AND c.status = 'running' AND c.docker_id = $2
            AND NOT EXISTS (SELECT 1 FROM usage_records u WHERE u.container_id = c.id AND u.end_time IS NULL)
         ON CONFLICT DO NOTHING`, [r.id, r.docker_id, size.vcpu, size.memoryBytes]);
      adopted += rowCount ?? 0;
    }
    if (adopted) this.o.log.info({ adopted }, 'usage records opened for running containers that had none');
  }
}
