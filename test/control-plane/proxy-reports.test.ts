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
  reg.record({ proxyId: 'p', tableVersion: 4, routes: [], endpoints: [ep('127.0.0.1:1', 0), ep('127.0.0.1:2', 3), ep('127.0.0.1:3', 0)] }, '127.0.0.1');
  // :2 keeps its 3 in flight (not named), :1 moved, :3 is gone
  expect(reg.record({ proxyId: 'p', tableVersion: 5, partial: true, endpointsPartial: true, gone: ['127.0.0.1:3'], routes: [], endpoints: [ep('127.0.0.1:1', 1)] }, '127.0.0.1')).toBe(true);
  const [e] = reg.live();
  expect([...e.endpoints.values()]).toEqual([ep('127.0.0.1:1', 1), ep('127.0.0.1:2', 3)]);
  expect((await reg.waitDrained(5, '127.0.0.1:2', 50)).drained).toBe(false);
  expect((await reg.waitDrained(5, '127.0.0.1:3', 50)).drained).toBe(true);
  // drained later, as the partial reports say
  setTimeout(() => reg.record({ proxyId: 'p', tableVersion: 5, partial: true, endpointsPartial: true, gone: ['127.0.0.1:2'], routes: [], endpoints: [] }, '127.0.0.1'), 30);
  expect((await reg.waitDrained(5, '127.0.0.1:2', 2000)).drained).toBe(true);
  // an older proxy's partial report carries every endpoint: they replace the list
  reg.record({ proxyId: 'p', tableVersion: 6, partial: true, routes: [], endpoints: [ep('127.0.0.1:9', 0)] }, '127.0.0.1');
  expect([...reg.live()[0].endpoints.keys()]).toEqual(['127.0.0.1:9']);
});

it('a partial endpoint list from a proxy it knows nothing of is not taken (the proxy sends a whole report next)', () => {
  const reg = new ProxyRegistry();
  expect(reg.record({ proxyId: 'q', tableVersion: 1, partial: true, endpointsPartial: true, gone: [], routes: [], endpoints: [] }, '127.0.0.1')).toBe(false);
  expect(reg.live()).toEqual([]);
  expect(reg.record({ proxyId: 'q', tableVersion: 1, routes: [], endpoints: [] }, '127.0.0.1')).toBe(true);
  expect(reg.live()).toHaveLength(1);
});
