import type { Db, Queryable } from '../db/pool.js';
import { withTransaction } from '../db/pool.js';
import { recordEvent } from '../events/outbox.js';
import type { ImageRow } from '../images/repo.js';
import { routableSql, startFailedSql, type AppRow } from './repo.js';
import { resolveTraffic, type RevisionState } from './traffic.js';

/**
 * Revision retention (Knative's revision garbage collection): every deploy makes a revision, and
 * without this an app's old revisions (their rows and Docker images) pile up until the user's
 * image quota refuses the next deploy.
 *
 * An app always keeps its active revisions: those that serve or are about to (ResolvedTraffic.
 * serving), the one `latest` stands for, every revision its traffic names by id (even at 0 %,
 * a pinned rollback target) or by tag, its pending deploy, its newest revision (so an app is never
 * emptied), those still building and those that still have instances (draining). Of the others,
 * the `kept` newest stay (to roll back to, or to read a failed build's log), and so does any that
 * was active within `graceMs` (Knative's retain-since-last-active-time: the revision that served
 * until a minute ago is the one a rollback wants). Older ones are deleted as
 * `DELETE /api/images/:id` deletes them.
 */

/** A revision as retention judges it. */
export interface RetainedRevision extends RevisionState {
  /** container rows (any state): the reconcile loop is still draining it, or the user stopped them */
  containers: number;
  /** when it last served or was about to (the reconcile loop's mark, or its creation) */
  last_active_at: Date;
}

/** The ids of the revisions to delete (oldest first). */
export function revisionsToCollect(
  app: Pick<AppRow, 'traffic' | 'pending_image_id'>, revisions: RetainedRevision[], kept: number, graceMs: number, now: number,
): number[] {
  const pending = app.pending_image_id === null ? null : Number(app.pending_image_id);
  const r = resolveTraffic(app.traffic, revisions, pending);
  const active = new Set<number>(r.serving);
  if (r.latest !== null) active.add(r.latest);
  if (pending !== null) active.add(pending);
  // the newest revision, whatever its state: an app is never emptied (a failed deploy's log stays)
  const newest = revisions.reduce<RetainedRevision | undefined>((m, v) => (m === undefined || v.revision > m.revision ? v : m), undefined);
  if (newest !== undefined) active.add(newest.id);
  for (const e of app.traffic) if (e.image_id !== undefined) active.add(Number(e.image_id));
  const inactive = revisions
    .filter((v) => !active.has(v.id) && v.status !== 'building' && v.containers === 0)
    .sort((a, b) => b.revision - a.revision);
  return inactive.slice(kept)
    .filter((v) => now - new Date(v.last_active_at).getTime() >= graceMs)
    .map((v) => v.id).reverse();
}

/** An app's revisions as retention judges them (`lock`: inside the deleting transaction). */
async function judged(q: Queryable, host: string, lock: boolean): Promise<{ app: AppRow; images: (ImageRow & { routable: boolean; failed: boolean })[]; revisions: RetainedRevision[]; now: number } | undefined> {
  const { rows: [app] } = await q.query<AppRow>(`SELECT * FROM apps WHERE app_hostname = $1 AND deleting_at IS NULL${lock ? ' FOR UPDATE' : ''}`, [host]);
  if (!app) return undefined;
  const { rows: images } = await q.query<ImageRow & { routable: boolean; failed: boolean }>(
    `SELECT i.*, ${routableSql('i')} AS routable, ${startFailedSql('i')} AS failed FROM images i WHERE i.app_hostname = $1 ORDER BY i.id${lock ? ' FOR UPDATE' : ''}`, [host]);
  // under the image locks a container being created holds its image row's key lock, so none can
  // appear for these revisions until the deleting transaction ends
  const { rows: counts } = await q.query<{ image_id: number; n: number }>(
    'SELECT image_id, count(*)::int AS n FROM containers WHERE image_id = ANY($1::bigint[]) GROUP BY image_id', [images.map((i) => i.id)]);
  const { rows: [{ now }] } = await q.query<{ now: Date }>('SELECT now() AS now');
  const containers = new Map(counts.map((c) => [Number(c.image_id), c.n]));
  const revisions = images.map((i) => ({
    id: Number(i.id), revision: i.revision, status: i.status, routable: i.routable, failed: i.failed, containers: containers.get(Number(i.id)) ?? 0, last_active_at: i.last_active_at,
  }));
  return { app, images, revisions, now: new Date(now).getTime() };
}

/**
 * Delete what retention says, app by app. Judged first without locks (most passes find nothing,
 * and take no lock); an app with something to delete is judged again in its own transaction,
 * the app row locked first, then its revisions (the order uploads and deletes lock them in), and
 * every deletion gets its `image.deleted` event (reason `retention`). Returns the deleted rows:
 * their Docker images and build directories are the caller's to remove, after the commit.
 */
export async function collectRevisions(db: Db, kept: number, graceMs: number): Promise<ImageRow[]> {
  const { rows: apps } = await db.query<{ app_hostname: string }>(
    `SELECT i.app_hostname FROM images i JOIN apps a ON a.app_hostname = i.app_hostname
      WHERE a.deleting_at IS NULL
      GROUP BY i.app_hostname HAVING count(*) > $1 ORDER BY i.app_hostname`, [kept]);
  const gone: ImageRow[] = [];
  for (const { app_hostname } of apps) {
    const peek = await judged(db, app_hostname, false);
    if (!peek || revisionsToCollect(peek.app, peek.revisions, kept, graceMs, peek.now).length === 0) continue;
    const rows = await withTransaction(db, async (tx) => {
      const j = await judged(tx, app_hostname, true);
      if (!j) return [];
      const ids = new Set(revisionsToCollect(j.app, j.revisions, kept, graceMs, j.now));
      const victims = j.images.filter((i) => ids.has(Number(i.id)));
      if (victims.length === 0) return [];
      await tx.query('DELETE FROM images WHERE id = ANY($1::bigint[])', [victims.map((i) => i.id)]);
      for (const v of victims) {
        await recordEvent(tx, {
          type: 'image.deleted', userId: v.user_id, imageId: v.id, appHostname: v.app_hostname,
          payload: { docker_image: v.docker_image, revision: v.revision, reason: 'retention', kept, last_active_at: new Date(v.last_active_at).toISOString() },
        });
      }
      return victims;
    });
    gone.push(...rows);
  }
  return gone;
}
