import type { Queryable } from '../db/pool.js';
import { ApiError, conflict } from '../http/errors.js';

/**
 * An instance within the operator's ceiling (config `instanceMax`): a tenant's `memory_limit: 1t`
 * or `cpu_limit: 256` would otherwise be no limit at all on a shared host. 400 `instance_too_large`.
 * Callers pass only what the request sets (null otherwise): a value a revision inherits, or set
 * before the ceiling was lowered, keeps working until it is changed.
 */
export function checkInstanceSize(max: { cpus: number | null; memoryBytes: number | null }, cpu: number | null, memoryBytes: number | null): void {
  if (cpu !== null && max.cpus !== null && cpu > max.cpus) {
    throw new ApiError(400, 'instance_too_large', `cpu_limit ${cpu} is more than an instance may have here (${max.cpus} CPUs, BERTH_MAX_INSTANCE_CPUS)`);
  }
  if (memoryBytes !== null && max.memoryBytes !== null && memoryBytes > max.memoryBytes) {
    const mib = (b: number) => `${Math.floor(b / 1024 ** 2)} MiB`;
    throw new ApiError(400, 'instance_too_large', `memory_limit ${mib(memoryBytes)} is more than an instance may have here (${mib(max.memoryBytes)}, BERTH_MAX_INSTANCE_MEMORY)`);
  }
}

/**
 * Per-user upload quotas: images kept (409 `image_quota_exceeded`) and builds queued or running
 * at once (429 `too_many_builds`). Inside a transaction, `lock` serialises the check with the
 * user's other uploads (FOR NO KEY UPDATE: foreign-key checks on the user row are not blocked),
 * so two uploads at once cannot both take the last slot.
 */
export async function checkUploadQuota(q: Queryable, userId: number, quotas: { images: number; builds: number }, lock = false): Promise<void> {
  if (lock) await q.query('SELECT 1 FROM users WHERE id = $1 FOR NO KEY UPDATE', [userId]);
  const { rows: [r] } = await q.query<{ images: number; building: number }>(
    `SELECT count(*)::int AS images, count(*) FILTER (WHERE status = 'building')::int AS building FROM images WHERE user_id = $1`, [userId]);
  if (r.building >= quotas.builds) {
    throw new ApiError(429, 'too_many_builds', `you have ${r.building} build(s) queued or running, the most allowed at once (${quotas.builds}); upload again when one has finished`, { 'retry-after': '10' });
  }
  if (r.images >= quotas.images) {
    throw conflict(`you have ${r.images} images, the most allowed (${quotas.images}); delete one first`, 'image_quota_exceeded');
  }
}
