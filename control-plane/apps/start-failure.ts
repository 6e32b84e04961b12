import type { FastifyBaseLogger } from 'fastify';
import { withTransaction, type Db } from '../db/pool.js';
import { recordEvent } from '../events/outbox.js';
import { lastOutputNote, OUTPUT_NOTE } from '../containers/service.js';
import type { ContainerRow } from '../images/repo.js';

/**
 * Revisions that cannot start, given up on by the server (the reconcile loop, leader only), as
 * Cloud Run marks a revision whose container fails to start not ready and Knative a revision past
 * its progress deadline: a revision that never served (no instance of it was ever healthy) is
 * marked failed (`images.start_failed_at`, `start_failure`) when
 *
 * - one of its instances, never healthy, went down a third time at start, by its own doing: it
 *   exited (or was killed for its memory), or could not be run at all (its command is not in the
 *   image). Docker being away or a port clash is the platform's trouble, not the revision's;
 * - or one of its instances has been running for the start deadline (since it last started)
 *   without passing its health check (an app listening on another port than $PORT, or stuck at
 *   boot).
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
export type StartAttempt = Pick<ContainerRow, 'id' | 'status' | 'status_reason' | 'restart_count' | 'docker_id'> & { started_at: Date | string | null };

/** The instance's own failure to run (not the platform's): exited, killed for memory, or its command cannot be run. */
function ownFailure(c: StartAttempt): boolean {
  const why = c.status_reason ?? '';
  if (c.status === 'exited') return why !== 'container vanished';
  if (c.status === 'failed') return /^container exited at once|executable file not found|no such file or directory|permission denied/i.test(why);
  return false;
}

/**
 * Why a revision that never served is given up on now, and the instance that says so; null while
 * it may still come up. Pure: `now` and the deadline are the caller's.
 */
export function startVerdict(instances: readonly StartAttempt[], now: number, deadlineMs: number): { instance: StartAttempt; reason: string } | null {
  const crashed = instances.find((c) => c.restart_count >= CRASHES_AT_START - 1 && ownFailure(c));
  if (crashed) {
    // (an instance that exited as Docker started it has its last output in its reason: kept last)
    const why = crashed.status_reason ?? crashed.status;
    const at = why.indexOf(OUTPUT_NOTE);
    const [own, note] = at >= 0 ? [why.slice(0, at), why.slice(at)] : [why, ''];
    return { instance: crashed, reason: `${own}, ${crashed.restart_count + 1} times at start${note}` };
  }
  // (since this run of it started: a row replaced after a crash keeps its id, not its start)
  const running = instances.filter((c) => c.status === 'running' && c.started_at !== null);
  const oldest = running.reduce<StartAttempt | undefined>((m, c) => (m === undefined || new Date(c.started_at!) < new Date(m.started_at!) ? c : m), undefined);
  if (oldest !== undefined && now - new Date(oldest.started_at!).getTime() >= deadlineMs) {
    return { instance: oldest, reason: `no instance became healthy within ${Math.round(deadlineMs / 1000)} s (${oldest.status_reason ?? 'its health check never passed'})` };
  }
  return null;
}

/** The reason as stored: the instance's output read from Docker as a note at its end (unless it has one), control characters out, bounded. */
export function startFailureText(reason: string, output: string[]): string {
  const text = (reason.includes(OUTPUT_NOTE) ? reason : reason + lastOutputNote(output)).replace(/[\u0000-\u001f\u007f-\u009f]/g, ' ');
  return text.length > 1000 ? `${text.slice(0, 999)}…` : text;
}

export interface StartJudge {
  db: Db;
  log: FastifyBaseLogger;
  /** how long an instance may run without passing its health check (BERTH_REVISION_START_DEADLINE_S) */
  deadlineMs: number;
  /** the last lines of a Docker container's output (runtime) */
  lastLines: (dockerId: string, n: number) => Promise<string[]>;
}

/** Judge every ready revision that never served and has instances; returns how many were given up on. */
export async function judgeStarts(j: StartJudge): Promise<number> {
  const { rows } = await j.db.query<StartAttempt & { image_id: number }>(
    `SELECT c.id, c.image_id, c.status, c.status_reason, c.restart_count, c.docker_id, c.started_at
       FROM containers c JOIN images i ON i.id = c.image_id
      WHERE i.status = 'ready' AND i.routable_at IS NULL AND i.start_failed_at IS NULL AND c.desired = 'running'
      ORDER BY c.image_id, c.id`);
  const byImage = new Map<number, StartAttempt[]>();
  for (const r of rows) byImage.set(Number(r.image_id), [...(byImage.get(Number(r.image_id)) ?? []), r]);
  const { rows: [{ now }] } = await j.db.query<{ now: Date }>('SELECT now() AS now');
  let failed = 0;
  for (const [imageId, instances] of byImage) {
    const verdict = startVerdict(instances, new Date(now).getTime(), j.deadlineMs);
    if (verdict === null) continue;
    // an instance that exited once running still has its container (and its output) until replaced
    const d = verdict.instance;
    const output = d.status === 'exited' && d.docker_id ? await j.lastLines(d.docker_id, 5).catch(() => []) : [];
    const reason = startFailureText(verdict.reason, output);
    const marked = await withTransaction(j.db, async (tx) => {
      // the app row first (the order uploads and settlePending lock in), then the revision, checked
      // again: an instance may have become healthy meanwhile
      const { rows: [img] } = await tx.query<{ app_hostname: string }>('SELECT app_hostname FROM images WHERE id = $1', [imageId]);
      if (!img) return null;
      await tx.query('SELECT 1 FROM apps WHERE app_hostname = $1 FOR UPDATE', [img.app_hostname]);
      const { rows: [row] } = await tx.query<{ id: number; user_id: number; app_hostname: string; revision: number }>(
        `UPDATE images SET start_failed_at = now(), start_failure = $2, updated_at = now()
          WHERE id = $1 AND status = 'ready' AND routable_at IS NULL AND start_failed_at IS NULL
          RETURNING id, user_id, app_hostname, revision`, [imageId, reason]);
      if (!row) return null;
      const { rowCount } = await tx.query('UPDATE apps SET pending_image_id = NULL WHERE app_hostname = $1 AND pending_image_id = $2', [row.app_hostname, imageId]);
      await recordEvent(tx, {
        type: 'image.start_failed', userId: row.user_id, imageId, appHostname: row.app_hostname,
        payload: { revision: row.revision, reason, container_id: d.id, deploy_dropped: (rowCount ?? 0) > 0 },
      });
      return row;
    });
    if (!marked) continue;
    failed++;
    j.log.warn({ imageId, app: marked.app_hostname, revision: marked.revision, reason }, 'revision could not start: it takes no traffic and its instances are stopped');
  }
  return failed;
}
