/** Partial proxy reports (only the routes that changed) are laid over the proxy's last report. */
import { expect, it } from 'vitest';
import { ProxyRegistry } from '../../control-plane/discovery/proxies.js';

it('a partial report updates the routes it names and keeps the others; a whole one replaces them', () => {
  const reg = new ProxyRegistry();
  const ep = [{ address: '127.0.0.1:1', inflight: 0, requests: 0, state: 'up' }];
  reg.record({ proxyId: 'p', tableVersion: 1, routes: [{ id: 'a', requests: 1, inflight: 0, concurrency: 0 }, { id: 'b', requests: 5, inflight: 2, concurrency: 2 }], endpoints: ep }, '127.0.0.1');
  reg.record({ proxyId: 'p', tableVersion: 2, partial: true, routes: [{ id: 'b', requests: 9, inflight: 0, concurrency: 0.5 }], endpoints: ep }, '127.0.0.1');
  const [e] = reg.live();
  expect(e.report.tableVersion).toBe(2);
  expect(e.report.routes).toEqual([{ id: 'a', requests: 1, inflight: 0, concurrency: 0 }, { id: 'b', requests: 9, inflight: 0, concurrency: 0.5 }]);
  reg.record({ proxyId: 'p', tableVersion: 3, routes: [{ id: 'c', requests: 1, inflight: 0, concurrency: 0 }], endpoints: ep }, '127.0.0.1');
  expect(reg.live()[0].report.routes.map((r) => r.id)).toEqual(['c']);
});
