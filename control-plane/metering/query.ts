import type { Queryable } from '../db/pool.js';
import { badRequest, notFound } from '../http/errors.js';
import { normalizeHost } from '../../shared/hostname.js';

const ISO = /^\d{4}-\d{2}-\d{2}(T\d{2}:\d{2}(:\d{2}(\.\d{1,9})?)?(Z|[+-]\d{2}:?\d{2})?)?$/;

/** A time in a query string: ISO 8601 (`2026-11-30`, `2026-11-30T18:00:00Z`) or unix seconds. 400 otherwise. */
export function parseTime(name: string, v: string | undefined): Date | undefined {
  if (v === undefined || v === '') return undefined;
  let ms: number;
  if (/^\d{1,12}$/.test(v)) ms = Number(v) * 1000;
  else if (ISO.test(v)) ms = Date.parse(v);
  else throw badRequest(`${name} must be an ISO 8601 time (2026-11-30T18:00:00Z) or unix seconds`);
  if (!Number.isFinite(ms) || ms < 0 || ms > 253402300799000) throw badRequest(`${name} is not a valid time`);
  return new Date(ms);
}

export function parseRange(q: { since?: string; until?: string }, defaultSinceMs?: number): { since: Date | undefined; until: Date } {
  const until = parseTime('until', q.until) ?? new Date();
  const since = parseTime('since', q.since) ?? (defaultSinceMs !== undefined ? new Date(until.getTime() - defaultSinceMs) : undefined);
  if (since && since.getTime() > until.getTime()) throw badRequest('since must not be after until');
  return { since, until };
}

/**
 * Is `v` the caller's: a current row (an image of the app, the container), or one with usage or
 * metered history? The column names are this module's constants, never input.
 */
async function ownedNowOrBefore(q: Queryable, userId: number, current: 'images' | 'containers', col: 'app_hostname' | 'container_id', v: string | number): Promise<boolean> {
  const currentCol = current === 'images' ? 'app_hostname' : 'id';
  const { rows } = await q.query(
    `SELECT 1 FROM ${current} WHERE user_id = $1 AND ${currentCol} = $2
     UNION ALL SELECT 1 FROM usage_records WHERE user_id = $1 AND ${col} = $2
     UNION ALL (SELECT 1 FROM request_minutes WHERE user_id = $1 AND ${col} = $2 LIMIT 1) LIMIT 1`, [userId, v]);
  return rows.length > 0;
}

/**
 * An app_hostname filter: normalised, and one of the caller's (a current image, or one with metered
 * history); another user's or an unknown hostname answers 404 like any resource that is not yours.
 */
export async function ownHostname(q: Queryable, userId: number, raw: string): Promise<string> {
  const host = normalizeHost(raw);
  if (!host) throw badRequest('app_hostname must be a hostname');
  if (!(await ownedNowOrBefore(q, userId, 'images', 'app_hostname', host))) throw notFound('app');
  return host;
}

/** A container_id filter: the caller's (current, or with usage/metered history), else 404. */
export async function ownContainer(q: Queryable, userId: number, id: number): Promise<number> {
  if (!(await ownedNowOrBefore(q, userId, 'containers', 'container_id', id))) throw notFound('container');
  return id;
}
