import type { FastifyBaseLogger } from 'fastify';
import { withTransaction, type Db } from '../db/pool.js';
import { recordEvent } from '../events/outbox.js';
import { OUTPUT_NOTE, withoutControls } from '../containers/service.js';
import type { ContainerRow } from '../images/repo.js';
import { owedSql } from './repo.js';

/**
 * Revisions that cannot start, given up on by the server (the reconcile loop, leader only), as
 * Cloud Run marks a revision whose container fails to start not ready and Knative a revision past
 * its progress deadline: a revision that never served (no instance of it was ever healthy) is
 * marked failed (`images.start_failed_at`, `start_failure`) when
 *
 * - the app of one of its instances exited a third time (or was killed for its memory, or could not
 *   be run at all: its command is not in the image), however long each run lasted. Docker being
 *   away, a port clash or a container removed by hand are the platform's trouble, not the
 *   revision's (containers/service.ts counts `app_exits` and keeps `last_exit` with the output);
 * - or one of its instances has been running for the start deadline since it last started, and
 *   its health check, run since that start, fails (an app listening on another port than $PORT,
 *   or stuck at boot);
 * - or none of its instances could be made for the start deadline (`images.start_blocked`: the
 *   user's container quota is full; containers/service.ts says so when it provisions), as
 *   Knative gives up a revision whose pods cannot be scheduled by its progress deadline.
 *
 * A failed revision is treated as one that is not ready (apps/traffic.ts): a deploy waiting for
 * it is dropped (the split that served before keeps serving), it is never `latest`, it has no tag
 * host, and so the reconcile loop retires its instances. Its image stays: a new revision from it
 * with other settings (POST /api/apps/:host/revisions) is a new try. A revision that served once
 * and crashes later is not this: its instances are restarted with backoff, as before.
 */

/** The third exit at start gives the revision up (the first start and two restarts), as `berth deploy` does. */
export const CRASHES_AT_START = 3;

/** What the verdict reads of an instance of a revision that never served. */
export type StartAttempt = Pick<ContainerRow, 'id' | 'status' | 'status_reason' | 'health' | 'app_exits' | 'last_exit'> & {
  started_at: Date | string | null;
  health_checked_at: Date | string | null;
};

const time = (d: Date | string | null) => (d === null ? NaN : new Date(d).getTime());

/**
 * Why a revision that never served is given up on now, and the instance that says so; null while
 * it may still come up. Pure: `now` and the deadline are the caller's.
 */
export function startVerdict(instances: readonly StartAttempt[], now: number, deadlineMs: number): { instance: StartAttempt; reason: string } | null {
  // its app exited, or could not be run, a third time (containers/service.ts counts only those:
  // Docker away, a port taken or a container removed by hand are the platform's, not the app's)
  const crashed = instances.find((c) => c.app_exits >= CRASHES_AT_START);
  if (crashed) {
    // (the last exit's output note stays last)
    const why = crashed.last_exit ?? 'exited';
    const at = why.indexOf(OUTPUT_NOTE);
    const [own, note] = at >= 0 ? [why.slice(0, at), why.slice(at)] : [why, ''];
    return { instance: crashed, reason: `${own}, ${crashed.app_exits} times at start${note}` };
  }
  // running since its last start past the deadline, and probed unhealthy since that start (not
  // merely unprobed: a control plane back from an outage judges nothing it has not looked at)
  const stuck = instances.filter((c) => c.status === 'running' && c.health === 'unhealthy'
    && now - time(c.started_at) >= deadlineMs && time(c.health_checked_at) > time(c.started_at));
  const oldest = stuck.reduce<StartAttempt | undefined>((m, c) => (m === undefined || time(c.started_at) < time(m.started_at) ? c : m), undefined);
  if (oldest !== undefined) {
    return { instance: oldest, reason: `no instance became healthy within ${Math.round(deadlineMs / 1000)} s (${oldest.status_reason ?? 'its health check fails'})` };
  }
  return null;
}

/**
 * Why a revision that never served, none of whose instances could be made since `blockedAt`
 * (`reason`), is given up on now; null while the deadline has not passed. Pure.
 */
export function blockedVerdict(blockedAt: Date | string | null, reason: string | null, now: number, deadlineMs: number): string | null {
  if (blockedAt === null || now - time(blockedAt) < deadlineMs) return null;
  return `no instance could be started within ${Math.round(deadlineMs / 1000)} s (${reason ?? 'none could be made'})`;
}

/** The reason as stored: control characters out, bounded. */
export function startFailureText(reason: string): string {
  const text = withoutControls(reason);
  return text.length > 1000 ? `${text.slice(0, 999)}…` : text;
}

export interface StartJudge {
  db: Db;
  log: FastifyBaseLogger;
  /** how long an instance may run without passing its health check (BERTH_REVISION_START_DEADLINE_S) */
  deadlineMs: number;
}

/** Judge every ready revision that never served and has instances; returns how many were given up on. */
export async function judgeStarts(j: StartJudge): Promise<number> {
  const { rows } = await j.db.query<StartAttempt & { image_id: number }>(
    `SELECT c.id, c.image_id, c.status, c.status_reason, c.health, c.app_exits, c.last_exit, c.started_at, c.health_checked_at
       FROM containers c JOIN images i ON i.id = c.image_id
      WHERE i.status = 'ready' AND i.routable_at IS NULL AND i.start_failed_at IS NULL AND c.desired = 'running'
      ORDER BY c.image_id, c.id`);
  const byImage = new Map<number, StartAttempt[]>();
  for (const r of rows) byImage.set(Number(r.image_id), [...(byImage.get(Number(r.image_id)) ?? []), r]);
  const { rows: [{ now }] } = await j.db.query<{ now: Date }>('SELECT now() AS now');
  let failed = 0;
  for (const [imageId, instances] of byImage) {
    const verdict = startVerdict(instances, new Date(now).getTime(), j.deadlineMs);
    if (verdict !== null && (await giveUp(j, imageId, verdict.reason, verdict.instance.id))) failed++;
  }
  return failed;
}

/**
 * Judge the revisions the reconcile loop has just tried to provision (`tried`) and found none of
 * whose instances can be made (containers/service.ts wrote `start_blocked`): a block is judged
 * only as seen in this pass (a control plane back from an outage, or a quota raised since, looks
 * again first). Checked again as it is marked: still owed its instances, still none.
 */
export async function judgeBlocked(j: StartJudge, tried: readonly number[]): Promise<number> {
  if (tried.length === 0) return 0;
  const { rows } = await j.db.query<{ id: number; start_blocked: string | null; start_blocked_at: Date; now: Date }>(
    `SELECT i.id, i.start_blocked, i.start_blocked_at, now() AS now FROM images i
      WHERE i.id = ANY($1::bigint[]) AND i.start_blocked_at IS NOT NULL
        AND NOT EXISTS (SELECT 1 FROM containers c WHERE c.image_id = i.id AND c.desired = 'running') ORDER BY i.id`, [[...tried]]);
  let failed = 0;
  for (const b of rows) {
    const reason = blockedVerdict(b.start_blocked_at, b.start_blocked, new Date(b.now).getTime(), j.deadlineMs);
    if (reason !== null && (await giveUp(j, Number(b.id), reason, null, STILL_BLOCKED))) failed++;
  }
  return failed;
}

/** What a blocked revision must still be when it is given up on (images row `images`). */
const STILL_BLOCKED = `start_blocked_at IS NOT NULL AND ${owedSql('images')}
  AND NOT EXISTS (SELECT 1 FROM containers c WHERE c.image_id = images.id AND c.desired = 'running')`;

/**
 * Mark one revision failed with its `image.start_failed` event, in one transaction; false when it
 * no longer qualifies (an instance became healthy meanwhile, or `still` no longer holds).
 */
async function giveUp(j: StartJudge, imageId: number, why: string, containerId: number | null, still?: string): Promise<boolean> {
  const reason = startFailureText(why);
  const marked = await withTransaction(j.db, async (tx) => {
    // the app row first (the order uploads and settlePending lock in), then the revision, checked
    // again: an instance may have become healthy meanwhile
    const { rows: [img] } = await tx.query<{ app_hostname: string }>('SELECT app_hostname FROM images WHERE id = $1', [imageId]);
    if (!img) return null;
    await tx.query('SELECT 1 FROM apps WHERE app_hostname = $1 FOR UPDATE', [img.app_hostname]);
    const { rows: [row] } = await tx.query<{ id: number; user_id: number; app_hostname: string; revision: number }>(
      `UPDATE images SET start_failed_at = now(), start_failure = $2, start_blocked = NULL, start_blocked_at = NULL, updated_at = now()
        WHERE id = $1 AND status = 'ready' AND routable_at IS NULL AND start_failed_at IS NULL${still ? ` AND ${still}` : ''}
        RETURNING id, user_id, app_hostname, revision`, [imageId, reason]);
    if (!row) return null;
    const { rowCount } = await tx.query('UPDATE apps SET pending_image_id = NULL WHERE app_hostname = $1 AND pending_image_id = $2', [row.app_hostname, imageId]);
    await recordEvent(tx, {
      type: 'image.start_failed', userId: row.user_id, imageId, appHostname: row.app_hostname,
      payload: { revision: row.revision, reason, container_id: containerId, deploy_dropped: (rowCount ?? 0) > 0 },
    });
    return row;
  });
  if (!marked) return false;
  // (the app's output stays out of the operator's log: its owner reads it in the API)
  const at = reason.indexOf(OUTPUT_NOTE);
  j.log.warn({ imageId, app: marked.app_hostname, revision: marked.revision, reason: at >= 0 ? reason.slice(0, at) : reason },
    'revision could not start: it takes no traffic and its instances are stopped');
  return true;
}
