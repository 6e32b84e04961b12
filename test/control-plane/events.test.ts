import { spawn } from 'node:child_process';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { BIN } from '../e2e/support.js';
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

  it('never skips an event whose younger transaction took a lower id and commits after an older one', async () => {
    const api = await new Api(cp.url).signup('events-order@example.com');
    const me = (await api.get('/api/auth/me')).body.user.id as number;
    // A starts first (it has a transaction id), B takes the lower event id and stays open, A
    // takes a higher event id and commits
    const a = await cp.db.connect();
    const b = await cp.db.connect();
    try {
      await a.query('BEGIN');
      await a.query('SELECT pg_current_xact_id()');
      await b.query('BEGIN');
      const low = await recordEvent(b, { type: 'test.younger', userId: me });
      const high = await recordEvent(a, { type: 'test.older', userId: me });
      expect(high.id).toBeGreaterThan(low.id);
      await a.query('COMMIT');
      const first = (await api.get('/api/events?after=0')).body;
      expect(first.events.map((e: { type: string }) => e.type)).toEqual(['test.older']);
      await b.query('COMMIT');
      const next = (await api.get(`/api/events?after=${first.next_after}`)).body;
      expect(next.events.map((e: { type: string }) => e.type)).toEqual(['test.younger']);
    } finally {
      a.release();
      b.release();
    }
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

describe('one app\'s events, the newest first page, and `berth events`', () => {
  it('app=HOST filters (by the normalised name), tail=N gives the newest N oldest first, bad input is 400', async () => {
    const api = await new Api(cp.url).signup('events-app@example.com');
    const me = (await api.get('/api/auth/me')).body.user.id as number;
    const other = await new Api(cp.url).signup('events-other@example.com');
    const them = (await other.get('/api/auth/me')).body.user.id as number;
    for (let i = 0; i < 5; i++) await recordEvent(cp.db, { type: 'test.a', userId: me, appHostname: 'a.example.com', payload: { i } });
    await recordEvent(cp.db, { type: 'test.b', userId: me, appHostname: 'b.example.com' });
    await recordEvent(cp.db, { type: 'test.mine', userId: me });
    await recordEvent(cp.db, { type: 'test.theirs', userId: them, appHostname: 'a.example.com' });
    const a = (await api.get('/api/events?app=A.Example.com.&tail=3')).body;
    expect(a.events.map((e: { payload: { i: number } }) => e.payload.i)).toEqual([2, 3, 4]);
    expect(a.next_after).toBe(a.events[2].id);
    const all = (await api.get('/api/events?tail=2')).body;
    expect(all.events.map((e: { type: string }) => e.type)).toEqual(['test.b', 'test.mine']);
    // paging one app after an id
    const first = (await api.get('/api/events?app=a.example.com&limit=2')).body;
    const next = (await api.get(`/api/events?app=a.example.com&after=${first.next_after}&limit=10`)).body;
    expect([...first.events, ...next.events].map((e: { payload: { i: number } }) => e.payload.i)).toEqual([0, 1, 2, 3, 4]);
    // another user's events of the same hostname are theirs only
    expect((await other.get('/api/events?app=a.example.com')).body.events.map((e: { type: string }) => e.type)).toEqual(['test.theirs']);
    expect((await api.get('/api/events?app=nothing.example.com&tail=5')).body).toEqual({ events: [], next_after: 0 });
    for (const bad of ['app=', `app=${'a'.repeat(301)}`, 'app=%2F%2F', 'tail=0', 'tail=1001', 'tail=x']) {
      expect((await api.get(`/api/events?${bad}`)).status, bad).toBe(400);
    }
  });

  it('berth events prints the newest events of an app, then follows new ones', async () => {
    const api = await new Api(cp.url).signup('events-cli@example.com');
    const me = (await api.get('/api/auth/me')).body.user.id as number;
    for (let i = 0; i < 3; i++) await recordEvent(cp.db, { type: 'test.cli', userId: me, appHostname: 'cli.example.com', payload: { i, note: 'two words' } });
    const env = { ...process.env, BERTH_TOKEN: api.token!, BERTH_API: cp.url, NO_COLOR: '1', BERTH_CONFIG_DIR: '/nonexistent/berth-test' };
    const once = await new Promise<{ code: number; out: string; err: string }>((resolve) => {
      const c = spawn(process.execPath, [BIN, 'events', 'cli.example.com', '--tail', '2'], { env });
      let out = '';
      let err = '';
      c.stdout.on('data', (d: Buffer) => { out += d; });
      c.stderr.on('data', (d: Buffer) => { err += d; });
      c.on('close', (code) => resolve({ code: code ?? -1, out, err }));
    });
    expect(once.code, once.err).toBe(0);
    const lines = once.out.trim().split('\n');
    expect(lines).toHaveLength(2);
    expect(lines[0]).toMatch(/^\d{4}-\d\d-\d\dT\S+Z {2}test\.cli +cli\.example\.com {2}i=1 note="two words"$/);
    // --follow --json: the newest one, then one recorded while it runs
    const c = spawn(process.execPath, [BIN, 'events', 'cli.example.com', '--tail', '1', '--follow', '--json'], { env });
    let out = '';
    c.stdout.on('data', (d: Buffer) => { out += d; });
    try {
      const deadline = Date.now() + 15_000;
      while (!out.includes('"i":2') && Date.now() < deadline) await new Promise((r) => setTimeout(r, 50));
      await recordEvent(cp.db, { type: 'test.cli', userId: me, appHostname: 'other.example.com', payload: { i: 99 } });
      await recordEvent(cp.db, { type: 'test.cli', userId: me, appHostname: 'cli.example.com', payload: { i: 3 } });
      while (!out.includes('"i":3') && Date.now() < deadline) await new Promise((r) => setTimeout(r, 50));
      const events = out.trim().split('\n').map((l) => JSON.parse(l) as { payload: { i: number } });
      expect(events.map((e) => e.payload.i)).toEqual([2, 3]);
    } finally {
      c.kill('SIGINT');
      await new Promise((r) => c.once('close', r));
    }
  }, 30_000);
});
