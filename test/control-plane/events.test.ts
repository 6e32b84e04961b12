import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { ControlPlane } from '../../control-plane/app.js';
import { recordEvent } from '../../control-plane/events/outbox.js';
import { Api } from '../helpers/api.js';
import { startTestControlPlane, type TestControlPlane } from '../helpers/control-plane.js';

let t: TestControlPlane;
let cp: ControlPlane;

beforeAll(async () => {
  t = await startTestControlPlane({ env: 'development' });
  cp = t.cp;
});
afterAll(async () => {
  await t?.close();
});

describe('GET /api/events?after=', () => {
  it('never skips an event whose transaction commits after a later id', async () => {
    const api = await new Api(cp.url).signup('events@example.com');
    const me = (await api.get('/api/auth/me')).body.user.id as number;
    // transaction A takes the lower id and stays open
    const a = await cp.db.connect();
    await a.query('BEGIN');
    const low = await recordEvent(a, { type: 'test.low', userId: me });
    // transaction B takes a higher id and commits
    const high = await recordEvent(cp.db, { type: 'test.high', userId: me });
    expect(high.id).toBeGreaterThan(low.id);
    const during = (await api.get('/api/events?after=0')).body;
    // the higher id is held back while a lower one may still appear
    expect(during.events.map((e: { type: string }) => e.type)).not.toContain('test.high');
    await a.query('COMMIT');
    a.release();
    const after = (await api.get(`/api/events?after=${during.next_after}`)).body;
    expect(after.events.map((e: { type: string }) => e.type)).toEqual(['test.low', 'test.high']);
  });

  it('rejects bad paging parameters', async () => {
    const api = await new Api(cp.url).signup('events2@example.com');
    expect((await api.get('/api/events?after=-1')).status).toBe(400);
    expect((await api.get('/api/events?limit=0')).status).toBe(400);
    expect((await api.get('/api/events?limit=5000')).status).toBe(400);
  });
});

describe('event retention (BERTH_EVENT_RETENTION_DAYS)', () => {
  it('deletes delivered events older than the period, in batches; keeps recent ones, undelivered ones, and (with Kafka) ones Kafka has not had', async () => {
    const { pruneEvents } = await import('../../control-plane/events/retention.js');
    // (the relay would deliver the undelivered one meanwhile: this is the file's last test)
    await cp.app.events.stop();
    const add = async (type: string, ageDays: number, published: boolean, kafka: boolean) => (await cp.db.query<{ id: string }>(
      `INSERT INTO events (type, created_at, published_at, kafka_published_at)
       VALUES ($1, now() - make_interval(days => $2), CASE WHEN $3 THEN now() END, CASE WHEN $4 THEN now() END) RETURNING id`,
      [type, ageDays, published, kafka])).rows[0].id;
    const old = [];
    for (let i = 0; i < 7; i++) old.push(await add('test.old', 100, true, true));
    const oldNoKafka = await add('test.old-no-kafka', 100, true, false);
    const oldUndelivered = await add('test.old-undelivered', 100, false, false);
    const recent = await add('test.recent', 10, true, true);
    const left = async (ids: string[]) => (await cp.db.query('SELECT id FROM events WHERE id = ANY($1::bigint[])', [ids])).rowCount;

    // with Kafka: only what Kafka has too (batches of 3: 7 rows in three)
    expect(await pruneEvents(cp.db, 90, true, 3)).toBeGreaterThanOrEqual(7);
    expect(await left(old)).toBe(0);
    expect(await left([oldNoKafka, oldUndelivered, recent])).toBe(3);
    // without Kafka: the delivered old one goes; the undelivered one and the recent one stay
    await pruneEvents(cp.db, 90, false);
    expect(await left([oldNoKafka])).toBe(0);
    expect(await left([oldUndelivered, recent])).toBe(2);
    // 0 days: retention off
    expect(await pruneEvents(cp.db, 0, false)).toBe(0);
    expect(await pruneEvents(cp.db, 5, false)).toBeGreaterThanOrEqual(1);
    expect(await left([recent])).toBe(0);
    expect(await left([oldUndelivered])).toBe(1);
  });
});
