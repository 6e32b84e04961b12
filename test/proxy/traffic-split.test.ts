/**
 * Traffic splitting between revisions: routes that share a host carry a trafficWeight and the
 * proxy picks one per request by smooth weighted round robin (exact over every cycle); a tag host
 * reaches one revision only; a table mixing weighted and unweighted claims of a host is refused.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { get, putRoutes, route, startProxy, startUpstream, table, type ProxyProc, type Upstream } from './harness.js';

let v1: Upstream;
let v2: Upstream;
let p: ProxyProc;
const answer = (name: string) => (_req: unknown, res: import('node:http').ServerResponse) => { res.writeHead(200, { 'content-length': String(name.length) }); res.end(name); };
beforeAll(async () => {
  v1 = await startUpstream('v1', answer('v1'));
  v2 = await startUpstream('v2', answer('v2'));
  p = await startProxy(table([]));
});
afterAll(async () => {
  await p?.stop();
  await v1?.close();
  await v2?.close();
});

async function split(w1: number, w2: number, extra2: string[] = []): Promise<void> {
  const t = table([
    route('img-1', ['shop.test'], [v1.address], { trafficWeight: w1 }),
    route('img-2', ['shop.test', ...extra2], [v2.address], { trafficWeight: w2 }),
  ], Date.now());
  const r = await putRoutes(p, t);
  expect(r.status, r.body).toBe(200);
}

async function tally(host: string, n: number): Promise<Record<string, number>> {
  const out: Record<string, number> = {};
  for (let i = 0; i < n; i++) {
    const r = await get(p, host);
    expect(r.status).toBe(200);
    out[r.body] = (out[r.body] ?? 0) + 1;
  }
  return out;
}

describe('traffic split', () => {
  it('90/10 is exact over every 10 requests', async () => {
    await split(90, 10);
    for (let round = 0; round < 10; round++) expect(await tally('shop.test', 10)).toEqual({ v1: 9, v2: 1 });
  });

  it('50/50 alternates', async () => {
    await split(50, 50);
    expect(await tally('shop.test', 200)).toEqual({ v1: 100, v2: 100 });
  });

  it('a tag host reaches its revision only, whatever the split', async () => {
    await split(99, 1, ['canary---shop.test']);
    expect(await tally('canary---shop.test', 20)).toEqual({ v2: 20 });
    // the /apps/{host}/ form too
    const r = await get(p, 'localhost', '/apps/canary---shop.test/');
    expect(r.body).toBe('v2');
  });

  it('refuses a host claimed by a route without a trafficWeight, and keeps the old table', async () => {
    await split(50, 50);
    const bad = table([
      route('img-1', ['shop.test'], [v1.address], { trafficWeight: 50 }),
      route('img-2', ['shop.test'], [v2.address]),
    ], Date.now());
    const r = await putRoutes(p, bad);
    expect(r.status).toBe(400);
    expect(r.body).toMatch(/trafficWeight/);
    expect(await tally('shop.test', 4)).toEqual({ v1: 2, v2: 2 });
  });

  it('the split carries on across table swaps (a 10 % canary is not starved by a busy cluster)', async () => {
    const out: Record<string, number> = {};
    for (let i = 0; i < 20; i++) {
      // every 5 requests a new table, as any instance starting or stopping anywhere makes one
      const t = table([
        route('img-1', ['shop.test'], [v1.address], { trafficWeight: 90 }),
        route('img-2', ['shop.test'], [v2.address], { trafficWeight: 10 }),
        route(`other-${i}`, [`other-${i}.test`], [v1.address]),
      ], Date.now() + i);
      expect((await putRoutes(p, t)).status).toBe(200);
      for (const [k, n] of Object.entries(await tally('shop.test', 5))) out[k] = (out[k] ?? 0) + n;
    }
    expect(out).toEqual({ v1: 90, v2: 10 });
  });

  it('a request held for a route that leaves the table follows its host to the route that has it now', async () => {
    let release: () => void = () => {};
    const slow = await startUpstream('slow', (_req, res) => {
      release = () => { if (!res.headersSent) { res.writeHead(200, { 'content-length': '4' }); res.end('slow'); } };
    });
    try {
      const capped = table([route('img-1', ['held.test'], [slow.address], { concurrency: { perEndpoint: 1, queueTimeoutMs: 20_000 } })], Date.now());
      expect((await putRoutes(p, capped)).status).toBe(200);
      const first = get(p, 'held.test');
      await new Promise((r) => setTimeout(r, 100));
      const t0 = Date.now();
      const held = get(p, 'held.test'); // waits: the one endpoint is at its cap
      await new Promise((r) => setTimeout(r, 100));
      // the host moves to another revision while it waits
      expect((await putRoutes(p, table([route('img-2', ['held.test'], [v2.address])], Date.now()))).status).toBe(200);
      const r = await held;
      expect(r.status).toBe(200);
      expect(r.body).toBe('v2');
      expect(Date.now() - t0).toBeLessThan(5000);
      release();
      expect((await first).body).toBe('slow');
      // its in-flight count moved with it: both ids back at zero (it stayed on img-1 and went
      // below zero on img-2, which made every full report to the control plane a 400)
      const stats = await (await fetch(`${p.admin}/stats`)).json() as { routes: Array<{ id: string; inflight: number }> };
      const inflight = Object.fromEntries(stats.routes.map((x) => [x.id, x.inflight]));
      expect(inflight['img-1']).toBe(0);
      expect(inflight['img-2']).toBe(0);
    } finally {
      release();
      await slow.close();
    }
  });

  it('a table without shared hosts has no trafficWeight and routes as before', async () => {
    const r = await putRoutes(p, table([route('img-2', ['shop.test'], [v2.address])], Date.now()));
    expect(r.status).toBe(200);
    expect(await tally('shop.test', 5)).toEqual({ v2: 5 });
  });
});
