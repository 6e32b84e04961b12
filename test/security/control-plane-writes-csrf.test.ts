import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Api } from '../helpers/api.js';
import { insertReadyImage, startTestControlPlane, type TestControlPlane } from '../helpers/control-plane.js';

/**
 * The state changes added with revisions and workloads are cookie-authenticated like every other:
 * carried by the session cookie from a page on another origin they are 403 `csrf_rejected` and
 * change nothing (the check is central, in authenticate; this pins it for these routes).
 */
let t: TestControlPlane;
let api: Api;
let cookie = '';
const HOST = 'csrf-app.example.com';

beforeAll(async () => {
  t = await startTestControlPlane({ seedDefaultUser: false, dockerHost: 'unix:///nonexistent/docker.sock' });
  api = await new Api(t.cp.url).signup('csrf-writes@example.com', 'csrf-writes-password');
  const userId = (await api.get('/api/auth/me')).body.user.id as number;
  await insertReadyImage(t.cp, userId, HOST);
  const r = await api.req('POST', '/api/auth/login', { json: { email: 'csrf-writes@example.com', password: 'csrf-writes-password' }, token: null });
  cookie = (r.headers.get('set-cookie') ?? '').split(';')[0];
  expect(cookie).toMatch(/^berth_session=/);
}, 60_000);

afterAll(async () => {
  await t?.close();
});

describe('new cookie-authenticated writes refuse a foreign origin', () => {
  const writes: Array<[string, string, unknown]> = [
    ['PUT', `/api/apps/${HOST}/traffic`, { traffic: [{ latest: true, percent: 100 }] }],
    ['POST', `/api/apps/${HOST}/revisions`, { env: { A: '1' } }],
    ['PATCH', `/api/apps/${HOST}`, { private: true }],
    ['POST', `/api/apps/${HOST}/invokers`, { name: 'evil' }],
    ['DELETE', `/api/apps/${HOST}/invokers/1`, undefined],
    ['DELETE', `/api/apps/${HOST}`, undefined],
    ['POST', '/api/workloads', { app_hostname: HOST, rps: 10, duration_seconds: 1 }],
    ['POST', '/workload/start', { app_hostname: HOST, rps: 10, duration_seconds: 1 }],
  ];
  for (const [method, path, json] of writes) {
    it(`${method} ${path}`, async () => {
      const r = await api.req(method, path, { json, headers: { cookie, origin: 'http://evil.example.net' }, token: null });
      expect(r.status, JSON.stringify(r.body)).toBe(403);
      expect(r.body.error.code).toBe('csrf_rejected');
    });
  }

  it('nothing changed: the app is still there, and no workload was started', async () => {
    const app = await api.get(`/api/apps/${HOST}`);
    expect(app.status).toBe(200);
    expect(app.body.private).toBe(false);
    expect((await api.get(`/api/apps/${HOST}/invokers`)).body.invokers).toEqual([]);
    const w = await api.get('/api/workloads');
    expect(w.status).toBe(200);
    expect(JSON.stringify(w.body)).not.toContain(HOST);
  });
});
