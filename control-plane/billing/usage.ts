import type { Queryable } from '../db/pool.js';
import type { ContainerRow, ImageRow } from '../images/repo.js';

/**
 * Usage records: one per container run. Opened in the transaction that marks the container
 * running (with the vCPU and memory it was given), closed in the transaction that marks it
 * stopped, exited, failed or deleted. A restart — by berth or outside it — closes the record and
 * opens a new one. At most one record per container is open (a partial unique index).
 */

/** vCPU an instance is billed for when its image sets no limit (Cloud Run's default: 1). */
export const DEFAULT_VCPU = 1;

/** The CPU and memory an instance of `img` is made with, and billed for: the image's limits, else the defaults. */
export function instanceSize(img: Pick<ImageRow, 'cpu_limit' | 'memory_limit_bytes'>, defaultMemoryBytes: number): { cpus: number; memoryBytes: number } {
  const cpu = img.cpu_limit === null || img.cpu_limit === undefined ? 0 : Number(img.cpu_limit);
  // no cpu_limit: the vCPU it is billed for, not the whole host
  return { cpus: cpu > 0 ? cpu : DEFAULT_VCPU, memoryBytes: img.memory_limit_bytes === null || img.memory_limit_bytes === undefined ? defaultMemoryBytes : Number(img.memory_limit_bytes) };
}

/** What Docker says a container was made with (HostConfig NanoCpus / Memory; 0: not limited). */
export interface ContainerSize {
  nanoCpus: number;
  memoryBytes: number;
}

/** What a run is billed for: what Docker says the container has, the image's figures where Docker reports no limit. */
export function billedSize(img: Pick<ImageRow, 'cpu_limit' | 'memory_limit_bytes'>, defaultMemoryBytes: number, size: ContainerSize): { vcpu: number; memoryBytes: number } {
  const given = instanceSize(img, defaultMemoryBytes);
  return {
    vcpu: size.nanoCpus > 0 ? size.nanoCpus / 1e9 : given.cpus,
    memoryBytes: size.memoryBytes > 0 ? size.memoryBytes : given.memoryBytes,
  };
}

/**
 * Open a run's record. It is billed for what the container was made with (`size`), which is
 * the image's limits when berth made it; the image's own figures stand in only where Docker
 * reports no limit. (The image's limits can change without a rebuild, and a stopped container
 * restarted by Docker keeps the ones it was made with.)
 */
export async function openUsage(q: Queryable, c: Pick<ContainerRow, 'id' | 'user_id' | 'image_id' | 'docker_id' | 'started_at'>,
  img: Pick<ImageRow, 'app_hostname' | 'cpu_limit' | 'memory_limit_bytes'>, defaultMemoryBytes: number, size: ContainerSize): Promise<void> {
  await closeUsage(q, c.id, 'restarted');
  const { vcpu, memoryBytes: mem } = billedSize(img, defaultMemoryBytes, size);
  await q.query(
    `INSERT INTO usage_records (user_id, image_id, container_id, app_hostname, docker_id, vcpu, memory_bytes, start_time)
     VALUES ($1, $2, $3, $4, $5, $6, $7, LEAST(now(), COALESCE($8::timestamptz, now())))`,
    [c.user_id, c.image_id, c.id, img.app_hostname, c.docker_id, vcpu, mem, c.started_at ?? null]);
}

/** Close the container's open record (if any) now. */
export async function closeUsage(q: Queryable, containerId: number, reason: string): Promise<void> {
  await q.query(
    `UPDATE usage_records SET end_time = GREATEST(now(), start_time), end_reason = $2
      WHERE container_id = $1 AND end_time IS NULL`, [containerId, reason.slice(0, 500)]);
}
