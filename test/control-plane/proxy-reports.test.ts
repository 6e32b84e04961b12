/** Partial proxy reports (only the routes and endpoints that changed) are laid over the proxy's last report. */
import { expect, it } from 'vitest';
import { ProxyRegistry } from '../../control-plane/discovery/proxies.js';

it('a partial report updates the routes it names and keeps the others; a whole one replaces them', () => {
  const reg = new ProxyRegistry();
  const ep = [{ address: '127.0.0.1:1', inflight: 0, requests: 0, state: 'up' }];
  reg.record({ proxyId: 'p', tableVersion: 1, routes: [{ id: 'a', requests: 1, inflight: 0, concurrency: 0 }, { id: 'b', requests: 5, inflight: 2, concurrency: 2 }], endpoints: ep }, '127.0.0.1');
  reg.record({ proxyId: 'p', tableVersion: 2, partial: true, routes: [{ id: 'b', requests: 9, inflight: 0, concurrency: 0.5 }], endpoints: ep }, '127.0.0.1');
  const [e] = reg.live();
  expect(e.tableVersion).toBe(2);
  expect([...e.routes.values()]).toEqual([{ id: 'a', requests: 1, inflight: 0, concurrency: 0 }, { id: 'b', requests: 9, inflight: 0, concurrency: 0.5 }]);
  reg.record({ proxyId: 'p', tableVersion: 3, routes: [{ id: 'c', requests: 1, inflight: 0, concurrency: 0 }], endpoints: ep }, '127.0.0.1');
  expect([...reg.live()[0].routes.keys()]).toEqual(['c']);
});

it('a partial endpoint list updates the endpoints it names and drops those gone; a drain waits on the sum of both', async () => {
  const reg = new ProxyRegistry();
  const ep = (address: string, inflight: number) => ({ address, inflight, requests: 0, state: 'closed' });
  reg.record({ proxyId: 'p', seq: 1, tableVersion: 4, routes: [], endpoints: [ep('127.0.0.1:1', 0), ep('127.0.0.1:2', 3), ep('127.0.0.1:3', 0)] }, '127.0.0.1');
  // :2 keeps its 3 in flight (not named), :1 moved, :3 is gone
  expect(reg.record({ proxyId: 'p', seq: 2, base: 1, tableVersion: 5, partial: true, endpointsPartial: true, gone: ['127.0.0.1:3'], routes: [], endpoints: [ep('127.0.0.1:1', 1)] }, '127.0.0.1')).toBe(true);
  const [e] = reg.live();
  expect([...e.endpoints.values()]).toEqual([ep('127.0.0.1:1', 1), ep('127.0.0.1:2', 3)]);
  expect((await reg.waitDrained(5, '127.0.0.1:2', 50)).drained).toBe(false);
  expect((await reg.waitDrained(5, '127.0.0.1:3', 50)).drained).toBe(true);
  // drained later, as the partial reports say
  setTimeout(() => reg.record({ proxyId: 'p', seq: 3, base: 2, tableVersion: 5, partial: true, endpointsPartial: true, gone: ['127.0.0.1:2'], routes: [], endpoints: [] }, '127.0.0.1'), 30);
  expect((await reg.waitDrained(5, '127.0.0.1:2', 2000)).drained).toBe(true);
  // an older proxy's partial report (not numbered) carries every endpoint: they replace the list
  reg.record({ proxyId: 'o', tableVersion: 6, routes: [], endpoints: [ep('127.0.0.1:8', 0)] }, '127.0.0.1');
  reg.record({ proxyId: 'o', tableVersion: 6, partial: true, routes: [], endpoints: [ep('127.0.0.1:9', 0)] }, '127.0.0.1');
  expect([...reg.live().find((x) => x.proxyId === 'o')!.endpoints.keys()]).toEqual(['127.0.0.1:9']);
});

it('a partial report is taken only over the report it follows: not by a control plane that restarted, nor by one of two taking turns behind one address, nor when it comes late', () => {
  const ep = (inflight: number) => [{ address: '127.0.0.1:1', inflight, requests: 0, state: 'closed' }];
  const partial = (seq: number, base: number, inflight: number) => ({ proxyId: 'p', seq, base, tableVersion: 1, partial: true, endpointsPartial: true, gone: [], routes: [], endpoints: ep(inflight) });
  // restarted: nothing to lay it over
  const fresh = new ProxyRegistry();
  expect(fresh.record(partial(5, 4, 0), '127.0.0.1')).toBe(false);
  expect(fresh.live()).toEqual([]);
  // two control planes taking turns: A took 1, B took 2 (whole), A must not lay 3 (after 2) over 1
  const a = new ProxyRegistry();
  const b = new ProxyRegistry();
  expect(a.record({ proxyId: 'p', seq: 1, tableVersion: 1, routes: [], endpoints: ep(0) }, '127.0.0.1')).toBe(true);
  expect(b.record({ proxyId: 'p', seq: 2, tableVersion: 1, routes: [], endpoints: ep(3) }, '127.0.0.1')).toBe(true);
  expect(a.record(partial(3, 2, 3), '127.0.0.1')).toBe(false);
  expect(b.record(partial(3, 2, 3), '127.0.0.1')).toBe(true);
  // a report that comes after a newer one: not taken
  expect(b.record({ proxyId: 'p', seq: 2, tableVersion: 1, routes: [], endpoints: ep(0) }, '127.0.0.1')).toBe(false);
  expect(b.live()[0].endpoints.get('127.0.0.1:1')!.inflight).toBe(3);
  // partial endpoints without a base: not taken
  expect(b.record({ proxyId: 'p', seq: 9, tableVersion: 1, partial: true, endpointsPartial: true, routes: [], endpoints: [] }, '127.0.0.1')).toBe(false);
});

it('a partial report that would make a proxy hold more than 200,000 routes is not taken, numbered or not', () => {
  const reg = new ProxyRegistry();
  const routes = (from: number, n: number) => Array.from({ length: n }, (_, i) => ({ id: `r${from + i}`, requests: 0, inflight: 0 }));
  expect(reg.record({ proxyId: 'o', tableVersion: 1, routes: routes(0, 150_000), endpoints: [] }, '127.0.0.1')).toBe(true);
  expect(reg.record({ proxyId: 'o', tableVersion: 1, partial: true, routes: routes(150_000, 60_000), endpoints: [] }, '127.0.0.1')).toBe(false);
  expect(reg.live()[0].routes.size).toBe(150_000);
  expect(reg.record({ proxyId: 'o', tableVersion: 1, partial: true, routes: routes(150_000, 10), endpoints: [] }, '127.0.0.1')).toBe(true);
});
