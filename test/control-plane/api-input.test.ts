/**
 * The API reads JSON bodies as sent (no coercion: `null`, `0` or `"false"` is not `false`) and
 * routes hostnames as long as an app may have (up to 253 characters).
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Api } from '../helpers/api.js';
import { makeTar } from '../helpers/archives.js';
import { insertReadyImage, startTestControlPlane, type TestControlPlane } from '../helpers/control-plane.js';

let t: TestControlPlane;
let alice: Api;
const LONG = `${'a'.repeat(60)}.${'b'.repeat(60)}.example.com`; // 133 characters

beforeAll(async () => {
  t = await startTestControlPlane({ seedDefaultUser: false, dockerHost: 'unix:///nonexistent/docker.sock', autoscale: { enabled: false }, reservedHostnames: ['berth.example.com'] });
  alice = await new Api(t.cp.url).signup('alice-input@example.com');
  const userId = Number((await alice.get('/api/auth/me')).body.user.id);
  await insertReadyImage(t.cp, userId, LONG);
}, 60_000);
afterAll(async () => { await t?.close(); });

describe('API input', () => {
  it('an app whose hostname is longer than 100 characters is found by every /api/apps/:host route', async () => {
    const r = await alice.get(`/api/apps/${LONG}`);
    expect(r.status, r.text).toBe(200);
    expect(r.body.app_hostname).toBe(LONG);
    expect((await alice.get(`/api/apps/${LONG}/invokers`)).status).toBe(200);
  });

  it('a JSON body is not coerced: null, 0 or "false" for a boolean is a 400, not false', async () => {
    expect((await alice.req('PATCH', `/api/apps/${LONG}`, { json: { private: true } })).status).toBe(200);
    for (const v of [null, 0, 'false', '']) {
      const r = await alice.req('PATCH', `/api/apps/${LONG}`, { json: { private: v } });
      expect(r.status, JSON.stringify(v)).toBe(400);
    }
    // still private: none of them flipped it
    expect((await alice.get(`/api/apps/${LONG}`)).body.private).toBe(true);
    // a query string is text, and still read as its type
    expect((await alice.get('/api/events?limit=5')).status).toBe(200);
  });

  it('a NUL character in text is a 400 that says so, in a body or a path', async () => {
    for (const r of [
      await alice.req('POST', '/api/auth/login', { json: { email: 'a\u0000b@example.com', password: 'whatever-whatever' } }),
      await alice.get('/api/apps/a%00b.example.com'),
    ]) {
      expect(r.status, r.text).toBe(400);
      expect(r.body.error.message).toMatch(/NUL/);
    }
  });

  it('no app takes one of the platform\'s own names (the proxy\'s --apps-path-hosts)', async () => {
    const archive = await makeTar([{ name: 'Dockerfile', content: 'FROM scratch\n' }]);
    for (const name of ['berth.example.com', 'BERTH.example.com.']) {
      const r = await alice.upload({ name: 'x', app_hostname: name }, archive);
      expect(r.status, r.text).toBe(409);
      expect(r.body.error.code).toBe('hostname_reserved');
    }
  });
});
