import { Kafka, logLevel, type Producer } from 'kafkajs';
import type { Logger } from '../../shared/logging.js';
import type { Db, Queryable } from '../db/pool.js';

export const LIFECYCLE_TOPIC = 'container-lifecycle';

export interface EventRow {
  id: number; type: string; user_id: number; image_id: number | null; container_id: number | null;
  app_hostname: string | null; payload: Record<string, unknown>; created_at: Date;
}

/** Advisory lock key of the Kafka publisher ("bkfk"): one publisher at a time per database. */
export const KAFKA_LOCK_KEY = 0x626b666b;

/**
 * Inside the caller's transaction: take the Kafka publisher lock (transaction-scoped) and read the
 * next unpublished events in id order; null when another publisher holds the lock (skip this
 * tick). No row locks and no SKIP LOCKED: rows locked by the in-process outbox relay must not be
 * skipped (a newer event of the same image would be published first), and the advisory lock
 * already keeps publishers apart. Only rows of transactions older than every running one are
 * read, so a lower id still being committed is never overtaken by a higher one.
 */
export async function claimKafkaBatch(client: Queryable, limit: number): Promise<EventRow[] | null> {
  const { rows: [{ ok }] } = await client.query<{ ok: boolean }>('SELECT pg_try_advisory_xact_lock($1) AS ok', [KAFKA_LOCK_KEY]);
  if (!ok) return null;
  const { rows } = await client.query<EventRow>(
    `SELECT id, type, user_id, image_id, container_id, app_hostname, payload, created_at FROM events
      WHERE kafka_published_at IS NULL AND txid < pg_snapshot_xmin(pg_current_snapshot())
      ORDER BY id LIMIT $1`, [limit]);
  return rows;
}

/**
 * Outbox → Kafka. One publisher per database at a time (`claimKafkaBatch`): sends unpublished
 * rows in id order with an idempotent producer keyed by image id (one image's events stay
 * ordered in one partition), and marks them `kafka_published_at` in the same transaction only
 * after Kafka acknowledged (acks=all). When Kafka is away the transaction rolls back and the
 * relay retries with exponential backoff and jitter: nothing is lost, and a row is at worst sent
 * twice (a crash between ack and commit).
 */
export class KafkaRelay {
  private kafka: Kafka;
  private producer: Producer | undefined;
  private timer: NodeJS.Timeout | undefined;
  private running: Promise<void> | undefined;
  private stopped = true;
  private failures = 0;
  published = 0;
  lastError = '';

  constructor(
    private readonly db: Db,
    brokers: string[],
    private readonly log: Logger,
    private readonly topic = LIFECYCLE_TOPIC,
    private readonly intervalMs = 1000,
    clientId = 'berth-control-plane',
  ) {
    this.kafka = new Kafka({ clientId, brokers, logLevel: logLevel.NOTHING, retry: { retries: 2, initialRetryTime: 300 }, connectionTimeout: 3000 });
  }

  start(): void {
    this.stopped = false;
    this.schedule(0);
  }

  nudge(): void {
    if (!this.stopped && !this.running && this.failures === 0) this.schedule(0);
  }

  async stop(): Promise<void> {
    this.stopped = true;
    if (this.timer) clearTimeout(this.timer);
    await this.running?.catch(() => {});
    await this.producer?.disconnect().catch(() => {});
    this.producer = undefined;
  }

  private schedule(ms: number): void {
    if (this.stopped) return;
    if (this.timer) clearTimeout(this.timer);
    this.timer = setTimeout(() => {
      this.timer = undefined;
      this.running = this.tick().finally(() => { this.running = undefined; });
    }, ms);
    this.timer.unref();
  }

  private async connect(): Promise<Producer> {
    if (this.producer) return this.producer;
    const admin = this.kafka.admin();
    await admin.connect();
    try {
      await admin.createTopics({ topics: [{ topic: this.topic, numPartitions: 3, replicationFactor: 1 }], waitForLeaders: true });
    } finally {
      await admin.disconnect().catch(() => {});
    }
    const p = this.kafka.producer({ idempotent: true, maxInFlightRequests: 1, allowAutoTopicCreation: true });
    await p.connect();
    this.producer = p;
    this.log.info({ topic: this.topic }, 'kafka relay connected');
    return p;
  }

  private async tick(): Promise<void> {
    let more = false;
    try {
      more = await this.batch();
      if (this.failures) this.log.info({ afterFailures: this.failures }, 'kafka relay recovered');
      this.failures = 0;
      this.lastError = '';
    } catch (e) {
      this.failures++;
      this.lastError = (e as Error).message;
      const p = this.producer;
      this.producer = undefined;
      await p?.disconnect().catch(() => {});
      const delay = Math.min(30_000, 500 * 2 ** Math.min(this.failures - 1, 6)) * (0.5 + Math.random() / 2);
      if (!this.stopped) this.log.warn({ err: this.lastError, retryInMs: Math.round(delay) }, 'kafka relay failed; retrying');
      this.schedule(delay);
      return;
    }
    this.schedule(more ? 0 : this.intervalMs);
  }

  /** Publish one batch; true when more may be waiting. */
  async batch(limit = 500): Promise<boolean> {
    const producer = await this.connect();
    const client = await this.db.connect();
    try {
      await client.query('BEGIN');
      const claimed = await claimKafkaBatch(client, limit);
      if (claimed === null) {
        await client.query('COMMIT');
        return false; // another control plane is publishing
      }
      const rows = claimed;
      if (rows.length) {
        await producer.send({
          topic: this.topic,
          acks: -1,
          messages: rows.map((r) => ({
            key: r.image_id === null ? `user-${r.user_id}` : String(r.image_id),
            value: JSON.stringify({ ...r, created_at: new Date(r.created_at).toISOString() }),
            headers: { 'event-type': r.type, 'event-id': String(r.id) },
          })),
        });
        await client.query('UPDATE events SET kafka_published_at = now() WHERE id = ANY($1::bigint[])', [rows.map((r) => r.id)]);
      }
      await client.query('COMMIT');
      this.published += rows.length;
      return rows.length === limit;
    } catch (e) {
      await client.query('ROLLBACK').catch(() => {});
      throw e;
    } finally {
      client.release();
    }
  }
}
