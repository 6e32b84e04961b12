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

/** Prune now and then every `everyMs` (an hour); returns the stop function. */
export function startEventRetention(db: Db, days: number, kafka: boolean, log: Logger, everyMs = 3600_000): () => void {
  if (days <= 0) return () => {};
  let stopped = false;
  const run = () => {
    pruneEvents(db, days, kafka)
      .then((n) => { if (n > 0 && !stopped) log.info({ deleted: n, days }, 'events older than the retention period deleted'); })
      .catch((e: Error) => { if (!stopped) log.warn({ err: e.message }, 'event retention pass failed; will retry'); });
  };
  const first = setTimeout(run, 60_000);
  const timer = setInterval(run, everyMs);
  first.unref();
  timer.unref();
  return () => { stopped = true; clearTimeout(first); clearInterval(timer); };
}
