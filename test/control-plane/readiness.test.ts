/**
 * `/readyz` is open to anyone: when the database is away it says so without the driver's
 * message (which names the database host, port and user). `/metrics` takes any of the listed
 * metrics tokens (BERTH_METRICS_TOKEN="new,old", for rotation), and nothing else.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startTestControlPlane, type TestControlPlane } from '../helpers/control-plane.js';

let t: TestControlPlane;

beforeAll(async () => {
  t = await startTestControlPlane({ seedDefaultUser: false, metricsToken: 'bmt_new-0123456789,bmt_old-0123456789', dockerHost: 'unix:///nonexistent/docker.sock' }, { ownPostgres: true });
});
afterAll(async () => {
  // (its database was stopped by a test: closing the control plane may fail, the data dir still goes)
  await t?.close().catch(() => {});
});

const get = (path: string, token?: string) => fetch(`${t.cp.url}${path}`, { headers: token ? { authorization: `Bearer ${token}` } : {} });

describe('readiness and metrics tokens', () => {
  it('/metrics takes each listed token, not the list or another', async () => {
    for (const tok of ['bmt_new-0123456789', 'bmt_old-0123456789']) expect((await get('/metrics', tok)).status, tok).toBe(200);
    for (const tok of ['bmt_new-0123456789,bmt_old-0123456789', 'bmt_new', undefined]) expect((await get('/metrics', tok)).status).toBe(401);
  });

  it('/readyz: ready, then 503 "unreachable" without the driver\'s details when the database goes away', async () => {
    const ok = await get('/readyz');
    expect(ok.status).toBe(200);
    expect(await ok.json()).toEqual({ status: 'ready', checks: { database: 'ok' } });
    const port = new URL(t.pg.url).port;
    await t.pg.stop();
    const down = await get('/readyz');
    expect(down.status).toBe(503);
    const text = await down.text();
    expect(JSON.parse(text)).toEqual({ status: 'not_ready', checks: { database: 'unreachable' } });
    expect(text).not.toContain(port);
    expect(text).not.toMatch(/ECONNREFUSED|127\.0\.0\.1|postgres/i);
  }, 30_000);
});
