import { createServer } from 'node:http';
import { once } from 'node:events';
import type { AddressInfo } from 'node:net';
import { pino } from 'pino';
import { describe, expect, it } from 'vitest';
import { Reporter } from '../../proxy/sync/reporter.js';
import { mergeCounts, type ReportCounts } from '../../proxy/metrics/report-counts.js';

type Endpoint = { address: string; inflight: number; requests: number; state: string };
type Report = { tableVersion: number | null; seq?: number; base?: number; partial?: boolean; endpointsPartial?: boolean; gone?: string[]; routes: Array<{ id: string; requests: number; inflight: number; concurrency: number }>; endpoints: Endpoint[] };

const counts = (ids: readonly string[], values: number[][]): ReportCounts =>
  ({ ids, counts: Float64Array.from(values.flat()), endpoints: [{ address: '127.0.0.1:1', inflight: 0, requests: 0, state: 'closed' }] });

describe('proxy reports (sync/reporter.ts)', () => {
  it('sends every route, then only the routes whose counts moved, by id when the ids change; whole again after a refused report', async () => {
    const got: Report[] = [];
    let status = 204;
    const srv = createServer((req, res) => {
      let b = '';
      req.on('data', (c) => (b += c));
      req.on('end', () => { got.push(JSON.parse(b) as Report); res.writeHead(status).end(); });
    });
    srv.listen(0, '127.0.0.1');
    await once(srv, 'listening');
    let now: ReportCounts = counts(['a', 'b', 'c'], [[1, 0, 0], [2, 0, 0], [3, 0, 0]]);
    const r = new Reporter(`http://127.0.0.1:${(srv.address() as AddressInfo).port}`, 't', async () => ({ tableVersion: 7, counts: now }), pino({ level: 'silent' }), 60_000, 60_000);
    const next = async () => {
      const n = got.length;
      r.send();
      const t0 = Date.now();
      while (got.length === n && Date.now() - t0 < 5000) await new Promise((x) => setTimeout(x, 5));
      return got[n];
    };
    try {
      expect(await next()).toMatchObject({ tableVersion: 7, routes: [{ id: 'a', requests: 1 }, { id: 'b' }, { id: 'c' }], endpoints: [{ address: '127.0.0.1:1' }] });
      expect(got[0].partial).toBeUndefined();
      // the same ids array: compared place by place; only b moved (concurrency below 1/100 is no move)
      const ids = now.ids;
      now = counts(ids, [[1, 0, 0.001], [5, 1, 0.5], [3, 0, 0]]);
      expect(await next()).toMatchObject({ partial: true, routes: [{ id: 'b', requests: 5, inflight: 1, concurrency: 0.5 }] });
      // other ids (a table came): compared by id
      now = counts(['d', 'c', 'b', 'a'], [[0, 0, 0], [3, 0, 0], [5, 1, 0.5], [1, 0, 0]]);
      expect(await next()).toMatchObject({ partial: true, routes: [{ id: 'd', requests: 0 }] });
      // refused: the next report is whole
      status = 500;
      now = counts(now.ids, [[0, 0, 0], [4, 0, 0], [5, 1, 0.5], [1, 0, 0]]);
      expect((await next()).routes.map((x) => x.id)).toEqual(['c']);
      status = 204;
      const whole = await next();
      expect(whole.partial).toBeUndefined();
      expect(whole.routes.map((x) => x.id)).toEqual(['d', 'c', 'b', 'a']);
    } finally {
      r.stop();
      srv.close();
    }
  });

  it('sends every endpoint, then only those whose counts or state moved and the addresses gone, each report numbered after the last accepted; whole again when the control plane cannot lay it over that (409); plain reports for one that cannot read them (400)', async () => {
    const got: Report[] = [];
    const statuses: number[] = [];
    const srv = createServer((req, res) => {
      let b = '';
      req.on('data', (c) => (b += c));
      req.on('end', () => { got.push(JSON.parse(b) as Report); res.writeHead(statuses.shift() ?? 204).end(); });
    });
    srv.listen(0, '127.0.0.1');
    await once(srv, 'listening');
    const ep = (port: number, inflight: number, requests: number, state = 'closed'): Endpoint => ({ address: `127.0.0.1:${port}`, inflight, requests, state });
    let endpoints = [ep(1, 0, 0), ep(2, 1, 5), ep(3, 0, 9)];
    const ids = ['a'];
    const r = new Reporter(`http://127.0.0.1:${(srv.address() as AddressInfo).port}`, 't',
      async () => ({ tableVersion: 7, counts: { ids, counts: Float64Array.from([1, 0, 0]), endpoints } }), pino({ level: 'silent' }), 60_000, 60_000);
    const next = async (n = 1) => {
      const from = got.length;
      r.send();
      const t0 = Date.now();
      while (got.length < from + n && Date.now() - t0 < 5000) await new Promise((x) => setTimeout(x, 5));
      await new Promise((x) => setTimeout(x, 20));
      return got.slice(from);
    };
    try {
      const [first] = await next();
      expect(first.endpoints).toEqual(endpoints);
      expect(first.seq).toBe(1);
      expect(first.base).toBeUndefined();
      // :2 moved, :3's breaker opened, :1 is gone, :4 is new
      endpoints = [ep(2, 0, 6), ep(3, 0, 9, 'open'), ep(4, 0, 0)];
      const [p1] = await next();
      expect(p1).toMatchObject({ seq: 2, base: 1, partial: true, endpointsPartial: true, gone: ['127.0.0.1:1'], endpoints: [ep(2, 0, 6), ep(3, 0, 9, 'open'), ep(4, 0, 0)] });
      const [p2] = await next();
      expect(p2).toMatchObject({ seq: 3, base: 2, endpointsPartial: true, gone: [], endpoints: [] });
      // a control plane that restarted: 409, and the whole report goes at once
      statuses.push(409);
      endpoints = [ep(2, 1, 7), ep(3, 0, 9, 'open'), ep(4, 0, 0)];
      const [refused, whole] = await next(2);
      expect(refused).toMatchObject({ seq: 4, base: 3, endpointsPartial: true, endpoints: [ep(2, 1, 7)] });
      expect(whole.partial).toBeUndefined();
      expect(whole.endpointsPartial).toBeUndefined();
      expect(whole.base).toBeUndefined();
      expect(whole.seq).toBe(5);
      expect(whole.endpoints).toEqual(endpoints);
      // an older control plane refuses the fields (400): reports as it knew them, at once (routes
      // partial, every endpoint, no numbers)
      statuses.push(400);
      endpoints = [ep(2, 0, 8), ep(3, 0, 9, 'open'), ep(4, 0, 0)];
      const [old, plain] = await next(2);
      expect(old.seq).toBe(6);
      expect(plain.seq).toBeUndefined();
      expect(plain.partial).toBeUndefined();
      const [p3] = await next();
      expect(p3.partial).toBe(true);
      expect(p3.seq).toBeUndefined();
      expect(p3.endpointsPartial).toBeUndefined();
      expect(p3.endpoints).toEqual(endpoints);
    } finally {
      r.stop();
      srv.close();
    }
  });

  it('merges worker threads by route id and by address (the worst breaker state wins)', () => {
    const a = counts(['x', 'y'], [[1, 1, 0.5], [2, 0, 0]]);
    const b = counts(['x', 'y'], [[3, 0, 0.25], [4, 2, 1]]);
    b.endpoints[0] = { address: '127.0.0.1:1', inflight: 2, requests: 5, state: 'open' };
    const m = mergeCounts([a, b]);
    expect(m.ids).toBe(a.ids);
    expect([...m.counts]).toEqual([4, 1, 0.75, 6, 2, 1]);
    expect(m.endpoints).toEqual([{ address: '127.0.0.1:1', inflight: 2, requests: 5, state: 'open' }]);
    // ids in another order or another set (a thread a table behind): by id
    const c = counts(['y', 'z'], [[10, 0, 0], [1, 1, 1]]);
    const n = mergeCounts([a, c]);
    expect(n.ids).toEqual(['x', 'y', 'z']);
    expect([...n.counts]).toEqual([1, 1, 0.5, 12, 0, 0, 1, 1, 1]);
  });
});
