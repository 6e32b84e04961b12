import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Api } from '../helpers/api.js';
import { startTestControlPlane, type TestControlPlane } from '../helpers/control-plane.js';

/**
 * POST /api/auth/logout is a cookie-authenticated state change like any other: carried by the
 * session cookie alone it must come from the API's own origin (403 `csrf_rejected` otherwise),
 * or a page on another site — or an app berth hosts on a sibling subdomain — could log the user out.
 */
let t: TestControlPlane;
let api: Api;
const EMAIL = 'logout-csrf@example.com';
const PASSWORD = 'logout-csrf-password';

beforeAll(async () => {
  t = await startTestControlPlane({ seedDefaultUser: false, dockerHost: 'unix:///nonexistent/docker.sock' });
  api = new Api(t.cp.url);
  await api.signup(EMAIL, PASSWORD);
});

afterAll(async () => {
  await t?.close();
});

async function login(): Promise<{ cookie: string; token: string }> {
  const r = await api.req('POST', '/api/auth/login', { json: { email: EMAIL, password: PASSWORD }, token: null });
  expect(r.status).toBe(200);
  const cookie = (r.headers.get('set-cookie') ?? '').split(';')[0];
  expect(cookie).toMatch(/^berth_session=/);
  return { cookie, token: r.body.token };
}

const logout = (headers: Record<string, string>) => api.req('POST', '/api/auth/logout', { headers, token: null });
const me = (cookie: string) => api.req('GET', '/api/auth/me', { headers: { cookie }, token: null });

describe('logout needs the same origin when authenticated by the cookie', () => {
  it('a foreign Origin or a cross-site / same-site Sec-Fetch-Site is 403 and the session survives', async () => {
    const { cookie } = await login();
    const foreign: Record<string, string>[] = [
      { origin: 'http://evil.example.net' },
      { origin: 'http://evil.apps.example.com' },
      { origin: 'null' },
      { 'sec-fetch-site': 'cross-site' },
      { 'sec-fetch-site': 'same-site', origin: 'http://sibling.localhost' },
    ];
    for (const h of foreign) {
      const r = await logout({ cookie, ...h });
      expect(r.status, JSON.stringify(h)).toBe(403);
      expect(r.body).toEqual({ error: { code: 'csrf_rejected', message: expect.any(String), requestId: expect.any(String) } });
      expect(r.headers.get('set-cookie'), 'the cookie is not cleared').toBeNull();
      expect((await me(cookie)).status, 'still logged in').toBe(200);
    }
  });

  it('same origin (Origin header) logs out', async () => {
    const { cookie } = await login();
    const r = await logout({ cookie, origin: t.cp.url });
    expect(r.status).toBe(204);
    expect(r.headers.get('set-cookie')).toMatch(/^berth_session=;/);
    expect((await me(cookie)).status).toBe(401);
  });

  it('same origin (Sec-Fetch-Site) and a non-browser client (no Origin) log out', async () => {
    const a = await login();
    expect((await logout({ cookie: a.cookie, 'sec-fetch-site': 'same-origin' })).status).toBe(204);
    expect((await me(a.cookie)).status).toBe(401);
    const b = await login();
    expect((await logout({ cookie: b.cookie })).status).toBe(204);
    expect((await me(b.cookie)).status).toBe(401);
  });

  it('a Bearer session token logs out whatever the Origin (a page cannot attach it cross-site)', async () => {
    const { token } = await login();
    const r = await logout({ authorization: `Bearer ${token}`, origin: 'http://evil.example.net' });
    expect(r.status).toBe(204);
    expect((await api.withToken(token).get('/api/auth/me')).status).toBe(401);
  });

  it('without any credential, logout stays a harmless 204', async () => {
    expect((await logout({ origin: 'http://evil.example.net' })).status).toBe(204);
  });
});
