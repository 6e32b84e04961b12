/**
 * Per-endpoint concurrency caps (an app's container_concurrency): the upstream never sees more
 * requests at once than the cap; the rest wait in order in a bounded per-route queue.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { request } from 'undici';
import { get, putRoutes, route, startProxy, startUpstream, table, type ProxyProc, type Upstream } from './harness.js';

let up: Upstream;
let p: ProxyProc;
let now = 0;
let peak = 0;
let delayMs = 80;
const order: number[] = [];
beforeAll(async () => {
  up = await startUpstream('counted', (req, res) => {
    now++;
    peak = Math.max(peak, now);
    let body = '';
    req.on('data', (c: Buffer) => (body += c.toString()));
    req.on('end', () => {
      setTimeout(() => {
        now--;
        order.push(Number(new URL(req.url!, 'http://x').searchParams.get('i')));
        res.writeHead(200, { 'content-length': String(body.length) });
        res.end(body);
      }, delayMs);
    });
  });
  p = await startProxy(table([]));
});
afterAll(async () => {
  await p?.stop();
  await up?.close();
});

async function cap(perEndpoint: number, extra: object = {}): Promise<void> {
  expect((await putRoutes(p, table([route('capped', ['capped.test'], [up.address], { concurrency: { perEndpoint, ...extra } })], Date.now()))).status).toBe(200);
  peak = 0;
  order.length = 0;
}

describe('concurrency caps', () => {
  it('the upstream never sees more than perEndpoint at once; everyone is answered, bodies intact', async () => {
    await cap(3);
    delayMs = 60;
    const results = await Promise.all(Array.from({ length: 24 }, (_, i) =>
      get(p, 'capped.test', `/?i=${i}`, { method: 'POST', body: `body-${i}` })));
    expect(results.map((r) => r.status)).toEqual(Array(24).fill(200));
    expect(results.map((r) => r.body)).toEqual(Array.from({ length: 24 }, (_, i) => `body-${i}`));
    expect(peak).toBe(3);
  });

  it('waiting requests leave in the order they came', async () => {
    await cap(1);
    delayMs = 20;
    const sent: Array<Promise<unknown>> = [];
    for (let i = 0; i < 8; i++) {
      sent.push(get(p, 'capped.test', `/?i=${i}`));
      await new Promise((r) => setTimeout(r, 5));
    }
    await Promise.all(sent);
    expect(order).toEqual([0, 1, 2, 3, 4, 5, 6, 7]);
  });

  it('a full queue answers 503 overloaded, a long wait 504 queue_timeout', async () => {
    await cap(1, { maxQueue: 2, queueTimeoutMs: 150 });
    delayMs = 400;
    const results = await Promise.all(Array.from({ length: 6 }, (_, i) => get(p, 'capped.test', `/?i=${i}`)));
    const byStatus = (s: number) => results.filter((r) => r.status === s);
    expect(byStatus(200).length).toBe(1);
    expect(byStatus(503).length).toBe(3);
    expect(byStatus(503).every((r) => r.headers['x-berth-error'] === 'overloaded')).toBe(true);
    expect(byStatus(504).length).toBe(2);
    expect(byStatus(504).every((r) => r.headers['x-berth-error'] === 'queue_timeout')).toBe(true);
    expect(peak).toBe(1);
  });

  it('a client that gives up while waiting leaves the queue (the upstream never sees it)', async () => {
    await cap(1);
    delayMs = 300;
    const hits = up.hits;
    const first = get(p, 'capped.test', '/?i=100');
    await new Promise((r) => setTimeout(r, 30));
    const ac = new AbortController();
    const gaveUp = request(`${p.url}/?i=101`, { headers: { host: 'capped.test' }, signal: ac.signal }).catch(() => 'aborted');
    await new Promise((r) => setTimeout(r, 30));
    ac.abort();
    expect(await gaveUp).toBe('aborted');
    expect((await first).status).toBe(200);
    await new Promise((r) => setTimeout(r, 100));
    expect(up.hits - hits).toBe(1);
    expect((await get(p, 'capped.test', '/?i=102')).status).toBe(200);
  });

  it('a waiting request takes an endpoint that a newer table adds to its route (same id)', async () => {
    await cap(1, { queueTimeoutMs: 10_000 });
    delayMs = 1500;
    const other = await startUpstream('other', (_req, res) => { res.writeHead(200, { 'content-length': '5' }); res.end('other'); });
    try {
      const first = get(p, 'capped.test', '/?i=200');
      await new Promise((r) => setTimeout(r, 50));
      const t0 = Date.now();
      const held = get(p, 'capped.test', '/?i=201'); // waits: the one endpoint is at its cap
      await new Promise((r) => setTimeout(r, 100));
      expect((await putRoutes(p, table([route('capped', ['capped.test'], [up.address, other.address], { concurrency: { perEndpoint: 1, queueTimeoutMs: 10_000 } })], Date.now()))).status).toBe(200);
      const r = await held;
      expect([r.status, r.body]).toEqual([200, 'other']);
      expect(Date.now() - t0).toBeLessThan(1000); // not after the slow one's answer
      expect((await first).status).toBe(200);
    } finally {
      await other.close();
    }
  });
});
