/**
 * `GET /api/apps` and `GET /api/apps/:host` (control-plane/apps/describe.ts): describing apps takes
 * one query whatever their number (it used to take three per app, one of them reading the images
 * twice), and the answer is the one the per-app queries gave, for a user with several apps in
 * various states (revisions building, failed, ready, routable; instances running, ready, stopped;
 * splits with tags, a pinned revision, a pending deploy).
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Queryable } from '../../control-plane/db/pool.js';
import { describeApp, describeApps, type AppView } from '../../control-plane/apps/describe.js';
import { revisionStates, settlePending, type AppRow } from '../../control-plane/apps/repo.js';
import { resolveTraffic, tagHost } from '../../control-plane/apps/traffic.js';
import type { ImageRow } from '../../control-plane/images/repo.js';
import { Api } from '../helpers/api.js';
import { insertApp, startTestControlPlane, type TestControlPlane } from '../helpers/control-plane.js';

let t: TestControlPlane;
let alice: Api;
let bob: Api;
let aliceId: number;

/** The description as it was computed before (three queries per app), to compare with. */
async function describeBefore(q: Queryable, a: AppRow) {
  const { rows: images } = await q.query<ImageRow>('SELECT * FROM images WHERE app_hostname = $1 ORDER BY revision', [a.app_hostname]);
  const { rows: counts } = await q.query<{ image_id: number; instances: number; ready: number }>(
    `SELECT image_id, count(*) FILTER (WHERE desired = 'running')::int AS instances,
            count(*) FILTER (WHERE desired = 'running' AND status = 'running' AND health = 'healthy')::int AS ready
       FROM containers WHERE image_id = ANY($1::bigint[]) GROUP BY image_id`, [images.map((i) => i.id)]);
  const byImage = new Map(counts.map((c) => [Number(c.image_id), c]));
  const states = await revisionStates(q, a.app_hostname);
  const r = resolveTraffic(a.traffic, states, a.pending_image_id);
  const traffic = r.promoted ?? a.traffic;
  const host = a.app_hostname;
  const revisionOf = new Map(images.map((i) => [i.id, i.revision]));
  return {
    app_hostname: host,
    url: `http://${host}/`,
    path: `/apps/${host}/`,
    latest_image_id: r.latest,
    revisions: images.map((i) => {
      const tags = r.tags.get(i.id) ?? [];
      return {
        image_id: i.id,
        revision: i.revision,
        status: i.status,
        instances: byImage.get(i.id)?.instances ?? 0,
        ready_instances: byImage.get(i.id)?.ready ?? 0,
        start_failure: i.start_failed_at ? i.start_failure ?? 'could not start' : null,
        start_blocked: i.start_failed_at ? null : i.start_blocked,
        proving: i.proof_required && i.routable_at === null && i.start_failed_at === null && r.serving.has(i.id),
        traffic_percent: r.percent.get(i.id) ?? 0,
        traffic_tag: tags[0] ?? null,
        tag_url: tags[0] ? `http://${tagHost(tags[0], host)}/` : null,
        tag_urls: tags.map((tg) => `http://${tagHost(tg, host)}/`),
        serving: r.serving.has(i.id),
        served: i.routable_at !== null,
        created_at: new Date(i.created_at).toISOString(),
      };
    }),
    pending_image_id: r.promoted ? null : a.pending_image_id,
    traffic: traffic.map((e) => {
      const id = e.latest ? r.latest : e.image_id ?? null;
      return { ...e, revision: id === null ? null : revisionOf.get(id) ?? null };
    }),
    private: false,
    deleting_at: null,
    created_at: new Date(a.created_at).toISOString(),
    updated_at: new Date(a.updated_at).toISOString(),
  };
}

/** A Queryable that counts the queries sent through it. */
function counting(q: Queryable): Queryable & { n: number } {
  const c = {
    n: 0,
    query: ((...args: Parameters<Queryable['query']>) => { c.n++; return (q.query as (...a: unknown[]) => unknown)(...args); }) as Queryable['query'],
  };
  return c;
}

/** A revision of `host` (scale-from-zero unless `min`, so the reconcile loop leaves it alone). */
async function revision(host: string, status: 'building' | 'ready' | 'build_failed', opts: { routable?: boolean; userId?: number } = {}): Promise<number> {
  const userId = opts.userId ?? aliceId;
  const rev = await insertApp(t.cp.db, userId, host);
  const { rows: [r] } = await t.cp.db.query<{ id: number }>(
    `INSERT INTO images (user_id, name, tag, app_hostname, revision, status, docker_image, min_instances, max_instances, routable_at)
     VALUES ($1, 'x', 'latest', $2, $3, $4, 'berth-test/none:1', 0, 3, $5) RETURNING id`,
    [userId, host, rev, status, opts.routable ? new Date() : null]);
  return Number(r.id);
}

/** Container rows (never started in Docker: the counts are all that matters here). */
async function instances(imageId: number, rows: { desired: 'running' | 'stopped'; status: string; health: string }[]): Promise<void> {
  for (const c of rows) {
    await t.cp.db.query(
      `INSERT INTO containers (user_id, image_id, status, health, desired) VALUES ($1, $2, $3, $4, $5)`,
      [aliceId, imageId, c.status, c.health, c.desired]);
  }
}

const HOSTS = ['a-one.localhost', 'b-split.localhost', 'c-pending.localhost', 'd-building.localhost', 'e-failed.localhost'];

beforeAll(async () => {
  // no Docker: the reconcile loop skips its passes, so it neither retires the fixture's instances
  // of revisions without traffic nor promotes the pending deploy while the tests read them
  t = await startTestControlPlane({ dockerHost: 'unix:///nonexistent/docker.sock' });
  const anon = new Api(t.cp.url);
  alice = await anon.signup('apps-describe-a@example.com');
  bob = await anon.signup('apps-describe-b@example.com');
  aliceId = Number((await alice.get('/api/auth/me')).body.user.id);
  const bobId = Number((await bob.get('/api/auth/me')).body.user.id);

  // one routable revision with instances in every state
  const one = await revision(HOSTS[0], 'ready', { routable: true });
  await instances(one, [
    { desired: 'running', status: 'running', health: 'healthy' },
    { desired: 'running', status: 'running', health: 'unhealthy' },
    { desired: 'running', status: 'creating', health: 'unknown' },
    { desired: 'stopped', status: 'stopped', health: 'unknown' },
  ]);
  await t.cp.db.query(`UPDATE apps SET traffic = '[{"latest":true,"percent":100}]' WHERE app_hostname = $1`, [HOSTS[0]]);

  // three revisions split 90/10 with tags, a failed one between them
  const s1 = await revision(HOSTS[1], 'ready', { routable: true });
  const s2 = await revision(HOSTS[1], 'build_failed');
  const s3 = await revision(HOSTS[1], 'ready', { routable: true });
  const s4 = await revision(HOSTS[1], 'ready');
  await instances(s1, [{ desired: 'running', status: 'running', health: 'healthy' }]);
  await instances(s3, [{ desired: 'running', status: 'running', health: 'healthy' }, { desired: 'running', status: 'running', health: 'healthy' }]);
  void s2;
  await t.cp.db.query(`UPDATE apps SET traffic = $2::jsonb WHERE app_hostname = $1`,
    [HOSTS[1], JSON.stringify([{ image_id: s1, percent: 90 }, { latest: true, percent: 10, tag: 'canary' }, { image_id: s4, percent: 0, tag: 'next' }])]);

  // a pending deploy that is routable (shown promoted) and one that is not yet
  const p1 = await revision(HOSTS[2], 'ready', { routable: true });
  const p2 = await revision(HOSTS[2], 'ready', { routable: true });
  await t.cp.db.query(`UPDATE apps SET traffic = $2::jsonb, pending_image_id = $3 WHERE app_hostname = $1`,
    [HOSTS[2], JSON.stringify([{ image_id: p1, percent: 100, tag: 'old' }]), p2]);
  const b1 = await revision(HOSTS[3], 'ready', { routable: true });
  const b2 = await revision(HOSTS[3], 'building');
  await t.cp.db.query(`UPDATE apps SET traffic = $2::jsonb, pending_image_id = $3 WHERE app_hostname = $1`,
    [HOSTS[3], JSON.stringify([{ image_id: b1, percent: 100 }]), b2]);

  // nothing ready at all
  await revision(HOSTS[4], 'build_failed');
  await t.cp.db.query(`UPDATE apps SET traffic = '[{"latest":true,"percent":100}]' WHERE app_hostname = $1`, [HOSTS[4]]);

  // another user's app is not in alice's list
  await revision('zz-bob.localhost', 'ready', { routable: true, userId: bobId });
});

afterAll(async () => {
  await t?.close();
});

describe('describing apps', () => {
  it('is one query for one app or for all of them, and gives what the per-app queries gave', async () => {
    // one snapshot for both computations: the reconcile loop may run meanwhile
    const c = await t.cp.db.connect();
    try {
      await c.query('BEGIN ISOLATION LEVEL REPEATABLE READ');
      const { rows } = await c.query<AppRow>('SELECT * FROM apps WHERE user_id = $1 ORDER BY app_hostname', [aliceId]);
      expect(rows.map((a) => a.app_hostname)).toEqual(HOSTS);

      const q = counting(c);
      const all = await describeApps(q, rows, null);
      expect(q.n).toBe(1);
      const before = [];
      for (const a of rows) before.push(await describeBefore(c, a));
      expect(JSON.stringify(all)).toBe(JSON.stringify(before));

      const one = counting(c);
      expect(JSON.stringify(await describeApp(one, rows[1], null))).toBe(JSON.stringify(before[1]));
      expect(one.n).toBe(1);

      expect(await describeApps(counting(c), [], null)).toEqual([]);
      // the proxy's public URL known: the URLs are on its scheme and port (an app's copied URL works)
      const k = before.findIndex((v) => v.revisions.some((r) => r.tag_urls.length > 0));
      expect(k).toBeGreaterThanOrEqual(0);
      const [https, plain] = [await describeApp(c, rows[k], 'https://apps.example.test:8443'), await describeApp(c, rows[k], 'http://127.0.0.1:8080')];
      expect([https.url, plain.url]).toEqual([`https://${rows[k].app_hostname}:8443/`, `http://${rows[k].app_hostname}:8080/`]);
      const urls = (v: AppView) => v.revisions.flatMap((r) => [r.tag_url, ...r.tag_urls]).filter((u) => u !== null);
      expect(urls(plain)).toEqual(urls(before[k]).map((u) => u.replace(/\/$/, ':8080/')));
      expect(urls(https)).toEqual(urls(before[k]).map((u) => u.replace(/^http:(.*)\/$/, 'https:$1:8443/')));
      await c.query('COMMIT');
    } finally {
      c.release();
    }
  });

  it('GET /api/apps lists every app of the user as GET /api/apps/:host shows each', async () => {
    // as the reconcile loop would store it (a new updated_at): the list and the single reads see one state
    await settlePending(t.cp.db);
    const r = await alice.get('/api/apps');
    expect(r.status).toBe(200);
    expect(r.body.apps.map((a: { app_hostname: string }) => a.app_hostname)).toEqual(HOSTS);
    for (const a of r.body.apps) {
      const one = await alice.get(`/api/apps/${a.app_hostname}`);
      expect(one.status).toBe(200);
      expect(one.body).toEqual(a);
    }
    const split = r.body.apps[1];
    expect(split.revisions.map((v: { revision: number; status: string; instances: number; ready_instances: number; traffic_percent: number; tag_urls: string[] }) =>
      [v.revision, v.status, v.instances, v.ready_instances, v.traffic_percent, v.tag_urls])).toEqual([
      [1, 'ready', 1, 1, 90, []],
      [2, 'build_failed', 0, 0, 0, []],
      [3, 'ready', 2, 2, 0, []],
      // scaling from zero it is routable as soon as it is ready: `latest` (and its tag) is this one
      [4, 'ready', 0, 0, 10, [`http://canary---${HOSTS[1]}/`, `http://next---${HOSTS[1]}/`]],
    ]);
    expect(r.body.apps[0].revisions[0]).toMatchObject({ instances: 3, ready_instances: 1 });
    expect(r.body.apps[4]).toMatchObject({ latest_image_id: null, traffic: [{ latest: true, percent: 100, revision: null }] });
    expect((await bob.get('/api/apps')).body.apps.map((a: { app_hostname: string }) => a.app_hostname)).toEqual(['zz-bob.localhost']);
    expect((await bob.get(`/api/apps/${HOSTS[0]}`)).status).toBe(404);
  });
});
