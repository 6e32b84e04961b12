/**
 * The fallback cache must never hand one client what was personalised for another: nothing
 * answered to a request with Cookie or Authorization is kept, nor a response with Set-Cookie,
 * Cache-Control private/no-store/no-cache, or a Vary other than Accept-Encoding (which is then
 * part of the key).
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { rawHttp } from '../helpers/raw-http.js';
import { get, route, startProxy, startUpstream, table, type ProxyProc, type Upstream } from '../proxy/harness.js';

let up: Upstream;
let p: ProxyProc;
let down = false;
beforeAll(async () => {
  up = await startUpstream('app', (req, res) => {
    if (down) { res.writeHead(500); res.end('down'); return; }
    const url = req.url ?? '/';
    const h: Record<string, string> = { 'content-type': 'text/plain' };
    if (url === '/no-cache') h['cache-control'] = 'no-cache';
    if (url === '/vary-cookie') h.vary = 'Cookie';
    if (url === '/vary-star') h.vary = '*';
    if (url.startsWith('/vary-ae')) h.vary = 'Accept-Encoding';
    if (url === '/sw.js') h['service-worker-allowed'] = '/';
    const who = req.headers.cookie ? `secret page of ${req.headers.cookie}` : 'public page';
    const body = url.startsWith('/vary-ae') ? `encoded for ${req.headers['accept-encoding'] ?? 'identity'}` : who;
    res.writeHead(200, h);
    res.end(body);
  });
  // 5xx opens the breaker after one failure; the cache then answers for the route
  p = await startProxy(table([route('app', ['app.test'], [up.address], {
    circuitBreaker: { consecutiveFailures: 1, openMs: 60_000, failOn5xx: true },
    fallbackCache: { ttlMs: 60_000, maxEntries: 100 },
  })]));
});
afterAll(async () => {
  await p?.stop();
  await up?.close();
});

describe('fallback cache: what is never kept', () => {
  it('stores public pages, and never pages answered to a cookie, credentials, or forbidden by the response', async () => {
    // warm up: every path requested once the way a real client would
    expect((await get(p, 'app.test', '/public')).body).toBe('public page');
    expect((await get(p, 'app.test', '/mine', { headers: { cookie: 'session=alice' } })).body).toBe('secret page of session=alice');
    expect((await get(p, 'app.test', '/auth', { headers: { authorization: 'Bearer alice' } })).status).toBe(200);
    expect((await get(p, 'app.test', '/no-cache')).status).toBe(200);
    expect((await get(p, 'app.test', '/vary-cookie')).status).toBe(200);
    expect((await get(p, 'app.test', '/vary-star')).status).toBe(200);
    expect((await get(p, 'app.test', '/vary-ae', { headers: { 'accept-encoding': 'gzip' } })).body).toBe('encoded for gzip');
    // a repeated Accept-Encoding is not keyed: the answer is not kept
    const twice = await rawHttp(p.port, 'GET /vary-ae?twice HTTP/1.1\r\nHost: app.test\r\nAccept-Encoding: gzip\r\nAccept-Encoding:\r\n\r\n', 1500, 1);
    expect(twice.statuses).toEqual([200]);
    expect((await get(p, 'app.test', '/sw.js')).headers['service-worker-allowed']).toBe('/');
    await new Promise((r) => setTimeout(r, 50));

    down = true;
    expect((await get(p, 'app.test', '/x')).status).toBe(500); // opens the breaker
    const pub = await get(p, 'app.test', '/public');
    expect(pub.status).toBe(200);
    expect(pub.headers['x-berth-fallback']).toBe('hit');

    for (const path of ['/mine', '/auth', '/no-cache', '/vary-cookie', '/vary-star']) {
      const r = await get(p, 'app.test', path);
      expect(r.status, path).toBe(503);
      expect(r.body, path).not.toContain('secret');
    }
    // Vary: Accept-Encoding: served only to a client sending the same Accept-Encoding
    const gz = await get(p, 'app.test', '/vary-ae', { headers: { 'accept-encoding': 'gzip' } });
    expect(gz.status).toBe(200);
    expect(gz.body).toBe('encoded for gzip');
    expect(gz.headers.vary).toBe('Accept-Encoding');
    expect((await get(p, 'app.test', '/vary-ae')).status).toBe(503);
    expect((await get(p, 'app.test', '/vary-ae?twice')).status).toBe(503);
    expect((await get(p, 'app.test', '/vary-ae?twice', { headers: { 'accept-encoding': 'gzip' } })).status).toBe(503);
    expect((await get(p, 'app.test', '/vary-ae', { headers: { 'accept-encoding': 'br' } })).status).toBe(503);

    // a kept answer reached by /apps/{host}/ loses Service-Worker-Allowed as a live one does
    // (a service worker installed there must not control the proxy's whole origin)
    const own = await get(p, 'app.test', '/sw.js');
    expect([own.headers['x-berth-fallback'], own.headers['service-worker-allowed']]).toEqual(['hit', '/']);
    const via = await get(p, '127.0.0.1', '/apps/app.test/sw.js');
    expect(via.headers['x-berth-fallback']).toBe('hit');
    expect(via.body).toBe('public page');
    expect(via.headers['service-worker-allowed']).toBeUndefined();
  });
});
