import type { PoolClient } from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startControlPlane, type ControlPlane } from '../../control-plane/app.js';
import { recordEvent } from '../../control-plane/events/outbox.js';
import { KAFKA_LOCK_KEY, claimKafkaBatch } from '../../control-plane/relay/kafka.js';
import { Api } from '../helpers/api.js';
import { startTestPostgres, type TestPostgres } from '../helpers/postgres.js';
import { tempDir } from '../helpers/tmp.js';

/** The Kafka relay's claim of outbox rows, against the embedded Postgres (no broker needed). */
let pg: TestPostgres;
let cp: ControlPlane;
let data: { dir: string; cleanup(): Promise<void> };
let userId: number;

beforeAll(async () => {
  pg = await startTestPostgres();
  data = await tempDir();
  cp = await startControlPlane({ port: 0, dataDir: data.dir, databaseUrl: await pg.createDatabase(), quiet: true, seedDefaultUser: false, dockerHost: 'unix:///nonexistent/docker.sock' });
  const api = await new Api(cp.url).signup('kafka-claim@example.com');
  userId = (await api.get('/api/auth/me')).body.user.id;
});
afterAll(async () => {
  await cp?.close();
  await pg?.stop();
  await data?.cleanup();
});

async function inTx<T>(fn: (c: PoolClient) => Promise<T>): Promise<T> {
  const c = await cp.db.connect();
  try {
    await c.query('BEGIN');
    const r = await fn(c);
    await c.query('ROLLBACK');
    return r;
  } finally { c.release(); }
}

describe('claimKafkaBatch', () => {
  it('reads rows in id order even while the in-process outbox relay holds row locks (no SKIP LOCKED)', async () => {
    await cp.db.query('UPDATE events SET kafka_published_at = now() WHERE kafka_published_at IS NULL');
    const a = await recordEvent(cp.db, { type: 'test.a', userId, imageId: null });
    const b = await recordEvent(cp.db, { type: 'test.b', userId, imageId: null });
    // the outbox relay's claim: FOR UPDATE SKIP LOCKED on the oldest row
    const outbox = await cp.db.connect();
    await outbox.query('BEGIN');
    await outbox.query('SELECT id FROM events WHERE id = $1 FOR UPDATE', [a.id]);
    try {
      const rows = await inTx((c) => claimKafkaBatch(c, 10));
      expect(rows!.map((r) => Number(r.id))).toEqual([a.id, b.id]);
    } finally {
      await outbox.query('ROLLBACK');
      outbox.release();
    }
  });

  it('never lets a higher id overtake a lower one still being committed', async () => {
    await cp.db.query('UPDATE events SET kafka_published_at = now() WHERE kafka_published_at IS NULL');
    const open = await cp.db.connect();
    await open.query('BEGIN');
    const low = await recordEvent(open, { type: 'test.low', userId });
    const high = await recordEvent(cp.db, { type: 'test.high', userId });
    expect(high.id).toBeGreaterThan(low.id);
    expect((await inTx((c) => claimKafkaBatch(c, 10)))!.map((r) => r.type)).toEqual([]);
    await open.query('COMMIT');
    open.release();
    expect((await inTx((c) => claimKafkaBatch(c, 10)))!.map((r) => r.type)).toEqual(['test.low', 'test.high']);
  });

  it('one publisher at a time: skips (null) while another holds the Kafka lock', async () => {
    await recordEvent(cp.db, { type: 'test.c', userId });
    const other = await cp.db.connect();
    await other.query('BEGIN');
    await other.query('SELECT pg_advisory_xact_lock($1)', [KAFKA_LOCK_KEY]);
    try {
      expect(await inTx((c) => claimKafkaBatch(c, 10))).toBeNull();
    } finally {
      await other.query('ROLLBACK');
      other.release();
    }
    expect((await inTx((c) => claimKafkaBatch(c, 10)))!.map((r) => r.type)).toContain('test.c');
  });
});
