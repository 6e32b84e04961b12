/**
 * HEAD requests the proxy answers itself. In the uWS build berth ships, a HEAD answer written
 * with `endWithoutBody(undefined, …)` or `endWithoutBody(n > 0)` inside a request handler does not
 * count as an answer, and uWS then aborts the whole process: one `curl -I` to an unknown host
 * took every tenant down. Every proxy-made answer to HEAD is checked here, each followed by a
 * check that the proxy still serves.
 */
import { connect } from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { request } from 'undici';
import { get, route, startProxy, startUpstream, table, type ProxyProc, type Upstream } from './harness.js';

let up: Upstream;
let slow: Upstream;
let p: ProxyProc;

beforeAll(async () => {
  up = await startUpstream('ok');
  slow = await startUpstream('slow', (_req, res) => { setTimeout(() => res.end('late'), 1500); });
  p = await startProxy(table([
    route('ok', ['ok.test'], [up.address]),
    route('down', ['down.test'], ['127.0.0.1:1'], { retry: { attempts: 0 }, circuitBreaker: { consecutiveFailures: 1, openMs: 60_000 } }),
    route('slow', ['slow.test'], [slow.address], { timeouts: { headersMs: 200 } }),
    route('fb', ['fb.test'], [up.address], { circuitBreaker: { consecutiveFailures: 1, openMs: 60_000 }, fallbackCache: { ttlMs: 60_000 } }),
  ]));
});
afterAll(async () => {
  await p?.stop();
  await up?.close();
  await slow?.close();
});

const alive = async () => {
  expect(p.proc.exitCode).toBeNull();
  expect((await get(p, 'ok.test', '/')).status).toBe(200);
};

/** HEAD over a raw socket, so no client library hides what comes back. */
function rawHead(host: string, path = '/'): Promise<string> {
  return new Promise((resolve, reject) => {
    const s = connect(p.port, '127.0.0.1', () => s.write(`HEAD ${path} HTTP/1.1\r\nHost: ${host}\r\n\r\n`));
    let got = '';
    s.on('data', (c) => {
      got += c.toString('latin1');
      if (got.includes('\r\n\r\n')) { s.destroy(); resolve(got); }
    });
    s.on('error', reject);
    s.on('close', () => resolve(got));
    s.setTimeout(5000, () => { s.destroy(); resolve(got); });
  });
}

describe('HEAD answered by the proxy itself', () => {
  it('404 no_route, 400 bad_host: answered, no body, and the proxy lives', async () => {
    const r = await request(`${p.url}/`, { method: 'HEAD', headers: { host: 'nobody.test' } });
    expect(r.statusCode).toBe(404);
    expect(r.headers['x-berth-error']).toBe('no_route');
    expect(await r.body.text()).toBe('');
    await alive();
    expect(await rawHead('bad host')).toMatch(/^HTTP\/1\.1 400 /);
    await alive();
    for (let i = 0; i < 20; i++) expect(await rawHead('nobody.test')).toMatch(/^HTTP\/1\.1 404 /);
    await alive();
  });

  it('502 (connect refused), then the open breaker answering at once, 504 (headers timeout)', async () => {
    expect((await get(p, 'down.test', '/', { method: 'HEAD' })).status).toBe(502);
    await alive();
    expect((await get(p, 'down.test', '/', { method: 'HEAD' })).status).toBe(503);
    await alive();
    expect((await get(p, 'slow.test', '/', { method: 'HEAD' })).status).toBe(504);
    await alive();
  });

  it('a HEAD served from the fallback cache while the breaker is open', async () => {
    expect((await get(p, 'fb.test', '/page')).status).toBe(200);
    await up.close();
    try {
      await get(p, 'fb.test', '/page').catch(() => undefined); // trips the breaker
      const h = await get(p, 'fb.test', '/page', { method: 'HEAD' });
      expect([200, 502, 503]).toContain(h.status);
      expect(h.body).toBe('');
      expect(p.proc.exitCode).toBeNull();
    } finally {
      up = await startUpstream('ok', undefined, up.port);
    }
    await alive();
  });

  it('503 not_ready before any table', async () => {
    const fresh = await startProxy(null, ['--control-plane', 'http://127.0.0.1:9', '--token', 'x']);
    try {
      const r = await request(`${fresh.url}/`, { method: 'HEAD', headers: { host: 'ok.test' } });
      expect(r.statusCode).toBe(503);
      expect(r.headers['x-berth-error']).toBe('not_ready');
      await r.body.dump();
      expect(fresh.proc.exitCode).toBeNull();
      const again = await request(`${fresh.url}/`, { headers: { host: 'ok.test' } });
      expect(again.statusCode).toBe(503);
      await again.body.dump();
    } finally {
      await fresh.stop();
    }
  });
});
