/** Rows of `workloads` (migration 008) and the queries the API needs. */
import type { WorkloadMetrics } from '../../bench/workload/metrics.js';
import { redactHeaders } from '../../bench/workload/redact.js';
import type { Queryable } from '../db/pool.js';

export type WorkloadStatus = 'running' | 'completed' | 'stopped' | 'failed';

/** The config of a run as accepted by the API (validated, hostnames normalised). */
export interface WorkloadConfigRow {
  app_hostnames: string[];
  pattern: string;
  rps: number;
  duration_seconds: number;
  ramp_to_rps?: number;
  stages?: { duration_seconds: number; rps: number }[];
  path: string;
  method: string;
  headers?: Record<string, string>;
  body?: string;
  connections?: number;
  timeout_ms: number;
}

/**
 * The config as stored and shown: the values of headers that may hold the tenant's credentials
 * (Authorization, Cookie, X-Api-Key…: bench/workload/redact.ts) replaced by "[redacted]". Only the
 * run gets the real values, from the request that started it; they are never stored.
 */
export function publicConfig(c: WorkloadConfigRow): WorkloadConfigRow {
  return c.headers === undefined ? c : { ...c, headers: redactHeaders(c.headers) };
}

export interface WorkloadRow {
  id: number;
  user_id: number;
  status: WorkloadStatus;
  status_reason: string | null;
  config: WorkloadConfigRow;
  metrics: WorkloadMetrics | null;
  created_at: Date;
  finished_at: Date | null;
  updated_at: Date;
}

const row = (r: WorkloadRow): WorkloadRow => ({ ...r, id: Number(r.id), user_id: Number(r.user_id) });

/**
 * A new run of `runner` (the control plane instance that will run it), its first heartbeat now.
 * The config is stored as shown (publicConfig): sensitive header values are not kept.
 */
export async function insertWorkload(q: Queryable, userId: number, config: WorkloadConfigRow, runner: string): Promise<WorkloadRow> {
  const { rows } = await q.query<WorkloadRow>(
    `INSERT INTO workloads (user_id, status, config, runner, heartbeat_at) VALUES ($1, 'running', $2, $3, now()) RETURNING *`,
    [userId, JSON.stringify(publicConfig(config)), runner]);
  // a user keeps their last KEEP_RUNS runs: one-second runs in a loop (each keeping its body and
  // metrics) grew the table without end
  await q.query(
    `DELETE FROM workloads WHERE id IN (
       SELECT id FROM workloads WHERE user_id = $1 AND status <> 'running' ORDER BY id DESC OFFSET $2)`, [userId, KEEP_RUNS]);
  return row(rows[0]);
}

/** Finished runs kept per user (the newest; older ones are deleted as new ones start). */
export const KEEP_RUNS = 100;

export async function countRunning(q: Queryable, userId: number): Promise<number> {
  const { rows } = await q.query<{ n: number }>(`SELECT count(*)::int AS n FROM workloads WHERE user_id = $1 AND status = 'running'`, [userId]);
  return rows[0].n;
}

export async function getWorkload(q: Queryable, userId: number, id: number): Promise<WorkloadRow | null> {
  const { rows } = await q.query<WorkloadRow>('SELECT * FROM workloads WHERE id = $1 AND user_id = $2', [id, userId]);
  return rows[0] ? row(rows[0]) : null;
}

/**
 * The user's runs, newest first: metrics without the per-second series, config without the
 * request's headers and body (up to 16 + 64 KiB a run: a list of 1,000 runs must not be a
 * gigabyte; GET /api/workloads/:id has them).
 */
export async function listWorkloads(q: Queryable, userId: number, limit: number): Promise<WorkloadRow[]> {
  const { rows } = await q.query<WorkloadRow>(
    `SELECT id, user_id, status, status_reason, config - 'headers' - 'body' AS config, metrics - 'series' - 'latency_distribution' AS metrics, created_at, finished_at, updated_at
       FROM workloads WHERE user_id = $1 ORDER BY id DESC LIMIT $2`, [userId, limit]);
  return rows.map(row);
}

export async function saveMetrics(q: Queryable, id: number, metrics: WorkloadMetrics): Promise<void> {
  await q.query(`UPDATE workloads SET metrics = $2, updated_at = now() WHERE id = $1 AND status = 'running'`, [id, JSON.stringify(metrics)]);
}

export async function finishWorkload(q: Queryable, id: number, status: WorkloadStatus, reason: string | null, metrics: WorkloadMetrics | null): Promise<void> {
  await q.query(
    `UPDATE workloads SET status = $2, status_reason = $3, metrics = COALESCE($4, metrics), finished_at = now(), updated_at = now()
      WHERE id = $1 AND status = 'running'`, [id, status, reason, metrics === null ? null : JSON.stringify(metrics)]);
}

/**
 * Seconds without a heartbeat after which a `running` run is over (its control plane was killed,
 * lost its database, or is an older version that does not heartbeat). Six missed heartbeats: a
 * control plane busy for a moment is not taken for dead.
 */
export const STALE_AFTER_S = 30;
export const INTERRUPTED_REASON = `interrupted: the control plane running it stopped without ending it (no heartbeat for ${STALE_AFTER_S} s)`;

/**
 * The heartbeat of `runner`'s live runs (`ids`, the ones its worker threads are running): the ids
 * whose rows are still `running` — one missing was ended by someone else (failInterrupted of
 * another control plane, when this one's heartbeats stalled) and must stop here too.
 */
export async function heartbeat(q: Queryable, runner: string, ids: number[]): Promise<Set<number>> {
  if (ids.length === 0) return new Set();
  const { rows } = await q.query<{ id: number }>(
    `UPDATE workloads SET heartbeat_at = now() WHERE id = ANY($1::bigint[]) AND runner = $2 AND status = 'running' RETURNING id`, [ids, runner]);
  return new Set(rows.map((r) => Number(r.id)));
}

/**
 * Runs left `running` by a control plane that is gone: no heartbeat for STALE_AFTER_S seconds
 * (by the database's clock on both sides, so hosts' clocks do not matter), or none at all (rows
 * from before migration 012). Any control plane may call it, at start and then periodically:
 * another live control plane's runs heartbeat every few seconds and are never touched, unlike the
 * old rule ("every running row is interrupted when a control plane starts"), which failed the runs
 * of every other control plane on the same database.
 */
export async function failInterrupted(q: Queryable): Promise<number> {
  const { rowCount } = await q.query(
    `UPDATE workloads SET status = 'failed', status_reason = $2, finished_at = now(), updated_at = now()
      WHERE status = 'running' AND (heartbeat_at IS NULL OR heartbeat_at < now() - make_interval(secs => $1))`,
    [STALE_AFTER_S, INTERRUPTED_REASON]);
  return rowCount ?? 0;
}

/**
 * Which of `hosts` this user may load: their apps (the `apps` table owns hostnames), and the tag
 * hostnames of their revisions (`{tag}---{app_hostname}`).
 */
export async function ownedHostnames(q: Queryable, userId: number, hosts: string[]): Promise<Set<string>> {
  // a hostname is an app's own first (an older app may have `---` in its name), a tag host second
  const { rows: named } = await q.query<{ app_hostname: string; user_id: number }>(
    'SELECT app_hostname, user_id FROM apps WHERE app_hostname = ANY($1::text[])', [hosts]);
  const owner = new Map(named.map((r) => [r.app_hostname, Number(r.user_id)]));
  const out = new Set<string>();
  const tagged: string[] = [];
  for (const h of hosts) {
    if (owner.has(h)) { if (owner.get(h) === userId) out.add(h); }
    else if (h.includes('---')) tagged.push(h);
  }
  if (tagged.length === 0) return out;
  // a tag host only while that tag is in the app's traffic (the proxy routes nothing else)
  const base = (h: string) => h.slice(h.indexOf('---') + 3);
  const { rows } = await q.query<{ app_hostname: string; traffic: { tag?: string }[] }>(
    'SELECT app_hostname, traffic FROM apps WHERE user_id = $1 AND app_hostname = ANY($2::text[])', [userId, [...new Set(tagged.map(base))]]);
  const tags = new Map(rows.map((r) => [r.app_hostname, new Set((Array.isArray(r.traffic) ? r.traffic : []).flatMap((e) => (e.tag ? [e.tag] : [])))]));
  for (const h of tagged) if (tags.get(base(h))?.has(h.slice(0, h.indexOf('---')))) out.add(h);
  return out;
}

/** Every app hostname of this user. */
export async function userHostnames(q: Queryable, userId: number): Promise<string[]> {
  const { rows } = await q.query<{ app_hostname: string }>('SELECT app_hostname FROM apps WHERE user_id = $1 ORDER BY app_hostname', [userId]);
  return rows.map((r) => r.app_hostname);
}
