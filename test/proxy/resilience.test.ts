import { afterAll, afterEach, describe, expect, it } from 'vitest';
import { get, putRoutes, route, startProxy, startUpstream, table, waitFor, type ProxyProc, type Upstream } from './harness.js';
import { request } from 'undici';

const cleanup: Array<() => Promise<unknown>> = [];
afterEach(async () => {
  while (cleanup.length) await cleanup.pop()!().catch(() => {});
});
let shared: ProxyProc | null = null;
afterAll(async () => { await shared?.stop(); });

async function setup(routes: object[]): Promise<ProxyProc> {
  if (!shared) shared = await startProxy(table([]));
  const r = await putRoutes(shared, table(routes, Date.now()));
  expect(r.status).toBe(200);
  return shared;
}
async function up(name: string, h?: Parameters<typeof startUpstream>[1]): Promise<Upstream> {
  const u = await startUpstream(name, h);
  cleanup.push(() => u.close());
  return u;
}
async function stats(p: ProxyProc): Promise<{ endpoints: Array<{ address: string; state: string; failures: number }>; routes: Array<{ id: string; retries: number; fallbackHits: number }> }> {
  const r = await request(`${p.admin}/stats`);
  return (await r.body.json()) as never;
}

describe('dead endpoints', () => {
  it('a killed upstream costs no failed requests: connect failures are retried elsewhere, the breaker opens', async () => {
    const a = await up('a');
    const b = await up('b');
    const p = await setup([route('kill', ['kill.test'], [a.address, b.address], { circuitBreaker: { consecutiveFailures: 2, openMs: 60_000 } })]);
    for (let i = 0; i < 4; i++) expect((await get(p, 'kill.test')).status).toBe(200);
    await b.close();
    const names: string[] = [];
    for (let i = 0; i < 20; i++) {
      const r = await get(p, 'kill.test');
      expect(r.status).toBe(200);
      names.push(JSON.parse(r.body).name);
    }
    expect(names.every((n) => n === 'a')).toBe(true);
    const s = await stats(p);
    const eb = s.endpoints.find((e) => e.address === b.address)!;
    expect(eb.state).toBe('open');
    expect(eb.failures).toBe(2); // the threshold, then skipped
    expect(s.routes.find((r) => r.id === 'kill')!.retries).toBe(2);
  });

  it('after openMs one probe goes through and a recovered endpoint closes the breaker', async () => {
    const a = await up('a');
    const port = (await up('tmp')).port; // reserve a port, then free it
    await cleanup.pop()!();
    const p = await setup([route('probe', ['probe.test'], [a.address, `127.0.0.1:${port}`], { circuitBreaker: { consecutiveFailures: 1, openMs: 300 } })]);
    for (let i = 0; i < 3; i++) expect((await get(p, 'probe.test')).status).toBe(200);
    expect((await stats(p)).endpoints.find((e) => e.address.endsWith(`:${port}`))!.state).toBe('open');
    const revived = await startUpstream('revived', undefined, port);
    cleanup.push(() => revived.close());
    await new Promise((r) => setTimeout(r, 350));
    const seen = new Set<string>();
    for (let i = 0; i < 6; i++) seen.add(JSON.parse((await get(p, 'probe.test')).body).name);
    expect(seen.has('revived')).toBe(true);
    expect((await stats(p)).endpoints.find((e) => e.address.endsWith(`:${port}`))!.state).toBe('closed');
  });

  it('no available endpoint → 503 with x-berth-error', async () => {
    const p = await setup([route('none', ['none.test'], ['127.0.0.1:1'], { circuitBreaker: { consecutiveFailures: 1, openMs: 60_000 }, retry: { attempts: 0 } })]);
    const first = await get(p, 'none.test');
    expect(first.status).toBe(502);
    expect(first.headers['x-berth-error']).toBe('upstream_connect_failed');
    const r = await get(p, 'none.test');
    expect(r.status).toBe(503);
    expect(r.headers['x-berth-error']).toBe('no_available_endpoint');
    expect(r.headers['x-request-id']).toBeTruthy();
    const empty = await setup([route('empty', ['empty.test'], [])]);
    expect((await get(empty, 'empty.test')).status).toBe(503);
  });
});

describe('timeouts and failures', () => {
  it('a slow upstream answers 504 after headersMs', async () => {
    const slow = await up('slow', (_q, res) => { setTimeout(() => { if (!res.destroyed) res.end('late'); }, 3000); });
    const p = await setup([route('slow', ['slow.test'], [slow.address], { timeouts: { headersMs: 300 } })]);
    const t0 = Date.now();
    const r = await get(p, 'slow.test');
    expect(r.status).toBe(504);
    expect(r.headers['x-berth-error']).toBe('upstream_timeout');
    expect(Date.now() - t0).toBeLessThan(2500);
  });

  it('a reset connection answers 502', async () => {
    const rst = await up('rst', (req) => { req.socket.resetAndDestroy(); });
    const p = await setup([route('rst', ['rst.test'], [rst.address], { retry: { attempts: 0 } })]);
    const r = await get(p, 'rst.test', '/', { method: 'POST', body: 'x' });
    expect(r.status).toBe(502);
    expect(r.headers['x-berth-error']).toBe('upstream_error');
  });

  it('an upstream that stalls mid-body is cut after idleMs (client sees a truncated response, not a hang)', async () => {
    const stall = await up('stall', (_q, res) => { res.writeHead(200, { 'content-length': '100' }); res.write('x'.repeat(10)); });
    const p = await setup([route('stall', ['stall.test'], [stall.address], { timeouts: { idleMs: 300 } })]);
    const t0 = Date.now();
    const err = await get(p, 'stall.test').then(() => null, (e: Error) => e);
    expect(err).not.toBeNull();
    expect(Date.now() - t0).toBeLessThan(3000);
  });

  it('5xx opens the breaker only when the route says so', async () => {
    const bad = await up('bad', (_q, res) => { res.writeHead(500); res.end('boom'); });
    const good = await up('good');
    const p = await setup([route('fiveh', ['fiveh.test'], [bad.address, good.address], { circuitBreaker: { consecutiveFailures: 2, openMs: 60_000, failOn5xx: true } })]);
    const statuses: number[] = [];
    for (let i = 0; i < 10; i++) statuses.push((await get(p, 'fiveh.test')).status);
    expect(statuses.filter((s) => s === 500)).toHaveLength(2);
    expect((await stats(p)).endpoints.find((e) => e.address === bad.address)!.state).toBe('open');
  });
});

describe('fallback cache', () => {
  it('serves the last good GET response when no endpoint can answer, marked with a header', async () => {
    let n = 0;
    const a = await up('fb', (req, res) => {
      n++;
      if (req.url === '/cookie') { res.setHeader('set-cookie', 'a=1'); return res.end('c'); }
      if (req.url === '/private') { res.setHeader('cache-control', 'private'); return res.end('p'); }
      res.setHeader('content-type', 'text/plain');
      res.end(`page ${req.url}`);
    });
    const p = await setup([route('fb', ['fb.test'], [a.address], { circuitBreaker: { consecutiveFailures: 1, openMs: 60_000 }, fallbackCache: { ttlMs: 60_000 } })]);
    expect((await get(p, 'fb.test', '/page?x=1')).body).toBe('page /page?x=1');
    await get(p, 'fb.test', '/cookie');
    await get(p, 'fb.test', '/private');
    await get(p, 'fb.test', '/auth', { headers: { authorization: 'Bearer x' } });
    expect(n).toBe(4);
    await a.close();
    const r = await get(p, 'fb.test', '/page?x=1');
    expect(r.status).toBe(200);
    expect(r.body).toBe('page /page?x=1');
    expect(r.headers['x-berth-fallback']).toBe('hit');
    expect(r.headers['content-type']).toBe('text/plain');
    expect(r.headers.age).toBeDefined();
    // breaker now open: still served from the cache
    const again = await get(p, 'fb.test', '/page?x=1');
    expect(again.headers['x-berth-fallback']).toBe('hit');
    for (const path of ['/cookie', '/private', '/other']) {
      const miss = await get(p, 'fb.test', path);
      expect(miss.status).toBeGreaterThanOrEqual(502);
      expect(miss.headers['x-berth-fallback']).toBeUndefined();
    }
    const auth = await get(p, 'fb.test', '/auth', { headers: { authorization: 'Bearer x' } });
    expect(auth.headers['x-berth-fallback']).toBeUndefined();
    expect((await stats(p)).routes.find((x) => x.id === 'fb')!.fallbackHits).toBe(2);
  });

  it('a copy is kept only for a Host in its normal form: a page built from a Host with another port or case is never kept nor served', async () => {
    const a = await up('fbhost', (req, res) => {
      res.setHeader('content-type', 'text/html');
      // a header the app names in Connection is hop-by-hop: dropped live, and from the copy
      res.setHeader('connection', 'x-internal');
      res.setHeader('x-internal', 'secret');
      res.end(`<a href="http://${req.headers.host}/next">next</a>`);
    });
    const p = await setup([route('fbhost', ['fbhost.test'], [a.address], { circuitBreaker: { consecutiveFailures: 1, openMs: 60_000 }, fallbackCache: { ttlMs: 60_000 } })]);
    // an attacker's requests come last, after a real one: they must not replace its copy
    expect((await get(p, 'fbhost.test', '/home')).body).toBe('<a href="http://fbhost.test/next">next</a>');
    await new Promise((r) => setTimeout(r, 1100)); // (past the "young copy" window: a later answer would be kept)
    for (const host of ['fbhost.test:31337', 'FBHost.test']) {
      const live = await get(p, host, '/home');
      expect([live.body, live.headers['x-internal']]).toEqual([`<a href="http://${host}/next">next</a>`, undefined]);
    }
    await a.close();
    const plain = await get(p, 'fbhost.test', '/home');
    expect([plain.headers['x-berth-fallback'], plain.body, plain.headers['x-internal']]).toEqual(['hit', '<a href="http://fbhost.test/next">next</a>', undefined]);
    // and no copy for the other forms
    const other = await get(p, 'fbhost.test:31337', '/home');
    expect(other.headers['x-berth-fallback']).toBeUndefined();
    expect(other.status).toBeGreaterThanOrEqual(502);
  });
});

describe('client abort', () => {
  it('aborts the upstream request', async () => {
    let closed = false;
    const s = await up('stream', (req, res) => {
      res.writeHead(200);
      const t = setInterval(() => res.write('x'.repeat(1024)), 10);
      res.on('close', () => { clearInterval(t); closed = true; });
      req.on('error', () => {});
    });
    const p = await setup([route('abort', ['abort.test'], [s.address])]);
    const ac = new AbortController();
    const r = await request(`${p.url}/`, { headers: { host: 'abort.test' }, signal: ac.signal });
    await new Promise((res) => setTimeout(res, 100));
    ac.abort();
    await r.body.text().catch(() => {});
    await waitFor(() => closed, 5000);
    expect(closed).toBe(true);
    await waitFor(async () => {
      const r2 = await request(`${p.admin}/stats`);
      const j = (await r2.body.json()) as { routes: Array<{ id: string; inflight: number }>; endpoints: Array<{ address: string; inflight: number }> };
      return j.routes.find((x) => x.id === 'abort')!.inflight === 0 && j.endpoints.find((e) => e.address === s.address)!.inflight === 0;
    }, 5000);
  });
});
