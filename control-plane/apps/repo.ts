import { withTransaction, type Db, type Queryable } from '../db/pool.js';
import { recordEvent } from '../events/outbox.js';
import { INHERITED_FIELDS } from '../images/fields.js';
import type { ImageRow, JoinsTraffic } from '../images/repo.js';
import { conflict } from '../http/errors.js';
import { canonical, resolveTraffic, tagHost, trafficAfterDeploy, type TrafficEntry, type TrafficRevision } from './traffic.js';

/** An `apps` row: one user's hostname, its revision counter and its traffic split. */
export interface AppRow {
  app_hostname: string;
  user_id: number;
  last_revision: number;
  traffic: TrafficEntry[];
  /** a revision deployed with traffic that takes it once it can serve (apps/traffic.ts) */
  pending_image_id: number | null;
  /** set by DELETE /api/apps/:host while its instances are removed: no revision serves (apps/delete.ts) */
  deleting_at: Date | null;
  /** only requests with one of its invoker tokens reach it (apps/access.ts) */
  private: boolean;
  created_at: Date;
  updated_at: Date;
}

/** Who owns a hostname, and the newest revision (what a new upload inherits from). */
export async function appOwner(q: Queryable, host: string): Promise<(AppRow & { previous: ImageRow | undefined }) | undefined> {
  if (!host) return undefined;
  const { rows: [a] } = await q.query<AppRow>('SELECT * FROM apps WHERE app_hostname = $1', [host]);
  if (!a) return undefined;
  const { rows: [prev] } = await q.query<ImageRow>('SELECT * FROM images WHERE app_hostname = $1 ORDER BY revision DESC LIMIT 1', [host]);
  return { ...a, previous: prev };
}

/** The previous revision's settings as upload fields (strings, as multipart delivers them). */
export function inheritedFields(prev: ImageRow | undefined): Record<string, string> {
  const out: Record<string, string> = {};
  if (!prev) return out;
  for (const k of INHERITED_FIELDS) {
    const v = (prev as unknown as Record<string, unknown>)[k];
    if (v !== null && v !== undefined) out[k] = String(v);
  }
  return out;
}

/**
 * Take the next revision number of `host` for `userId`, creating the app on its first upload.
 * The app row stays locked until the transaction ends (uploads and traffic changes of one app go
 * one after the other). Undefined when another user owns the hostname.
 */
export async function claimRevision(tx: Queryable, host: string, userId: number): Promise<(AppRow & { revision: number }) | undefined> {
  // a hostname whose app was deleted lately is its owner's still (hostname_holds); the owner
  // taking it again, or the end of the hold, frees it
  await checkHold(tx, host, userId);
  await tx.query('DELETE FROM hostname_holds WHERE app_hostname = $1', [host]);
  const { rows: [a] } = await tx.query<AppRow>(
    `INSERT INTO apps (app_hostname, user_id, last_revision) VALUES ($1, $2, 1)
     ON CONFLICT (app_hostname) DO UPDATE SET last_revision = apps.last_revision + 1, updated_at = now()
       WHERE apps.user_id = EXCLUDED.user_id
     RETURNING *`, [host, userId]);
  // the upload waited for the delete's lock on the row; it would become a revision that is deleted next
  if (a?.deleting_at) throw conflict(`app ${host} is being deleted; upload again once it is gone`, 'app_deleting');
  return a ? { ...a, revision: a.last_revision } : undefined;
}

/**
 * SQL for "this revision is started once to prove it can serve before it takes the traffic" on
 * the images row `alias`: one that scales from zero, deployed with traffic (`proof_required`,
 * decided then by joinTraffic), not healthy yet and not given up — as Cloud Run starts every new
 * revision before it routes to it, an app's first one too (Knative's initial scale of one). Its
 * floor is one instance until then (the reconcile loop starts it, the autoscaler keeps it); once
 * proven, that instance scales to zero when idle like any other.
 */
export const provingSql = (alias: string) => `(${alias}.proof_required AND ${alias}.routable_at IS NULL AND ${alias}.start_failed_at IS NULL)`;

/**
 * SQL for "this revision is proven outside the split" (RevisionState.aside): a plain deploy into a
 * kept split that gives it no share (`joins_traffic` none, not `no_traffic`; joinTraffic) is
 * started once all the same, as Cloud Run makes every deployed revision ready, so that the deploy
 * says whether it can serve and a split may name it afterwards (a share by hand needs a revision
 * that served: checkTraffic). One instance (the reconcile loop), until it is healthy once, given
 * up on, or superseded by any newer revision of the app (the newest deploy wins: it stays
 * unproven, as a superseded pending one does, so never `latest`); then it is scaled to zero until
 * a split names it. One the split names (a tag) is not aside: it serves its tag, proven as any other.
 */
export const provingAsideSql = (alias: string) => `(${provingSql(alias)} AND ${alias}.joins_traffic = 'none'
  AND NOT EXISTS (SELECT 1 FROM images pn WHERE pn.app_hostname = ${alias}.app_hostname AND pn.revision > ${alias}.revision)
  AND NOT EXISTS (SELECT 1 FROM apps pa WHERE pa.app_hostname = ${alias}.app_hostname AND pa.traffic @> jsonb_build_array(jsonb_build_object('image_id', ${alias}.id))))`;

/**
 * SQL for "the reconcile loop owes this revision its first instances" on the images row `alias`:
 * built, with a floor or being proven, and not provisioned yet. One definition for the loop's
 * provisioning and the verdict on a revision none of whose instances can be made
 * (apps/start-failure.ts judgeBlocked).
 */
export const owedSql = (alias: string) => `(${alias}.status = 'ready' AND (${alias}.min_instances > 0 OR ${provingSql(alias)}) AND NOT ${alias}.min_instances_provisioned)`;

/**
 * SQL for "this revision can take traffic" (RevisionState.routable) on the images row `alias`:
 * healthy once, or ready and scaling from zero (unless it is being proven first: provingSql).
 * The one definition every query uses.
 */
export const routableSql = (alias: string) => `(${alias}.routable_at IS NOT NULL OR (${alias}.status = 'ready' AND ${alias}.min_instances = 0 AND NOT ${provingSql(alias)}))`;

/** SQL for RevisionState.failed on the images row `alias` (apps/start-failure.ts). */
export const startFailedSql = (alias: string) => `(${alias}.start_failed_at IS NOT NULL)`;

/** Every revision of an app, as the traffic resolution (and a split by hand: checkTraffic) sees them. */
export async function revisionStates(q: Queryable, host: string): Promise<TrafficRevision[]> {
  const { rows } = await q.query<TrafficRevision>(
    `SELECT i.id, i.revision, i.status, ${routableSql('i')} AS routable, ${startFailedSql('i')} AS failed, i.routable_at IS NOT NULL AS served,
            ${provingAsideSql('i')} AS aside
       FROM images i WHERE i.app_hostname = $1 ORDER BY i.revision`, [host]);
  return rows;
}

/** Write a new split (when it differs) with its `app.traffic_changed` event, in the caller's transaction. */
export async function setTraffic(tx: Queryable, app: AppRow, next: TrafficEntry[], reason: string, imageId?: number): Promise<boolean> {
  next = next.map(canonical);
  if (JSON.stringify(next) === JSON.stringify(app.traffic.map(canonical))) return false;
  await tx.query('UPDATE apps SET traffic = $2::jsonb, updated_at = now() WHERE app_hostname = $1', [app.app_hostname, JSON.stringify(next)]);
  await recordEvent(tx, {
    type: 'app.traffic_changed', userId: app.user_id, imageId, appHostname: app.app_hostname,
    payload: { reason, from: app.traffic, to: next },
  });
  return true;
}

/**
 * A new revision joins the app's traffic (trafficAfterDeploy), in the upload's transaction, and
 * says how (`images.joins_traffic`, returned):
 * - `all`: the split is `latest` alone (the default), or a deploy waits to take it all already:
 *   the new revision takes all the traffic once it can serve (pending: the newest deploy wins;
 *   tags stay where they are). An app's first revision deployed with `no_traffic` too: with no
 *   other revision, `latest` stays on it (not pending, not proven: as asked, it wakes on its first
 *   request);
 * - `latest`: the split names a revision with a share — set by `PUT …/traffic`, or pinned by a
 *   `no_traffic` deploy — and deploys keep it, as Cloud Run's "all subsequent deployments use that
 *   traffic splitting pattern": the split's `latest` entries move to the new revision once it can
 *   serve (it is the newest that can);
 * - `none`: `no_traffic` (a `latest` entry is pinned to the revision it stands for now), or such a
 *   split with no `latest` share: the revision gets nothing until a split names it. One deployed
 *   with traffic is proven all the same (provingAsideSql) while it is the app's newest.
 * A share counts only on a revision that is ready and did not fail: a split pinned to one that was
 * given up on (the app serves nothing) is no split to keep.
 */
export async function joinTraffic(tx: Queryable, app: AppRow, opts: { imageId: number; userId: number; noTraffic: boolean; tag: string | null }): Promise<JoinsTraffic> {
  // (the new revision itself is not a candidate for `latest` now: one made without a build is
  // ready already, and would pin a no_traffic deploy's `latest` to itself)
  const revisions = (await revisionStates(tx, app.app_hostname)).filter((r) => r.id !== opts.imageId);
  const latestNow = resolveTraffic(app.traffic, revisions).latest;
  const next = trafficAfterDeploy(app.traffic, { imageId: opts.imageId, noTraffic: opts.noTraffic, tag: opts.tag, latestNow });
  await setTraffic(tx, app, next, 'deploy', opts.imageId);
  const live = new Set(revisions.filter((r) => r.status === 'ready' && !r.failed).map((r) => r.id));
  const pinned = app.pending_image_id === null && app.traffic.some((e) => !e.latest && e.percent > 0 && live.has(Number(e.image_id)));
  const latestShare = app.traffic.reduce((a, e) => a + (e.latest ? e.percent : 0), 0);
  const joins: JoinsTraffic = opts.noTraffic ? (latestNow === null && !pinned ? 'all' : 'none') : !pinned ? 'all' : latestShare > 0 ? 'latest' : 'none';
  await tx.query('UPDATE images SET joins_traffic = $2 WHERE id = $1', [opts.imageId, joins]);
  if (opts.noTraffic) return joins;
  // a plain deploy over `latest` alone: the new revision takes the traffic once it can serve (the newest deploy wins)
  if (joins === 'all') await tx.query('UPDATE apps SET pending_image_id = $2 WHERE app_hostname = $1', [app.app_hostname, opts.imageId]);
  // one that scales from zero and will take a share proves itself first, an app's first revision
  // too (provingSql): `latest` moves to it only once it is proven
  if (joins !== 'none') await tx.query('UPDATE images SET proof_required = true WHERE id = $1 AND min_instances = 0', [opts.imageId]);
  // a plain deploy the kept split gives no share is proven all the same, whatever its floor
  // (provingAsideSql): the deploy says whether it can serve, and a split may name it after
  else await tx.query('UPDATE images SET proof_required = true WHERE id = $1', [opts.imageId]);
  return joins;
}

/**
 * Store what a pending revision's promotion or failure means (the reconcile loop, leader only):
 * a routable pending revision's split is written with `app.traffic_changed` (reason `deploy`); a
 * pending revision whose build failed, that could not start, or that is gone, is dropped (the
 * split never changed).
 * Each app in its own transaction, re-checked under its row lock.
 */
export async function settlePending(db: Db): Promise<number> {
  const { rows } = await db.query<{ app_hostname: string }>('SELECT app_hostname FROM apps WHERE pending_image_id IS NOT NULL');
  let changed = 0;
  for (const { app_hostname } of rows) {
    await withTransaction(db, async (tx) => {
      const { rows: [a] } = await tx.query<AppRow>('SELECT * FROM apps WHERE app_hostname = $1 FOR UPDATE', [app_hostname]);
      if (!a || a.pending_image_id === null) return;
      const revisions = await revisionStates(tx, app_hostname);
      const pend = revisions.find((r) => r.id === Number(a.pending_image_id));
      if (pend === undefined || pend.status === 'build_failed' || pend.failed) {
        await tx.query('UPDATE apps SET pending_image_id = NULL WHERE app_hostname = $1', [app_hostname]);
        changed++;
        return;
      }
      const r = resolveTraffic(a.traffic, revisions, Number(a.pending_image_id));
      if (r.promoted === null) return;
      await setTraffic(tx, a, r.promoted, 'deploy', pend.id);
      await tx.query('UPDATE apps SET pending_image_id = NULL WHERE app_hostname = $1', [app_hostname]);
      changed++;
    });
  }
  return changed;
}

/** A tag host that is some app's own hostname (older names may contain `---`) is refused (409). */
export async function checkTagHostsFree(q: Queryable, host: string, tags: string[]): Promise<void> {
  if (tags.length === 0) return;
  const { rows } = await q.query<{ app_hostname: string }>('SELECT app_hostname FROM apps WHERE app_hostname = ANY($1::text[])', [tags.map((t) => tagHost(t, host))]);
  if (rows.length) throw conflict(`tag URL host "${rows[0].app_hostname}" is an app's hostname; choose another tag`, 'tag_host_taken');
}

/**
 * An app is gone: its hostname stays `userId`'s for `days` days (0: free at once). In the deleting
 * transaction. A user holds at most `most` names (their image quota: as many apps as they may
 * have); past it the oldest holds end, so uploading and deleting apps cannot squat names by the
 * hundred.
 */
export async function holdHostname(tx: Queryable, host: string, userId: number, days: number, most: number): Promise<void> {
  if (days <= 0) return;
  await tx.query(
    `INSERT INTO hostname_holds (app_hostname, user_id, until) VALUES ($1, $2, now() + make_interval(days => $3))
     ON CONFLICT (app_hostname) DO UPDATE SET user_id = EXCLUDED.user_id, released_at = now(), until = EXCLUDED.until`, [host, userId, days]);
  await tx.query(
    `DELETE FROM hostname_holds WHERE app_hostname IN (
       SELECT app_hostname FROM hostname_holds WHERE user_id = $1 ORDER BY released_at DESC, app_hostname OFFSET $2)`, [userId, most]);
}

/** 409 `hostname_held` when `host` is held for another user than `userId` (an app of theirs deleted lately). */
export async function checkHold(q: Queryable, host: string, userId: number): Promise<void> {
  const { rows: [held] } = await q.query<{ until: Date }>(
    'SELECT until FROM hostname_holds WHERE app_hostname = $1 AND until > now() AND user_id <> $2', [host, userId]);
  if (held !== undefined) {
    throw conflict(`app_hostname "${host}" belonged to another user's app, deleted lately; it stays theirs until ${new Date(held.until).toISOString()}`, 'hostname_held');
  }
}
