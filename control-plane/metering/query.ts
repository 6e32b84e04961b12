import type { Queryable } from '../db/pool.js';
import { badRequest, notFound } from '../http/errors.js';
import { parseTimeQuery } from '../http/time-query.js';
import { normalizeHost } from '../../shared/hostname.js';

/**
 * `since` / `until` (http/time-query.ts: a duration back from now, unix seconds or RFC 3339; 400
 * otherwise). `until` defaults to now, `since` to `defaultSinceMs` before `until` (or none).
 */
export function parseRange(q: { since?: string; until?: string }, defaultSinceMs?: number, now = Date.now()): { since: Date | undefined; until: Date } {
  const at = (name: string, v: string | undefined) => (v === undefined || v === '' ? undefined : new Date(parseTimeQuery(name, v, { now })));
  const until = at('until', q.until) ?? new Date(now);
  const since = at('since', q.since) ?? (defaultSinceMs !== undefined ? new Date(until.getTime() - defaultSinceMs) : undefined);
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
