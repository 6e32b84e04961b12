import type { Db } from '../db/pool.js';
import type { Logger } from '../../shared/logging.js';
import type { ContainerService } from './service.js';

export type ActivationResult = 'starting' | 'already_running' | 'not_found' | 'not_scaled_to_zero';

/**
 * Waking a scaled-to-zero app (min_instances 0) when a proxy holds requests for it
 * (`POST /v1/routes/img-{id}/activate`). If an instance is already wanted running (starting or
 * up), nothing more happens: proxies get its endpoint with the route table once it is healthy.
 * Otherwise a stopped instance is started (its container already exists: the fastest cold
 * start), or a new one created. The Docker work runs after the answer, never on the request.
 * One wake per image at a time; concurrent asks (several proxies, one burst) coalesce.
 */
export class Activation {
  private readonly waking = new Set<number>();

  constructor(private readonly db: Db, private readonly service: ContainerService, private readonly log: Logger) {}

  /** An instance is being started for this app right now (the autoscaler leaves it alone). */
  isWaking(imageId: number): boolean {
    return this.waking.has(imageId);
  }

  async request(imageId: number): Promise<ActivationResult> {
    const { rows: [img] } = await this.db.query<{ id: number; user_id: number; min_instances: number; status: string }>(
      'SELECT id, user_id, min_instances, status FROM images WHERE id = $1', [imageId]);
    if (!img || img.status !== 'ready') return 'not_found';
    if (img.min_instances > 0) return 'not_scaled_to_zero';
    if (this.waking.has(img.id)) return 'starting';
    const { rows: [{ n }] } = await this.db.query<{ n: number }>(
      `SELECT count(*)::int AS n FROM containers WHERE image_id = $1 AND desired = 'running'`, [img.id]);
    if (n > 0) return 'already_running';
    this.waking.add(img.id);
    void this.wake(img.user_id, img.id).finally(() => this.waking.delete(img.id));
    return 'starting';
  }

  private async wake(userId: number, imageId: number): Promise<void> {
    const t0 = Date.now();
    try {
      const { rows: [stopped] } = await this.db.query<{ id: number }>(
        `SELECT id FROM containers WHERE image_id = $1 AND desired = 'stopped' AND status IN ('stopped', 'exited', 'failed') ORDER BY id LIMIT 1`, [imageId]);
      if (stopped) await this.service.start(userId, stopped.id);
      else await this.service.create(userId, imageId, 1, { cap: true });
      this.log.info({ imageId, ms: Date.now() - t0, reused: !!stopped }, 'woke a scaled-to-zero app');
    } catch (e) {
      this.log.warn({ imageId, err: (e as Error).message }, 'could not wake a scaled-to-zero app');
    }
  }
}
