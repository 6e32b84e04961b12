import { Periodic } from '../periodic.js';
import type { Logger } from '../../shared/logging.js';
import type { Db } from '../db/pool.js';

/**
 * Events are kept `days` days (BERTH_EVENT_RETENTION_DAYS, default 90; 0 keeps every one): every
 * state change writes one, so without a bound the table — and `GET /api/events`' index — grows for
 * as long as the platform runs (a tenant toggling a setting in a loop writes one per call). Only
 * events already delivered are deleted: to the in-process subscribers (`published_at`) and, when
 * Kafka is configured, to Kafka (`kafka_published_at`). In batches, so no delete holds many rows
 * locked at once; several control planes on one database may prune at the same time.
 */
export async function pruneEvents(db: Db, days: number, kafka: boolean, batch = 5000): Promise<number> {
  if (days <= 0) return 0;
  let deleted = 0;
  for (;;) {
    const { rowCount } = await db.query(
      `DELETE FROM events WHERE id IN (
         SELECT id FROM events
          WHERE created_at < now() - make_interval(days => $1) AND published_at IS NOT NULL
            AND ($2::boolean = false OR kafka_published_at IS NOT NULL)
          ORDER BY id LIMIT $3 FOR UPDATE SKIP LOCKED)`, [days, kafka, batch]);
    deleted += rowCount ?? 0;
    if ((rowCount ?? 0) < batch) return deleted;
  }
}

/**
 * Every `everyMs` (an hour): events past their retention (none when `days` is 0) and hostname
 * holds past their end are deleted. Returns the stop function (it waits for a pass under way).
 */
export function startEventRetention(db: Db, days: number, kafka: boolean, log: Logger, everyMs = 3600_000): () => Promise<void> {
  const rounds = new Periodic(everyMs, async () => {
    const n = days > 0 ? await pruneEvents(db, days, kafka) : 0;
    if (n > 0) log.info({ deleted: n, days }, 'events older than the retention period deleted');
    await db.query('DELETE FROM hostname_holds WHERE until < now()');
  }, (e) => log.warn({ err: e.message }, 'retention pass failed; will retry'));
  rounds.start(Math.min(everyMs, 60_000)); // the first pass a minute after start, as before
  return () => rounds.stop();
}
