/**
 * Private routes (RouteSpec.auth, Cloud Run's --no-allow-unauthenticated): only requests with one
 * of the route's tokens reach the app — by X-Berth-Authorization or Authorization, `Bearer` — and
 * the header that carried it is not forwarded; everything else is a 401 the app never sees,
 * WebSocket upgrades included.
 */
import { createHash } from 'node:crypto';
import { connect } from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { bearerDigest } from '../../proxy/server/admission.js';
import { get, putRoutes, route, startProxy, startUpstream, table, type ProxyProc, type Upstream } from './harness.js';

const sha = (t: string) => createHash('sha256').update(t).digest('hex');
let up: Upstream;
let p: ProxyProc;

beforeAll(async () => {
  up = await startUpstream('app');
  p = await startProxy(table([
    route('priv', ['private.test'], [up.address], { auth: { tokens: [sha('tok-one'), sha('tok-two')] } }),
    route('nobody', ['nobody.test'], [up.address], { auth: { tokens: [] } }),
    route('pub', ['public.test'], [up.address]),
  ]));
});
afterAll(async () => {
  await p?.stop();
  await up?.close();
});

const seen = (body: string) => JSON.parse(body).headers as Record<string, string>;

describe('private routes', () => {
  it('refuse requests without a valid token with 401, before the app', async () => {
    const hits = up.hits;
    for (const headers of [{} as Record<string, string>, { authorization: 'Bearer nope' }, { authorization: 'Basic dG9rLW9uZTo=' }, { authorization: 'Bearer ' },
      { authorization: 'tok-one' }, { authorization: `Bearer ${'x'.repeat(10_000)}` }, { 'x-berth-authorization': 'Bearer nope', authorization: 'Bearer tok-one' }]) {
      const r = await get(p, 'private.test', '/', { headers });
      expect(r.status, JSON.stringify(headers).slice(0, 80)).toBe(401);
      expect(r.headers['x-berth-error']).toBe('unauthorized');
      expect(r.headers['www-authenticate']).toBe('Bearer realm="berth"');
    }
    expect((await get(p, 'private.test', '/', { method: 'HEAD' })).status).toBe(401);
    expect((await get(p, 'private.test', '/apps/private.test/x')).status).toBe(401);
    expect((await get(p, 'nobody.test', '/', { headers: { authorization: 'Bearer tok-one' } })).status).toBe(401);
    expect(up.hits).toBe(hits);
  });

  it('let a token through, without the header that carried it', async () => {
    const a = await get(p, 'private.test', '/', { headers: { authorization: 'bearer tok-one' } });
    expect(a.status).toBe(200);
    expect(seen(a.body).authorization).toBeUndefined();
    // the app keeps Authorization for its own use when the token comes in X-Berth-Authorization
    const b = await get(p, 'private.test', '/', { headers: { 'x-berth-authorization': 'Bearer tok-two', authorization: 'Basic YXBwOnVzZXI=' } });
    expect(b.status).toBe(200);
    expect(seen(b.body).authorization).toBe('Basic YXBwOnVzZXI=');
    expect(seen(b.body)['x-berth-authorization']).toBeUndefined();
    expect((await get(p, 'private.test', '/apps/private.test/x', { headers: { authorization: 'Bearer tok-two' } })).status).toBe(200);
  });

  it('a public route forwards Authorization and never X-Berth-Authorization', async () => {
    const r = await get(p, 'public.test', '/', { headers: { authorization: 'Bearer tok-one', 'x-berth-authorization': 'Bearer tok-one' } });
    expect(r.status).toBe(200);
    expect(seen(r.body).authorization).toBe('Bearer tok-one');
    expect(seen(r.body)['x-berth-authorization']).toBeUndefined();
  });

  it('a WebSocket upgrade without a token is a 401', async () => {
    const answer = await new Promise<string>((resolve) => {
      const s = connect(p.port, '127.0.0.1', () => s.write('GET / HTTP/1.1\r\nHost: private.test\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n' +
        'Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n'));
      let got = '';
      s.on('data', (d) => { got += d; if (got.includes('\r\n\r\n')) { s.destroy(); resolve(got); } });
      s.on('error', () => resolve(got));
      s.setTimeout(3000, () => { s.destroy(); resolve(got); });
    });
    expect(answer).toMatch(/^HTTP\/1\.1 401 /);
  });

  it('a request held while its token is revoked is refused when released, not forwarded', async () => {
    const slow = await startUpstream('slow', (req, res) => { setTimeout(() => { res.writeHead(200); res.end('done'); }, 1500); });
    const q = await startProxy(table([route('held', ['held.test'], [slow.address], { auth: { tokens: [sha('tok-a'), sha('tok-b')] }, concurrency: { perEndpoint: 1 } })]));
    try {
      const first = get(q, 'held.test', '/', { headers: { authorization: 'Bearer tok-a' } });
      await new Promise((r) => setTimeout(r, 150));
      const held = get(q, 'held.test', '/', { headers: { authorization: 'Bearer tok-b' } }); // waits for the slot
      const kept = get(q, 'held.test', '/', { headers: { authorization: 'Bearer tok-a' } });
      await new Promise((r) => setTimeout(r, 150));
      // tok-b revoked while its request waits
      expect((await putRoutes(q, table([route('held', ['held.test'], [slow.address], { auth: { tokens: [sha('tok-a')] }, concurrency: { perEndpoint: 1 } })], 2))).status).toBe(200);
      expect((await first).status).toBe(200);
      const h = await held;
      expect(h.status).toBe(401);
      expect(h.headers['x-berth-error']).toBe('unauthorized');
      expect((await kept).status).toBe(200);
      expect(slow.hits).toBe(2);
    } finally {
      await q.stop();
      await slow.close();
    }
  });

  it('a route table with a malformed auth or affinity is refused whole, naming the field; the one in use stays', async () => {
    for (const extra of [{ auth: { tokens: ['not-hex'] } }, { auth: { tokens: [sha('x').toUpperCase()] } }, { auth: {} }, { auth: { tokens: [], more: 1 } }, { affinity: 'yes' }]) {
      const r = await putRoutes(p, table([route('priv', ['private.test'], [up.address], extra)], 99));
      expect(r.status, JSON.stringify(extra)).toBe(400);
      expect(r.body).toMatch(/routes\.0\.(auth|affinity)/);
    }
    expect((await get(p, 'private.test', '/')).status).toBe(401);
    expect((await get(p, 'private.test', '/', { headers: { authorization: 'Bearer tok-one' } })).status).toBe(200);
  });

  it('reads only Bearer tokens', () => {
    expect(bearerDigest('Bearer abc')).toBe(sha('abc'));
    expect(bearerDigest('BEARER  abc ')).toBe(sha('abc'));
    for (const v of ['', 'Bearer', 'Bearer ', 'Basic abc', 'Bearerabc', `Bearer ${'a'.repeat(513)}`]) expect(bearerDigest(v), v.slice(0, 20)).toBe('');
  });
});
