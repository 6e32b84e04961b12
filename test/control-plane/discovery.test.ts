import { connect } from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { ControlPlane } from '../../control-plane/app.js';
import { pino } from 'pino';
import type { Db } from '../../control-plane/db/pool.js';
import { RouteHub } from '../../control-plane/discovery/hub.js';
import { buildRoutes, makeTable, readAppRoutes } from '../../control-plane/discovery/route-table.js';
import { routableSql, startFailedSql } from '../../control-plane/apps/repo.js';
import type { RouteSpec } from '../../shared/routes/schema.js';
import { Api } from '../helpers/api.js';
import { insertReadyImage, startTestControlPlane, type TestControlPlane } from '../helpers/control-plane.js';

/**
 * Discovery endpoints (no Docker daemon needed: this control plane's DOCKER_HOST is a
 * socket that does not exist).
 */
let t: TestControlPlane;
let cp: ControlPlane;
let alice: Api;
let bob: Api;
let aliceId: number;
let bobId: number;
const TOKEN = 'proxy-test-token';
const proxy = () => new Api(cp.url, TOKEN);

const readyImage = (userId: number, host: string, max = 2) => insertReadyImage(cp, userId, host, max);

beforeAll(async () => {
  // (no health probes: the containers these tests insert listen nowhere — or on a port another
  // test's server took —, and a probe flipping one mid-test would race the tables compared)
  t = await startTestControlPlane({ seedDefaultUser: false, proxyToken: TOKEN, dockerHost: 'unix:///nonexistent/docker.sock', health: { intervalMs: 3_600_000 } });
  cp = t.cp;
  alice = await new Api(cp.url).signup('alice-disc@example.com');
  bob = await new Api(cp.url).signup('bob-disc@example.com');
  aliceId = (await alice.get('/api/auth/me')).body.user.id;
  bobId = (await bob.get('/api/auth/me')).body.user.id;
});
afterAll(async () => {
  await t?.close();
});

describe('GET /v1/proxies', () => {
  it('shows a signed-in user only their own routes and endpoints; the proxy token sees all', async () => {
    const a = await readyImage(aliceId, 'a-disc.example.com');
    const b = await readyImage(bobId, 'b-disc.example.com');
    await cp.db.query(`INSERT INTO containers (user_id, image_id, name, status, health, internal_port, desired, host_port)
                       VALUES ($1, $2, 'ca', 'running', 'healthy', 8080, 'running', 41001), ($3, $4, 'cb', 'running', 'healthy', 8080, 'running', 41002)`,
    [aliceId, a, bobId, b]);
    const ep = cp.app.config.endpointHost;
    const report = {
      proxyId: 'px-1', tableVersion: 1,
      routes: [{ id: `img-${a}`, requests: 5, inflight: 0 }, { id: `img-${b}`, requests: 7, inflight: 1 }],
      endpoints: [{ address: `${ep}:41001`, inflight: 0 }, { address: `${ep}:41002`, inflight: 1 }],
    };
    expect((await proxy().post('/v1/proxy/report', report)).status).toBe(204);

    const all = (await proxy().get('/v1/proxies')).body;
    expect(all.proxies[0].routes).toHaveLength(2);
    expect(all.proxies[0].endpoints).toHaveLength(2);
    expect(all.proxies[0].remote_address).toBeTruthy();

    const mine = await alice.get('/v1/proxies');
    expect(mine.status).toBe(200);
    expect(mine.body.count).toBe(1);
    expect(mine.body.proxies[0].routes.map((r: any) => r.id)).toEqual([`img-${a}`]);
    expect(mine.body.proxies[0].endpoints.map((e: any) => e.address)).toEqual([`${ep}:41001`]);
    expect(mine.body.proxies[0].remote_address).toBeUndefined();
    expect(JSON.stringify(mine.body)).not.toContain('41002');
    expect((await new Api(cp.url).get('/v1/proxies')).status).toBe(401);
    await cp.db.query('DELETE FROM containers WHERE image_id = ANY($1::bigint[])', [[a, b]]);
  });
});

describe('GET /v1/routes/watch', () => {
  it('a watcher that stops reading is not buffered table after table: when it reads again it gets the newest', async () => {
    const hub = cp.app.platform.hub;
    const before = hub.subscriberCount;
    const port = Number(new URL(cp.url).port);
    const s = connect({ host: '127.0.0.1', port });
    s.on('error', () => {});
    await new Promise<void>((r) => s.on('connect', () => r()));
    s.write(`GET /v1/routes/watch HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer ${TOKEN}\r\n\r\n`);
    const t0 = Date.now();
    while (hub.subscriberCount === before && Date.now() - t0 < 5000) await new Promise((r) => setTimeout(r, 20));
    expect(hub.subscriberCount).toBe(before + 1);
    await new Promise((r) => setTimeout(r, 200));
    s.pause(); // a proxy busy applying, or one that never reads again
    let got = '';
    s.on('data', (d: Buffer) => { got += d.toString('latin1'); });
    // 64 tables of 1 MiB published while it does not read: queued, they would be 64 MiB
    // (the hub may publish a real table meanwhile too: the newest is whichever came last)
    let newest = 0;
    const off = hub.subscribe((t) => { newest = t.version; });
    const listeners = (hub as unknown as { listeners: Set<(t: unknown) => void> }).listeners;
    for (let i = 1; i <= 64; i++) {
      const big = { version: 1_000_000 + i, routes: [{ id: 'pad', hosts: ['pad.example.com'], endpoints: [], pad: 'x'.repeat(1024 * 1024) }] };
      for (const l of [...listeners]) l(big);
      await new Promise((r) => setTimeout(r, 5));
    }
    // still subscribed (and this test's own listener)
    expect(hub.subscriberCount).toBe(before + 2);
    got = '';
    s.resume();
    const t1 = Date.now();
    const last = () => [...got.matchAll(/"version":(\d+)/g)].map((m) => Number(m[1])).at(-1);
    while (last() !== newest && Date.now() - t1 < 10_000) await new Promise((r) => setTimeout(r, 20));
    off();
    const versions = [...got.matchAll(/"version":(\d+)/g)].map((m) => Number(m[1]));
    // what the socket already held, then the newest alone
    expect(newest).toBeGreaterThan(0);
    expect(versions.at(-1)).toBe(newest);
    // (the kernel's socket buffers hold a few 1 MiB tables: 5-8 seen; queued, it would be 64)
    expect(versions.length).toBeLessThan(12);
    s.destroy();
    const t2 = Date.now();
    while (hub.subscriberCount > before && Date.now() - t2 < 5000) await new Promise((r) => setTimeout(r, 20));
    expect(hub.subscriberCount).toBe(before);
  });

  it('each watcher reads the table its features allow, whoever subscribed first (one event text per table and set of features)', async () => {
    const host = 'pipe-disc.example.com';
    const id = await readyImage(aliceId, host);
    await cp.db.query('UPDATE images SET upstream_pipeline = 4 WHERE id = $1', [id]);
    await cp.app.platform.hub.rebuild();
    const ac = new AbortController();
    /** the first table a watcher with these features is sent, as its route for `host` */
    const first = async (features: string | null) => {
      const r = await fetch(`${cp.url}/v1/routes/watch${features === null ? '' : `?features=${features}`}`, { headers: { authorization: `Bearer ${TOKEN}` }, signal: ac.signal });
      const reader = r.body!.getReader();
      let text = '';
      for (;;) {
        const m = /event: routes\ndata: (.*)\n\n/.exec(text);
        if (m) {
          void reader.cancel().catch(() => {});
          return (JSON.parse(m[1]) as { routes: Array<{ id: string; pipeline?: number }> }).routes.find((x) => x.id === `img-${id}`);
        }
        const { value, done } = await reader.read();
        if (done) throw new Error(`stream ended: ${text}`);
        text += new TextDecoder().decode(value);
      }
    };
    try {
      // one after the other, both orders: the second must not be handed the first one's text
      expect((await first('split,affinity,auth,pipeline'))?.pipeline).toBe(4);
      expect(await first(null)).toMatchObject({ id: `img-${id}` });
      expect((await first(null))?.pipeline).toBeUndefined();
      expect((await first('split,affinity,auth,pipeline'))?.pipeline).toBe(4);
    } finally {
      ac.abort();
    }
  });

  it('a watcher that reads deltas is sent the routes that changed (as its features allow it to read them), others the whole table', async () => {
    const host = 'delta-disc.example.com';
    const id = await readyImage(aliceId, host);
    const hub = cp.app.platform.hub;
    await hub.rebuild();
    const ac = new AbortController();
    /** the stream's events as they come: [event, data] */
    const watch = async (features: string) => {
      const r = await fetch(`${cp.url}/v1/routes/watch?features=${features}`, { headers: { authorization: `Bearer ${TOKEN}` }, signal: ac.signal });
      const reader = r.body!.getReader();
      const decoder = new TextDecoder();
      let text = '';
      const got: Array<[string, { version: number; base?: number; upsert?: Array<{ id: string; pipeline?: number }>; remove?: string[]; routes?: unknown[] }]> = [];
      void (async () => {
        for (;;) {
          const { value, done } = await reader.read().catch(() => ({ value: undefined, done: true }));
          if (done) return;
          text += decoder.decode(value, { stream: true });
          let m: RegExpExecArray | null;
          while ((m = /^(?::[^\n]*\n\n)*event: (\w+)\ndata: (.*)\n\n/.exec(text)) !== null) {
            got.push([m[1], JSON.parse(m[2])]);
            text = text.slice(m[0].length);
          }
        }
      })();
      return got;
    };
    const until = async (cond: () => boolean) => {
      const t0 = Date.now();
      while (!cond() && Date.now() - t0 < 5000) await new Promise((r) => setTimeout(r, 20));
      expect(cond()).toBe(true);
    };
    try {
      const all = await watch('split,affinity,auth,pipeline,delta');
      const noPipeline = await watch('split,affinity,auth,delta');
      const whole = await watch('split,affinity,auth,pipeline');
      await until(() => all.length === 1 && noPipeline.length === 1 && whole.length === 1);
      const v1 = all[0][1].version;
      for (const w of [all, noPipeline, whole]) expect(w[0][0]).toBe('routes');

      await cp.db.query('UPDATE images SET upstream_pipeline = 4 WHERE id = $1', [id]);
      const v2 = await hub.rebuild();
      await until(() => all.length === 2 && noPipeline.length === 2 && whole.length === 2);
      expect(all[1]).toEqual(['delta', { base: v1, version: v2, upsert: [expect.objectContaining({ id: `img-${id}`, hosts: [host], pipeline: 4 })], remove: [] }]);
      // the same change as a proxy that does not pipeline reads it: nothing but the version
      expect(noPipeline[1]).toEqual(['delta', { base: v1, version: v2, upsert: [], remove: [] }]);
      expect(whole[1][0]).toBe('routes');
      expect(whole[1][1].version).toBe(v2);
      expect(whole[1][1].routes).toContainEqual(expect.objectContaining({ id: `img-${id}`, pipeline: 4 }));
    } finally {
      ac.abort();
      await cp.db.query('UPDATE images SET upstream_pipeline = 1 WHERE id = $1', [id]);
    }
  });
});

describe('the route hub', () => {
  const byId = (routes: RouteSpec[]) => new Map(routes.map((r) => [r.id, r]));
  const sorted = (routes: RouteSpec[]) => [...routes].sort((x, y) => (x.id < y.id ? -1 : 1));

  it('makes each table from the last by what changed: the routes that stay are the same objects, and the table is the one a whole build makes', async () => {
    const hub = cp.app.platform.hub;
    const a = await readyImage(aliceId, 'hub-a.example.com');
    const b = await readyImage(bobId, 'hub-b.example.com');
    await cp.db.query(`INSERT INTO containers (user_id, image_id, name, status, health, internal_port, desired, host_port)
                       VALUES ($1, $2, 'hub-ca', 'running', 'healthy', 8080, 'running', 41101), ($3, $4, 'hub-cb', 'running', 'healthy', 8080, 'running', 41102)`,
    [aliceId, a, bobId, b]);
    const whole = async () => sorted(makeTable(0, await buildRoutes(cp.db, cp.app.config.endpointHost)).routes);
    await hub.rebuild();
    const t1 = hub.table!;
    expect(byId(t1.routes).get(`img-${a}`)!.endpoints).toHaveLength(1);

    // a's instance fails its probe: a's route changes, b's does not
    await cp.db.query(`UPDATE containers SET health = 'unhealthy' WHERE name = 'hub-ca'`);
    const v2 = await hub.rebuild();
    const t2 = hub.table!;
    expect(t2.version).toBe(v2);
    expect(v2).toBeGreaterThan(t1.version);
    expect(byId(t2.routes).get(`img-${b}`)).toBe(byId(t1.routes).get(`img-${b}`));
    expect(byId(t2.routes).get(`img-${a}`)!.endpoints).toEqual([]);
    expect(sorted(t2.routes)).toEqual(await whole());
    // t1 is left as it was (proxies' streams may still be sending it)
    expect(byId(t1.routes).get(`img-${a}`)!.endpoints).toHaveLength(1);

    // nothing changed: no new table
    expect(await hub.rebuild()).toBe(v2);
    expect(hub.table).toBe(t2);

    // b's app goes (its route leaves), a's hostname moves to a new revision with a tag on the old
    // one (the host changes route within one change)
    const a2 = await readyImage(aliceId, 'hub-a.example.com');
    await cp.db.query(`UPDATE apps SET traffic = $2 WHERE app_hostname = $1`,
      ['hub-a.example.com', JSON.stringify([{ image_id: a2, percent: 100 }, { image_id: a, percent: 0, tag: 'old' }])]);
    await cp.db.query(`UPDATE apps SET deleting_at = now() WHERE app_hostname = 'hub-b.example.com'`);
    await hub.rebuild();
    const t3 = hub.table!;
    expect(byId(t3.routes).has(`img-${b}`)).toBe(false);
    expect(byId(t3.routes).get(`img-${a2}`)!.hosts).toEqual(['hub-a.example.com']);
    expect(byId(t3.routes).get(`img-${a}`)!.hosts).toEqual(['old---hub-a.example.com']);
    expect(sorted(t3.routes)).toEqual(await whole());
    await cp.db.query(`UPDATE apps SET deleting_at = NULL WHERE app_hostname = 'hub-b.example.com'`);
  });

  it("polls for other control planes' changes by Postgres's count of writes: an idle database is not read again, a change it counts is", async () => {
    const a = await readyImage(aliceId, 'hub-poll.example.com');
    let reads = 0;
    // this database, its route reads counted (another control plane's writes: cp.db below)
    const db = new Proxy(cp.db, {
      get(target, key) {
        if (key !== 'query') return Reflect.get(target, key);
        return (sql: string, params?: unknown[]) => {
          if (sql.includes('FROM apps a')) reads++;
          return target.query(sql, params);
        };
      },
    }) as Db;
    const hub = new RouteHub(db, cp.app.config.endpointHost, pino({ level: 'silent' }), 5, 20);
    await hub.start();
    try {
      // the writes of the tests before may still be counted late (a session reports within about
      // a second): then reads settle
      await new Promise((r) => setTimeout(r, 2500));
      const idle = reads;
      await new Promise((r) => setTimeout(r, 1000));
      // ~40 polls of an idle database: none read the routes (a poll every 20 ms read them all
      // before) but for counts of earlier writes reported late (a session idle after a write: ~10 s)
      expect(reads - idle).toBeLessThanOrEqual(2);

      await cp.db.query(`INSERT INTO containers (user_id, image_id, name, status, health, internal_port, desired, host_port)
                         VALUES ($1, $2, 'hub-poll-c', 'running', 'healthy', 8080, 'running', 41201)`, [aliceId, a]);
      const t0 = Date.now();
      const has = () => hub.table?.routes.find((r) => r.id === `img-${a}`)?.endpoints.length === 1;
      // (a session reports its counts at most once a second: when it then goes idle, up to ~10 s later)
      while (!has() && Date.now() - t0 < 20_000) await new Promise((r) => setTimeout(r, 20));
      expect(has()).toBe(true);
    } finally {
      hub.stop();
    }
  });

  it('is told by Postgres which apps changed, on any control plane, and reads only their routes (every app when an older one with `---` in its name comes or goes)', async () => {
    const a = await readyImage(aliceId, 'hub-notify-a.example.com');
    const b = await readyImage(bobId, 'hub-notify-b.example.com');
    const reads: Array<string[] | 'all'> = [];
    // this database, its route reads recorded (another control plane's writes: cp.db below)
    const db = new Proxy(cp.db, {
      get(target, key) {
        if (key !== 'query') return Reflect.get(target, key);
        return (sql: string, params?: unknown[]) => {
          if (sql.includes('FROM apps a\n')) reads.push(sql.includes('ANY') ? (params![0] as string[]) : 'all');
          return target.query(sql, params);
        };
      },
    }) as Db;
    const hub = new RouteHub(db, cp.app.config.endpointHost, pino({ level: 'silent' }), 5, 60_000, undefined, cp.db.options.connectionString);
    await hub.start();
    const until = async (what: string, cond: () => boolean) => {
      const t0 = Date.now();
      while (!cond() && Date.now() - t0 < 10_000) await new Promise((r) => setTimeout(r, 10));
      expect(cond(), what).toBe(true);
    };
    const route = (id: number) => hub.table?.routes.find((r) => r.id === `img-${id}`);
    try {
      await until('listening', () => hub.listening);
      // (listening began: every app was read once more)
      await until('read after listening began', () => reads.length >= 2);
      await new Promise((r) => setTimeout(r, 100));
      const from = reads.length;

      await cp.db.query(`INSERT INTO containers (user_id, image_id, name, status, health, internal_port, desired, host_port)
                         VALUES ($1, $2, 'hub-notify-ca', 'running', 'healthy', 8080, 'running', 41301)`, [aliceId, a]);
      await until('a has its endpoint', () => route(a)?.endpoints.length === 1);
      // (other apps' rows may change meanwhile — this control plane's own loops —, each read on its own)
      expect(reads.slice(from)).toContainEqual(['hub-notify-a.example.com']);
      expect(reads.slice(from)).not.toContain('all');

      // private, with a token: the invoker's row names the app too
      await cp.db.query(`UPDATE apps SET private = true WHERE app_hostname = 'hub-notify-b.example.com'`);
      await cp.db.query(`INSERT INTO app_invokers (app_hostname, name, token_sha256) VALUES ('hub-notify-b.example.com', 'ci', $1)`, ['ab'.repeat(32)]);
      await until('b needs the token', () => route(b)?.auth?.tokens.length === 1);
      expect(reads.slice(from).every((r) => r !== 'all')).toBe(true);
      // the table a whole build makes (compared once a change made meanwhile has reached the hub)
      const whole = async () => sorted(makeTable(0, await buildRoutes(cp.db, cp.app.config.endpointHost)).routes);
      const settled = async () => {
        let want = await whole();
        for (let i = 0; i < 50 && JSON.stringify(sorted(hub.table!.routes)) !== JSON.stringify(want); i++) {
          await new Promise((r) => setTimeout(r, 100));
          want = await whole();
        }
        return want;
      };
      const want = await settled();
      expect(sorted(hub.table!.routes)).toEqual(want);

      // an app that goes, or comes: its own routes only
      let before = reads.length;
      await cp.db.query(`UPDATE apps SET deleting_at = now() WHERE app_hostname = 'hub-notify-a.example.com'`);
      await until('a is gone', () => route(a) === undefined);
      const c = await readyImage(aliceId, 'hub-notify-c.example.com');
      await until('c is there', () => route(c) !== undefined);
      expect(reads.slice(before)).not.toContain('all');
      expect(reads.slice(before)).toContainEqual(['hub-notify-a.example.com']);
      // an older app whose hostname has `---` (it could take another app's tag host): every app
      before = reads.length;
      await readyImage(bobId, 'old---hub-notify-c.example.com');
      await until('every app read', () => reads.slice(before).includes('all'));
      await cp.db.query(`UPDATE apps SET deleting_at = now() WHERE app_hostname = 'old---hub-notify-c.example.com'`);
      const end = await settled();
      expect(sorted(hub.table!.routes)).toEqual(end);
    } finally {
      hub.stop();
      await cp.db.query(`UPDATE apps SET deleting_at = NULL WHERE app_hostname = 'hub-notify-a.example.com'`);
    }
  });

  it('every column the routes are read from tells the control planes when an UPDATE sets it (migration 029)', async () => {
    // the columns readAppRoutes' queries read, by table
    const tables: Record<string, string> = { a: 'apps', i: 'images', c: 'containers', w: 'containers', v: 'app_invokers' };
    const sql = (readAppRoutes.toString().match(/SELECT[\s\S]*?ORDER BY[^`]*/g) ?? []).join(' ') + routableSql('i') + startFailedSql('i');
    const read = new Set<string>();
    for (const m of sql.matchAll(/\b([aicwv])\.([a-z_]+)\b/g)) if (m[2] !== 'id') read.add(`${tables[m[1]]}.${m[2]}`);
    expect(read.size).toBeGreaterThan(15);
    const { rows } = await cp.db.query<{ t: string; col: string }>(
      `SELECT c.relname AS t, a.attname AS col FROM pg_trigger g JOIN pg_class c ON c.oid = g.tgrelid
         JOIN pg_attribute a ON a.attrelid = g.tgrelid AND a.attnum = ANY (g.tgattr::int2[])
        WHERE g.tgname LIKE '%\\_routes\\_notify'`);
    const told = new Set(rows.map((r) => `${r.t}.${r.col}`));
    expect([...read].filter((col) => !told.has(col))).toEqual([]);
  });
});
