import type { Db } from '../db/pool.js';
import type { Logger } from '../../shared/logging.js';
import { USER_STOPPED, type ContainerService } from './service.js';
import { servingRevisions } from '../discovery/route-table.js';
import { provingSql } from '../apps/repo.js';

export type ActivationResult = 'starting' | 'already_running' | 'not_found' | 'not_scaled_to_zero' | 'no_room';

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
  /** when each app's last wake ended (ms): its held requests are served just after */
  private readonly woke = new Map<number, number>();

  constructor(private readonly db: Db, private readonly service: ContainerService, private readonly log: Logger) {}

  /** An instance is being started for this app right now (the autoscaler leaves it alone). */
  isWaking(imageId: number): boolean {
    return this.waking.has(imageId);
  }

  /**
   * The app was woken less than `ms` ago. The requests the proxies held for it reach the new
   * instance only after it is up, so the traffic the autoscaler sees lags the wake: without this
   * it could take the instance away again before they are served (they are not in-flight
   * requests until then). The autoscaler leaves such an app alone for its stable window.
   */
  wokeWithin(imageId: number, ms: number): boolean {
    const at = this.woke.get(imageId);
    if (at === undefined) return false;
    if (Date.now() - at < ms) return true;
    this.woke.delete(imageId);
    return false;
  }

  /** A wake is over; `woke`: it started an instance (a wake that started nothing does not hold the autoscaler back). */
  private done(imageId: number, woke: boolean): void {
    this.waking.delete(imageId);
    if (woke) this.woke.set(imageId, Date.now());
  }

  async request(imageId: number): Promise<ActivationResult> {
    // claimed before any await: concurrent asks (several proxies, one burst) make one instance
    if (this.waking.has(imageId)) return 'starting';
    this.waking.add(imageId);
    let keep = false;
    try {
      const { rows: [img] } = await this.db.query<{ id: number; user_id: number; min_instances: number; status: string; min_instances_provisioned: boolean; app_hostname: string | null; proving: boolean }>(
        `SELECT i.id, i.user_id, i.min_instances, i.status, i.min_instances_provisioned, i.app_hostname, ${provingSql('i')} AS proving
           FROM images i WHERE i.id = $1`, [imageId]);
      if (!img || img.status !== 'ready' || img.app_hostname === null) return 'not_found';
      // a revision that lost its traffic meanwhile is not woken (proxies move its held requests)
      if (!(await servingRevisions(this.db, img.app_hostname)).has(img.id)) return 'not_found';
      // nothing of it wanted running and no room in its owner's quota for one: said now, so the
      // proxies answer the requests they hold at once rather than at the hold's timeout
      const { rows: [w] } = await this.db.query<{ n: number }>(`SELECT count(*)::int AS n FROM containers WHERE image_id = $1 AND desired = 'running'`, [img.id]);
      if (w.n === 0 && (await this.service.roomNow(img.user_id)) <= 0) return 'no_room';
      // (one being proven, its instance not made yet: that one, as the reconcile loop makes it —
      // whichever comes first — not one more besides)
      if (img.min_instances > 0 || (img.proving && !img.min_instances_provisioned)) {
        if (img.min_instances_provisioned) {
          // its first instances are on their way (the proxies hold requests until one is healthy)
          const { rows } = await this.db.query(`SELECT 1 FROM containers WHERE image_id = $1 AND desired = 'running' LIMIT 1`, [imageId]);
          return rows.length ? 'already_running' : 'not_scaled_to_zero';
        }
        // a revision that got traffic back (or was just built): its min_instances, once, exactly
        // as the reconcile loop provisions them (whichever comes first does it)
        keep = true;
        void this.service.create(img.user_id, img.id, 0, { provision: true, atLeast: img.proving ? 1 : 0 })
          .then(() => this.done(imageId, true), (e) => {
            this.log.warn({ imageId, err: (e as Error).message }, 'could not start instances of an app');
            this.done(imageId, false);
          });
        return 'starting';
      }
      keep = true;
      void this.ensure(img.user_id, img.id, 1).then((woke) => this.done(imageId, woke));
      return 'starting';
    } finally {
      if (!keep) this.waking.delete(imageId);
    }
  }

  /**
   * Bring the app to at least `count` wanted-running instances: stopped ones are started first
   * (their containers exist), then new ones created (bounded by max_instances and the quota).
   * Used to wake an app and when a PATCH raises min_instances. Errors are logged, not thrown.
   * True when it started or created any (false: enough were running already, none could be made
   * — max_instances, the quota — or it failed).
   */
  async ensure(userId: number, imageId: number, count: number): Promise<boolean> {
    const t0 = Date.now();
    let reused = 0;
    try {
      const { rows: cs } = await this.db.query<{ id: number; desired: string; status: string; status_reason: string | null; min_instances: number }>(
        `SELECT c.id, c.desired, c.status, c.status_reason, i.min_instances
           FROM containers c JOIN images i ON i.id = c.image_id WHERE c.image_id = $1 ORDER BY c.id`, [imageId]);
      let need = count - cs.filter((c) => c.desired === 'running').length;
      if (need <= 0) return false;
      for (const c of cs) {
        if (need === 0) break;
        // In an app with a floor, what its user stopped stays stopped (a new instance is made
        // instead). An app that scales to zero runs on demand: a user stop scaled it to zero now.
        const kept = c.status_reason === USER_STOPPED && c.min_instances > 0;
        if (c.desired === 'stopped' && !kept && (c.status === 'stopped' || c.status === 'exited' || c.status === 'failed')) {
          await this.service.start(userId, c.id);
          need--;
          reused++;
        }
      }
      // (capped by max_instances and the quota: it may make fewer, or none)
      const made = need > 0 ? (await this.service.create(userId, imageId, need, { cap: true })).length : 0;
      if (reused + made === 0) {
        this.log.warn({ imageId, wanted: count }, 'could not start instances of an app: its max_instances or the container quota is reached');
        return false;
      }
      this.log.info({ imageId, ms: Date.now() - t0, instances: reused + made, reused }, 'started instances of an app');
      return true;
    } catch (e) {
      this.log.warn({ imageId, err: (e as Error).message }, 'could not start instances of an app');
      // (those it started before the failure are started)
      return reused > 0;
    }
  }
}
