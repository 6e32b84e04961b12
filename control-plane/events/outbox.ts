import type { Logger } from '../../shared/logging.js';
import type { Db, Queryable } from '../db/pool.js';

/** Event types written by the control plane (issue 4 adds container.* types). */
export type EventType = 'image.building' | 'image.ready' | 'image.build_failed' | 'image.deleted' | (string & {});

export interface EventInput {
  type: EventType;
  userId: number;
  imageId?: number | null;
  containerId?: number | null;
  appHostname?: string | null;
  payload?: Record<string, unknown>;
}

export interface EventRecord {
  id: number;
  type: string;
  user_id: number;
  image_id: number | null;
  container_id: number | null;
  app_hostname: string | null;
  payload: Record<string, unknown>;
  created_at: string;
}

const COLUMNS = 'id, type, user_id, image_id, container_id, app_hostname, payload, created_at';

/**
 * Write an event row. Call it with the transaction client of the state change it describes
 * (outbox pattern): the event exists if and only if the change committed.
 */
export async function recordEvent(q: Queryable, ev: EventInput): Promise<EventRecord> {
  const { rows } = await q.query<EventRecord>(
    `INSERT INTO events (type, user_id, image_id, container_id, app_hostname, payload)
     VALUES ($1, $2, $3, $4, $5, $6) RETURNING ${COLUMNS}`,
    [ev.type, ev.userId, ev.imageId ?? null, ev.containerId ?? null, ev.appHostname ?? null, JSON.stringify(ev.payload ?? {})],
  );
  return serialise(rows[0]);
}

/**
 * The SQL filter of a user's events (of one app, with `app`): those listEvents lists — committed
 * before every transaction still running, so none can commit later with a smaller txid — or
 * those it holds back for now.
 */
function scope(userId: number, app: string | undefined, which: 'listed' | 'held back'): { where: string; params: unknown[] } {
  const params: unknown[] = [userId];
  let where = `user_id = $1 AND txid ${which === 'listed' ? '<' : '>='} pg_snapshot_xmin(pg_current_snapshot())`;
  if (app !== undefined) {
    params.push(app);
    where += ` AND app_hostname = $${params.length}`;
  }
  return { where, params };
}

/**
 * The user's events after event `after` (an id), oldest first, at most `limit`; with `app`, that
 * app's only. With `tail`, the newest `tail` instead (still oldest first), whatever `after` says.
 *
 * Paging never skips an event: rows are listed in transaction order (`txid`, then id) and only
 * those of transactions older than every one still running. Ids are taken at insert, so an older
 * transaction can commit a higher id after a younger one took a lower id and is still running;
 * ordered by id, a reader past the higher id would never see the lower one. Ordered by txid, the
 * younger transaction's rows come after everything listed so far. `after` is the id of the last
 * event seen (its txid is looked up; an id retention already removed pages by id alone).
 */
export async function listEvents(q: Queryable, userId: number, after: number, limit: number, o: { app?: string; tail?: number } = {}): Promise<EventRecord[]> {
  const { params, where: scoped } = scope(userId, o.app, 'listed');
  let where = scoped;
  if (o.tail !== undefined) {
    params.push(o.tail);
    const { rows } = await q.query<EventRecord>(
      `SELECT ${COLUMNS} FROM (SELECT ${COLUMNS}, txid FROM events WHERE ${where} ORDER BY txid DESC, id DESC LIMIT $${params.length}) newest ORDER BY txid, id`, params);
    return rows.map(serialise);
  }
  // where the reader stopped: after that event in transaction order (a plain row comparison, which
  // the (user_id, txid, id) index serves), or by id alone when retention already removed it
  const seen = after > 0 ? (await q.query<{ txid: string }>('SELECT txid::text FROM events WHERE id = $1 AND user_id = $2', [after, userId])).rows[0] : undefined;
  if (seen !== undefined) {
    params.push(seen.txid, after);
    where += ` AND (txid, id) > ($${params.length - 1}::xid8, $${params.length}::bigint)`;
  } else {
    params.push(after);
    where += ` AND id > $${params.length}`;
  }
  params.push(limit);
  const { rows } = await q.query<EventRecord>(`SELECT ${COLUMNS} FROM events WHERE ${where} ORDER BY txid, id LIMIT $${params.length}`, params);
  return rows.map(serialise);
}

/**
 * Has the user (of one app, with `app`) events that committed but listEvents holds back, because
 * an older transaction is still running? (A long poll looks again shortly then: their commit sent
 * its notification already, and the older transaction's end sends none.)
 */
export async function hasHeldBack(q: Queryable, userId: number, app?: string): Promise<boolean> {
  const { params, where } = scope(userId, app, 'held back');
  const { rowCount } = await q.query(`SELECT 1 FROM events WHERE ${where} LIMIT 1`, params);
  return (rowCount ?? 0) > 0;
}

function serialise(r: EventRecord): EventRecord {
  const created = r.created_at as unknown;
  return { ...r, created_at: created instanceof Date ? created.toISOString() : String(created) };
}

export type EventSubscriber = (event: EventRecord) => void | Promise<void>;

/**
 * Outbox relay: delivers committed, unpublished events to in-process subscribers in id order
 * and marks them published. Polls every `intervalMs`; `nudge()` (called after commits) makes it
 * run at once. Rows are claimed with FOR UPDATE SKIP LOCKED, so several control planes sharing a
 * database each deliver an event exactly once between them. A subscriber that throws is logged
 * and does not block the others. More relays (Kafka) are just more subscribers.
 */
export class EventRelay {
  private subscribers = new Set<EventSubscriber>();
  private timer: NodeJS.Timeout | undefined;
  private running: Promise<void> | undefined;
  private again = false;
  private stopped = true;

  constructor(private readonly db: Db, private readonly log: Logger, private readonly intervalMs = 1000) {}

  subscribe(fn: EventSubscriber): () => void {
    this.subscribers.add(fn);
    return () => this.subscribers.delete(fn);
  }

  start(): void {
    this.stopped = false;
    this.schedule(0);
  }

  async stop(): Promise<void> {
    this.stopped = true;
    if (this.timer) clearTimeout(this.timer);
    await this.running;
  }

  /** Deliver pending events now (after a commit). */
  nudge(): void {
    if (this.stopped) return;
    if (this.running) { this.again = true; return; }
    this.schedule(0);
  }

  private schedule(ms: number): void {
    if (this.stopped) return;
    if (this.timer) clearTimeout(this.timer);
    this.timer = setTimeout(() => { this.running = this.tick().finally(() => { this.running = undefined; }); }, ms);
    this.timer.unref();
  }

  private async tick(): Promise<void> {
    let more = false;
    try {
      more = await this.deliverBatch();
    } catch (e) {
      if (!this.stopped) this.log.warn({ err: e }, 'event relay batch failed; will retry');
    }
    const again = more || this.again;
    this.again = false;
    this.schedule(again ? 0 : this.intervalMs);
  }

  /** One batch; returns true when there may be more. Exposed for tests. */
  async deliverBatch(batch = 200): Promise<boolean> {
    const client = await this.db.connect();
    try {
      await client.query('BEGIN');
      const { rows } = await client.query<EventRecord>(
        `SELECT ${COLUMNS} FROM events WHERE published_at IS NULL ORDER BY id LIMIT $1 FOR UPDATE SKIP LOCKED`, [batch]);
      for (const r of rows) {
        const ev = serialise(r);
        for (const s of this.subscribers) {
          try { await s(ev); } catch (e) { this.log.error({ err: e, eventId: ev.id }, 'event subscriber failed'); }
        }
      }
      if (rows.length) await client.query('UPDATE events SET published_at = now() WHERE id = ANY($1::bigint[])', [rows.map((r) => r.id)]);
      await client.query('COMMIT');
      return rows.length === batch;
    } catch (e) {
      await client.query('ROLLBACK').catch(() => {});
      throw e;
    } finally {
      client.release();
    }
  }
}
