import { statSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Api } from '../helpers/api.js';
import { insertReadyImage, startTestControlPlane, type TestControlPlane } from '../helpers/control-plane.js';

/**
 * The metering and billing routes against a tenant and an anonymous client: what `/metrics`
 * shows and to whom, what an unauthenticated proxy route costs the server, how much history one
 * request may load, what ingest refuses, and what an invoice CSV may start a cell with.
 */
const PROXY_TOKEN = 'bpt_metering-security-token';
let t: TestControlPlane;
let anon: Api;
let alice: Api;
let aliceId: number;
let imageId: number;

beforeAll(async () => {
  t = await startTestControlPlane({ seedDefaultUser: false, proxyToken: PROXY_TOKEN, dockerHost: 'unix:///nonexistent/docker.sock', autoscale: { enabled: false } });
  anon = new Api(t.cp.url);
  alice = await anon.signup('alice-metering@example.com');
  aliceId = (await alice.get('/api/auth/me')).body.user.id;
  imageId = await insertReadyImage(t.cp, aliceId, 'secret-app.example.com');
});

afterAll(async () => {
  await t?.close();
});

describe('GET /metrics on the control plane', () => {
  it('needs the metrics token: anonymous, a user login and a wrong token are 401; health probes stay open', async () => {
    for (const token of [undefined, alice.token, PROXY_TOKEN, 'bmt_wrong']) {
      const r = await anon.req('GET', '/metrics', { token: token ?? null });
      expect(r.status, String(token)).toBe(401);
      expect(r.text).not.toContain('secret-app.example.com');
    }
    expect((await anon.get('/healthz')).status).toBe(200);
    expect((await anon.get('/readyz')).status).toBe(200);
    const ok = await anon.req('GET', '/metrics', { token: t.cp.metricsToken });
    expect(ok.status).toBe(200);
    expect(ok.text).toContain(`berth_cp_route_info{route="img-${imageId}",app_hostname="secret-app.example.com",image_id="${imageId}"} 1`);
  });

  it('the token is generated once into <data-dir>/metrics-token, mode 0600', () => {
    const file = join(t.cp.config.dataDir, 'metrics-token');
    expect(t.cp.metricsTokenFile).toBe(file);
    expect(readFileSync(file, 'utf8').trim()).toBe(t.cp.metricsToken);
    expect(statSync(file).mode & 0o777).toBe(0o600);
  });

  it('per-app gauges are collected at most once per 15 s, however often it is scraped', async () => {
    const scrape = async () => (await anon.req('GET', '/metrics', { token: t.cp.metricsToken })).text;
    await scrape();
    const later = await insertReadyImage(t.cp, aliceId, 'later-app.example.com');
    for (let i = 0; i < 5; i++) expect(await scrape()).not.toContain(`route="img-${later}"`);
  });
});
