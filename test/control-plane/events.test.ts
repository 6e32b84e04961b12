import { spawn } from 'node:child_process';
import { createServer } from 'node:http';
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
    expect((await api.get('/api/events?wait=31')).status).toBe(400);
    expect((await api.get('/api/events?wait=-1')).status).toBe(400);
    const tail = await api.get('/api/events?wait=5&tail=2');
    expect([tail.status, tail.body.error.message]).toEqual([400, 'wait is for following with after=, not with tail']);
  });
});

describe('GET /api/events?after=&wait= (a long poll)', () => {
  /** A poll's answer and how long it took. */
  async function poll(api: Api, query: string): Promise<{ ms: number; status: number; types: string[]; next: number }> {
    const t0 = Date.now();
    const r = await api.get(`/api/events?${query}`);
    return { ms: Date.now() - t0, status: r.status, types: (r.body.events ?? []).map((e: { type: string }) => e.type), next: r.body.next_after };
  }

  it('answers as soon as one of the user\'s events is recorded, never with another user\'s; with none, after the wait', async () => {
    const api = await new Api(cp.url).signup('poll@example.com');
    const other = await new Api(cp.url).signup('poll-other@example.com');
    const me = (await api.get('/api/auth/me')).body.user.id as number;
    const them = (await other.get('/api/auth/me')).body.user.id as number;
    const after = (await api.get('/api/events?tail=1')).body.next_after as number;
    const empty = await poll(api, `after=${after}&wait=1`);
    expect([empty.status, empty.types, empty.next]).toEqual([200, [], after]);
    expect(empty.ms).toBeGreaterThanOrEqual(900);
    const held = poll(api, `after=${after}&wait=20`);
    await new Promise((r) => setTimeout(r, 300));
    await recordEvent(cp.db, { type: 'test.theirs', userId: them });
    await new Promise((r) => setTimeout(r, 500));
    const recorded = Date.now();
    await recordEvent(cp.db, { type: 'test.mine', userId: me });
    const r = await held;
    expect([r.status, r.types]).toEqual([200, ['test.mine']]);
    expect(Date.now() - recorded).toBeLessThan(1500);
    expect(r.ms).toBeGreaterThanOrEqual(800);
  });

  it('an event held back by an older transaction still running is answered once that one ends (no notification of its own), whether the poll came before or after it', async () => {
    const api = await new Api(cp.url).signup('poll-held@example.com');
    const me = (await api.get('/api/auth/me')).body.user.id as number;
    let after = 0;
    for (const order of ['poll first', 'event first'] as const) {
      const a = await cp.db.connect();
      try {
        await a.query('BEGIN');
        await a.query('SELECT pg_current_xact_id()');
        let held: ReturnType<typeof poll> | undefined;
        if (order === 'poll first') {
          held = poll(api, `after=${after}&wait=20`);
          await new Promise((r) => setTimeout(r, 200));
        }
        await recordEvent(cp.db, { type: `test.${order.replace(' ', '-')}`, userId: me });
        held ??= poll(api, `after=${after}&wait=20`);
        // notified, but not listed while the older transaction runs
        await new Promise((r) => setTimeout(r, 700));
        const ended = Date.now();
        await a.query('COMMIT');
        const r = await held;
        expect(r.types, order).toEqual([`test.${order.replace(' ', '-')}`]);
        expect(Date.now() - ended, order).toBeLessThan(1500);
        after = r.next;
      } finally {
        a.release();
      }
    }
  });

  it('a control plane closing answers its held polls at once instead of waiting for them', async () => {
    const other = await startTestControlPlane({ env: 'development' });
    let closed = false;
    try {
      const api = await new Api(other.cp.url).signup('poll-close@example.com');
      const held = poll(api, 'after=0&wait=30');
      await new Promise((r) => setTimeout(r, 1000));
      const t0 = Date.now();
      await other.close();
      closed = true;
      const r = await held;
      expect(Date.now() - t0).toBeLessThan(15_000);
      expect([r.status, r.types]).toEqual([200, []]);
    } finally {
      if (!closed) await other.close();
    }
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

  it('berth events --follow: a control plane without long polls is asked every 2 s; one answering polls at once, empty or with the same page, is not asked in a loop', async () => {
    for (const mode of ['old', 'quick', 'same'] as const) {
      const asked: string[] = [];
      const server = createServer((req, res) => {
        const url = new URL(req.url!, 'http://x');
        asked.push(url.search);
        const page = (events: object[], next: number) => {
          res.writeHead(200, { 'content-type': 'application/json' });
          res.end(JSON.stringify({ events, next_after: next }));
        };
        if (url.searchParams.has('tail')) return page([], 5);
        if (mode === 'same') return page([{ id: 6, type: 'test.same', app_hostname: null, image_id: null, container_id: null, payload: {}, created_at: '2026-12-02T00:00:00Z' }], 6);
        if (url.searchParams.has('wait') && mode === 'old') {
          res.writeHead(400, { 'content-type': 'application/json' });
          return res.end(JSON.stringify({ error: { code: 'invalid_request', message: 'querystring must NOT have additional properties' } }));
        }
        if (url.searchParams.get('after') === '5' && asked.filter((q) => q.includes('after=5')).length === (mode === 'old' ? 2 : 1)) {
          return page([{ id: 6, type: `test.${mode}`, app_hostname: null, image_id: null, container_id: null, payload: {}, created_at: '2026-12-02T00:00:00Z' }], 6);
        }
        return page([], Number(url.searchParams.get('after')));
      });
      await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
      const c = spawn(process.execPath, [BIN, 'events', '--follow', '--api', `http://127.0.0.1:${(server.address() as { port: number }).port}`], {
        env: { ...process.env, BERTH_TOKEN: 'berth_x', NO_COLOR: '1', BERTH_CONFIG_DIR: '/nonexistent/berth-test' },
      });
      let out = '';
      let err = '';
      c.stdout.on('data', (d: Buffer) => { out += d; });
      c.stderr.on('data', (d: Buffer) => { err += d; });
      try {
        const deadline = Date.now() + 10_000;
        while (!out.includes(`test.${mode}`) && Date.now() < deadline) await new Promise((r) => setTimeout(r, 50));
        expect(out, err).toContain(`test.${mode}`);
        await new Promise((r) => setTimeout(r, 3000));
        const waits = asked.filter((q) => q.includes('wait='));
        if (mode === 'old') expect(waits).toHaveLength(1); // refused once: polled from then on
        // polled every 2 s (old), or not asked again at once after an empty answer that came at once (quick)
        expect(asked.length, asked.join(' ')).toBeLessThanOrEqual(8);
      } finally {
        c.kill('SIGINT');
        await new Promise((r) => c.once('close', r));
        server.close();
      }
    }
  }, 40_000);

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
      // (it is waiting in a long poll by now)
      await new Promise((r) => setTimeout(r, 500));
      await recordEvent(cp.db, { type: 'test.cli', userId: me, appHostname: 'other.example.com', payload: { i: 99 } });
      // each printed as it happens, not at the next poll (which came every 2 s: three in a row
      // within a second each would be luck)
      for (const i of [3, 4, 5]) {
        const recorded = Date.now();
        await recordEvent(cp.db, { type: 'test.cli', userId: me, appHostname: 'cli.example.com', payload: { i } });
        while (!out.includes(`"i":${i}`) && Date.now() < deadline) await new Promise((r) => setTimeout(r, 20));
        expect(Date.now() - recorded).toBeLessThan(1000);
        await new Promise((r) => setTimeout(r, 300));
      }
      const events = out.trim().split('\n').map((l) => JSON.parse(l) as { payload: { i: number } });
      expect(events.map((e) => e.payload.i)).toEqual([2, 3, 4, 5]);
    } finally {
      c.kill('SIGINT');
      await new Promise((r) => c.once('close', r));
    }
  }, 30_000);
});
