import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { pino } from 'pino';
import { RouteHub } from '../../control-plane/discovery/hub.js';
import { createPool, type Db } from '../../control-plane/db/pool.js';
import { Api } from '../helpers/api.js';
import { insertReadyImage, startTestControlPlane, type TestControlPlane } from '../helpers/control-plane.js';
import { Relay } from '../helpers/relay.js';

/**
 * The route hub's database goes away (Postgres restarting, a failover, a network cut) and comes
 * back: what changed meanwhile — nobody was listening for it — is read when listening starts
 * again, and notifications are heard again after. The hub here reaches Postgres through a relay
 * that can be cut; the changes are made on another connection, as another control plane would.
 * Its poll is an hour apart, so only the listener brings anything in.
 */
let t: TestControlPlane;
let relay: Relay;
let pool: Db;
let hub: RouteHub;
let userId: number;

const route = (id: number) => hub.table?.routes.find((r) => r.id === `img-${id}`);

async function until(what: string, cond: () => boolean, ms = 15_000): Promise<void> {
  const t0 = Date.now();
  while (!cond() && Date.now() - t0 < ms) await new Promise((r) => setTimeout(r, 20));
  expect(cond(), what).toBe(true);
}

beforeAll(async () => {
  t = await startTestControlPlane({ seedDefaultUser: false, dockerHost: 'unix:///nonexistent/docker.sock', health: { intervalMs: 3_600_000 } });
  const api = await new Api(t.cp.url).signup('hub-relay@example.com');
  userId = (await api.get('/api/auth/me')).body.user.id;
  const url = new URL(t.cp.db.options.connectionString!);
  relay = new Relay(Number(url.port));
  await relay.open();
  url.port = String(relay.port);
  pool = createPool(url.toString(), 4);
  pool.on('error', () => {});
  hub = new RouteHub(pool, t.cp.app.config.endpointHost, pino({ level: 'silent' }), 5, 3_600_000, undefined, url.toString());
  await hub.start();
});

afterAll(async () => {
  hub?.stop();
  await relay?.cut();
  await pool?.end().catch(() => {});
  await t?.close();
});

describe('the route hub when its database goes away and comes back', () => {
  it('reads what changed meanwhile once it listens again, and hears changes after', async () => {
    const a = await insertReadyImage(t.cp, userId, 'hub-relay-a.example.com');
    await until('listening', () => hub.listening);
    await until('a is in the table', () => route(a) !== undefined);
    expect(route(a)!.endpoints).toHaveLength(0);

    await relay.cut();
    await until('no longer listening', () => !hub.listening);
    // meanwhile, on another connection: a's instance is up, and an app b comes
    await t.cp.db.query(`INSERT INTO containers (user_id, image_id, name, status, health, internal_port, desired, host_port)
                         VALUES ($1, $2, 'hub-relay-ca', 'running', 'healthy', 8080, 'running', 41401)`, [userId, a]);
    const b = await insertReadyImage(t.cp, userId, 'hub-relay-b.example.com');
    await new Promise((r) => setTimeout(r, 300));
    expect(route(a)!.endpoints).toHaveLength(0);
    expect(route(b)).toBeUndefined();

    await relay.open();
    await until('listening again', () => hub.listening);
    await until('a has its endpoint, b is there', () => route(a)?.endpoints.length === 1 && route(b) !== undefined);

    // heard again: a change now arrives in moments (the poll is an hour away)
    const t0 = Date.now();
    await t.cp.db.query(`INSERT INTO containers (user_id, image_id, name, status, health, internal_port, desired, host_port)
                         VALUES ($1, $2, 'hub-relay-cb', 'running', 'healthy', 8080, 'running', 41402)`, [userId, b]);
    await until('b has its endpoint', () => route(b)?.endpoints.length === 1, 5000);
    expect(Date.now() - t0).toBeLessThan(5000);
  }, 60_000);
});
