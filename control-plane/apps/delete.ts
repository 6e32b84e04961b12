import type { FastifyBaseLogger, FastifyInstance } from 'fastify';
import { withTransaction, type Queryable } from '../db/pool.js';
import { recordEvent } from '../events/outbox.js';
import { ApiError, conflict } from '../http/errors.js';
import { discardImage } from '../images/plugin.js';
import type { ContainerRow, ImageRow } from '../images/repo.js';
import { holdHostname, type AppRow } from './repo.js';

/** Why a deleted app's instances were removed (container.deleted events, usage records). */
const REASON = 'app deleted';

/**
 * `DELETE /api/apps/:host`, as `gcloud run services delete`: the app's instances are drained and
 * removed, then every revision goes, with their events. In three steps:
 *
 * 1. `apps.deleting_at` is set. From then on no revision of the app serves: the route table drops
 *    its hostnames, and the reconcile loop, the autoscaler and wakes start nothing for it (they
 *    all go by `servingRevisions`).
 * 2. Each instance is drained from the proxies, stopped and removed, all at once, each under its
 *    row lock (the reconcile loop leaves the instances of an app deleting for less than ten minutes
 *    alone; past that — a DELETE that stopped half-way — it retires them as any without traffic).
 * 3. The rows go in one transaction with their events, the Docker images after it.
 *
 * A failure in step 2 (Docker away) leaves the app deleting and unserved; the same DELETE,
 * repeated, finishes it. `own` resolves and checks the hostname (404 for another user's).
 */
export async function deleteApp(
  app: FastifyInstance, userId: number, own: (q: Queryable, lock: boolean) => Promise<AppRow>, log: FastifyBaseLogger,
): Promise<void> {
  const { service, hub, reconciler } = app.platform;
  const a = await withTransaction(app.db, async (tx) => {
    const row = await own(tx, true);
    if (row.deleting_at === null) {
      await tx.query('UPDATE apps SET deleting_at = now() WHERE app_hostname = $1', [row.app_hostname]);
      await recordEvent(tx, { type: 'app.deleting', userId, appHostname: row.app_hostname, payload: {} });
    }
    return row;
  });
  app.events.nudge();
  hub.schedule();

  // (only while this user's app is still the one deleting: a DELETE sent twice must not reach an
  // app uploaded under the name after the first one finished)
  const { rows: instances } = await app.db.query<ContainerRow>(
    `SELECT c.id FROM containers c JOIN images i ON i.id = c.image_id JOIN apps a ON a.app_hostname = i.app_hostname
      WHERE i.app_hostname = $1 AND i.user_id = $2 AND a.user_id = $2 AND a.deleting_at IS NOT NULL ORDER BY c.id`, [a.app_hostname, a.user_id]);
  const results = await Promise.allSettled(instances.map((c) => service.locks.run(c.id, async () => {
    const { rows: [cur] } = await app.db.query<ContainerRow>('SELECT * FROM containers WHERE id = $1', [c.id]);
    if (cur) await service.removeLocked(cur, REASON);
  })));
  const failed = results.filter((r): r is PromiseRejectedResult => r.status === 'rejected');
  if (failed.length) {
    const why = failed[0].reason instanceof Error ? failed[0].reason.message : String(failed[0].reason);
    log.warn({ app: a.app_hostname, failed: failed.length, err: why }, 'could not remove every instance of an app being deleted');
    throw new ApiError(503, 'app_delete_incomplete',
      `${failed.length} of ${instances.length} instance(s) of ${a.app_hostname} could not be removed (${why}); the app no longer serves — delete it again to finish`, { 'retry-after': '5' });
  }

  const images = await withTransaction(app.db, async (tx) => {
    // another DELETE finished it meanwhile (and the name may be someone's new app by now): done
    const { rows: still } = await tx.query(
      'SELECT 1 FROM apps WHERE app_hostname = $1 AND user_id = $2 AND deleting_at IS NOT NULL FOR UPDATE', [a.app_hostname, a.user_id]);
    if (still.length === 0) return null;
    const { rows: imgs } = await tx.query<ImageRow>('SELECT * FROM images WHERE app_hostname = $1 ORDER BY id FOR UPDATE', [a.app_hostname]);
    const { rows: cs } = await tx.query<ContainerRow>('SELECT * FROM containers WHERE image_id = ANY($1::bigint[]) ORDER BY id FOR UPDATE', [imgs.map((i) => i.id)]);
    // started by hand (POST /api/containers) while the others were being removed
    if (cs.length) {
      throw conflict(`app ${a.app_hostname} got ${cs.length} new instance(s) while it was being deleted (containers ${cs.map((c) => c.id).join(', ')}); delete it again`, 'app_in_use');
    }
    await tx.query('DELETE FROM images WHERE app_hostname = $1', [a.app_hostname]);
    for (const img of imgs) {
      await recordEvent(tx, { type: 'image.deleted', userId, imageId: img.id, appHostname: img.app_hostname, payload: { docker_image: img.docker_image, revision: img.revision } });
    }
    await tx.query('DELETE FROM apps WHERE app_hostname = $1', [a.app_hostname]);
    await holdHostname(tx, a.app_hostname, a.user_id, app.config.hostnameHoldDays, app.config.quotas.images);
    // every instance this deletion removed, by whichever DELETE (a retried or concurrent one saw
    // fewer than it did): those recorded since the deletion began
    const { rows: [removed] } = await tx.query<{ n: number }>(
      `SELECT count(*)::int AS n FROM events WHERE user_id = $2 AND app_hostname = $1 AND type = 'container.deleted' AND payload->>'reason' = $3
         AND id > (SELECT coalesce(max(id), 0) FROM events WHERE user_id = $2 AND app_hostname = $1 AND type = 'app.deleting')`,
      [a.app_hostname, userId, REASON]);
    await recordEvent(tx, { type: 'app.deleted', userId, appHostname: a.app_hostname, payload: { revisions: imgs.map((r) => r.revision), instances_removed: removed.n } });
    return imgs;
  });
  if (images === null) return;
  app.events.nudge();
  hub.schedule();
  reconciler.kick();
  for (const img of images) await discardImage(app, img, log);
}
