/**
 * Migration 007 on a database that already has apps: each image becomes revision 1 of its own
 * app with all traffic on `latest`, ready ones routable, and the route table is unchanged in shape.
 */
import { afterAll, beforeAll, expect, it } from 'vitest';
import { createPool, type Db } from '../../control-plane/db/pool.js';
import { migrate } from '../../control-plane/db/migrate.js';
import { migrations } from '../../control-plane/db/migrations/index.js';
import { buildRoutes, makeTable } from '../../control-plane/discovery/route-table.js';
import { startTestPostgres, type TestPostgres } from '../helpers/postgres.js';

let pg: TestPostgres;
let db: Db;
beforeAll(async () => {
  pg = await startTestPostgres();
  db = createPool(await pg.createDatabase({ empty: true }), 2);
});
afterAll(async () => {
  await db?.end();
  await pg?.stop();
});

it('existing images become revision 1 of their app and keep serving', async () => {
  await migrate(db, migrations.filter((m) => m.version <= 6));
  const { rows: [u] } = await db.query(`INSERT INTO users (email, password_hash) VALUES ('old@example.com', 'x') RETURNING id`);
  await db.query(
    `INSERT INTO images (user_id, name, tag, app_hostname, status, docker_image, min_instances, max_instances, min_instances_provisioned)
     VALUES ($1, 'a', 'latest', 'a.example.com', 'ready', 'x:1', 1, 1, true), ($1, 'b', 'latest', 'b.example.com', 'building', 'y:1', 1, 1, false)`, [u.id]);
  expect(await migrate(db)).toContain(7);
  const { rows: apps } = await db.query('SELECT app_hostname, user_id, last_revision, traffic FROM apps ORDER BY 1');
  expect(apps).toEqual([
    { app_hostname: 'a.example.com', user_id: u.id, last_revision: 1, traffic: [{ latest: true, percent: 100 }] },
    { app_hostname: 'b.example.com', user_id: u.id, last_revision: 1, traffic: [{ latest: true, percent: 100 }] },
  ]);
  const { rows: imgs } = await db.query('SELECT app_hostname, revision, routable_at IS NOT NULL AS routable FROM images ORDER BY 1');
  expect(imgs).toEqual([{ app_hostname: 'a.example.com', revision: 1, routable: true }, { app_hostname: 'b.example.com', revision: 1, routable: false }]);
  // the ready app routes exactly as before: one route, its hostname, no trafficWeight
  const routes = await buildRoutes(db, '127.0.0.1');
  expect(routes.map((r) => ({ id: r.id, hosts: r.hosts, trafficWeight: r.trafficWeight }))).toEqual([{ id: expect.stringMatching(/^img-\d+$/), hosts: ['a.example.com'], trafficWeight: undefined }]);
});

it('a host claimed twice (a row the upload would refuse) never invalidates everyone\'s table', async () => {
  const { rows: [u] } = await db.query(`INSERT INTO users (email, password_hash) VALUES ('evil@example.com', 'x') RETURNING id`);
  const { rows: [a] } = await db.query(`SELECT id FROM images WHERE app_hostname = 'a.example.com'`);
  await db.query(`UPDATE apps SET traffic = $1::jsonb WHERE app_hostname = 'a.example.com'`, [JSON.stringify([{ image_id: Number(a.id), percent: 100, tag: 'canary' }])]);
  await db.query(`INSERT INTO apps (app_hostname, user_id, last_revision) VALUES ('canary---a.example.com', $1, 1)`, [u.id]);
  await db.query(
    `INSERT INTO images (user_id, name, tag, app_hostname, revision, status, docker_image, min_instances, max_instances, routable_at)
     VALUES ($1, 'e', 'latest', 'canary---a.example.com', 1, 'ready', 'z:1', 1, 1, now())`, [u.id]);
  const routes = await buildRoutes(db, '127.0.0.1');
  const table = makeTable(1, routes);
  expect(table.routes.flatMap((r) => r.hosts).sort()).toEqual(['a.example.com', 'canary---a.example.com']);
});

it('a proxy that predates splits gets each shared host on its largest share, and no trafficWeight', async () => {
  const { withoutSplits } = await import('../../control-plane/discovery/route-table.js');
  const t = makeTable(7, [
    { id: 'img-1', hosts: ['s.example.com'], endpoints: [], trafficWeight: 90 },
    { id: 'img-2', hosts: ['s.example.com', 'canary---s.example.com'], endpoints: [], trafficWeight: 10 },
    { id: 'img-3', hosts: ['o.example.com'], endpoints: [] },
  ]);
  const old = withoutSplits(t);
  expect(old.routes.map((r) => ({ id: r.id, hosts: r.hosts, w: r.trafficWeight }))).toEqual([
    { id: 'img-1', hosts: ['s.example.com'], w: undefined },
    { id: 'img-2', hosts: ['canary---s.example.com'], w: undefined },
    { id: 'img-3', hosts: ['o.example.com'], w: undefined },
  ]);
  // and it is a table the old validation (one route per host) accepts
  expect(() => makeTable(7, JSON.parse(JSON.stringify(old.routes)))).not.toThrow();
  expect(withoutSplits(t)).toBe(old); // computed once per table
  // a route that splits nothing is passed on as it is (its JSON is made once: route-events.ts)
  expect(old.routes[2]).toBe(t.routes[2]);
  // an even split goes to the lower id, whatever order the table lists them in
  for (const order of [[0, 1], [1, 0]]) {
    const even = [{ id: 'img-4', hosts: ['e.example.com'], endpoints: [], trafficWeight: 50 }, { id: 'img-5', hosts: ['e.example.com'], endpoints: [], trafficWeight: 50 }];
    const got = withoutSplits(makeTable(8, order.map((i) => even[i])));
    expect(got.routes.map((r) => r.id)).toEqual(['img-4']);
  }
});
