import { describe, expect, it } from 'vitest';
import { normalizeHost } from '../../shared/hostname.js';
import { isAddress, parseRouteTable, RouteTableError, validateRouteTable } from '../../shared/routes/validate.js';
import { CircuitBreaker } from '../../proxy/resilience/circuit-breaker.js';
import { RoundRobin } from '../../proxy/balancing/round-robin.js';
import { Weighted } from '../../proxy/balancing/weighted.js';
import { LeastRequest } from '../../proxy/balancing/least-request.js';
import type { Target } from '../../proxy/balancing/target.js';
import { Endpoint } from '../../proxy/upstream/endpoint.js';
import { compileRouteTable, RouteState } from '../../proxy/routing/table.js';
import { EndpointRegistry } from '../../proxy/upstream/endpoint.js';
import { FallbackCache } from '../../proxy/resilience/fallback-cache.js';

const poolOpts = { connections: 1, keepAliveTimeoutMs: 1000, connectMs: 1000 };
function targets(weights: number[]): Target[] {
  return weights.map((w, i) => ({ id: `e${i}`, endpoint: new Endpoint(`127.0.0.1:${1000 + i}`, 3, 1000, poolOpts), weight: w, current: 0, cap: 0, key: '' }));
}

describe('hostname normalisation', () => {
  it.each([
    ['shop.example.com', 'shop.example.com'],
    ['Shop.Example.COM:8080', 'shop.example.com'],
    ['https://shop.example.com/', 'shop.example.com'],
    ['http://user@Shop.example.com:80/a/b?c=d#e', 'shop.example.com'],
    ['shop.example.com.', 'shop.example.com'],
    ['bücher.example', 'xn--bcher-kva.example'],
    ['[::1]:8080', '[::1]'],
    ['', ''],
  ])('%s → %s', (input, out) => {
    expect(normalizeHost(input)).toBe(out);
  });
});

describe('route table validation', () => {
  const ok = { version: 1, routes: [{ id: 'a', hosts: ['A.example.com'], endpoints: [{ id: 'e', address: '127.0.0.1:80' }] }] };
  it('normalises hosts', () => {
    expect(validateRouteTable(structuredClone(ok)).routes[0].hosts).toEqual(['a.example.com']);
  });
  it('normalises wildcards and keeps hosts already in normal form as they are (the same array)', () => {
    const t = { version: 1, routes: [{ id: 'a', hosts: ['*.Shop.Example.COM', ' *.b.example.com ', 'c.example.com'], endpoints: [] }, { id: 'b', hosts: ['d.example.com', '*.e.example.com'], endpoints: [] }] };
    const hostsB = t.routes[1].hosts;
    const v = validateRouteTable(t);
    expect(v.routes[0].hosts).toEqual(['*.shop.example.com', '*.b.example.com', 'c.example.com']);
    expect(v.routes[1].hosts).toBe(hostsB);
  });
  it('endpoint ids must be unique within a route, however many endpoints it has', () => {
    const eps = (n: number, dupAt: number) => Array.from({ length: n }, (_, i) => ({ id: i === dupAt ? 'e0' : `e${i}`, address: `127.0.0.1:${1000 + i}` }));
    for (const n of [2, 8, 9, 40]) {
      expect(() => validateRouteTable({ version: 1, routes: [{ id: 'a', hosts: ['x.com'], endpoints: eps(n, n - 1) }] })).toThrow(`routes.0.endpoints.${n - 1}.id "e0" is duplicated in this route`);
      expect(validateRouteTable({ version: 1, routes: [{ id: 'a', hosts: ['x.com'], endpoints: eps(n, -1) }] }).routes[0].endpoints).toHaveLength(n);
    }
  });
  it.each([
    [{ routes: [] }, '(root) must have required property \'version\''],
    [{ version: 1, routes: [{ id: 'a', hosts: ['x'], endpoints: [{ id: 'e', address: 'nope' }] }] }, 'routes.0.endpoints.0.address'],
    [{ version: 1, routes: [{ id: 'a', hosts: ['x'], endpoints: [{ id: 'e', address: '1.2.3.4:99999' }] }] }, 'routes.0.endpoints.0.address'],
    [{ version: 1, routes: [{ id: 'a', hosts: ['x'], endpoints: [], policy: 'random' }] }, 'routes.0.policy must be one of'],
    [{ version: 1, routes: [{ id: 'a', hosts: ['bad host!'], endpoints: [] }] }, 'routes.0.hosts.0'],
    [{ version: 1, routes: [{ id: 'a', hosts: ['x.com'], endpoints: [] }, { id: 'b', hosts: ['X.com'], endpoints: [] }] }, 'routes.1.hosts.0 "x.com" is already served by route "a"'],
    [{ version: 1, routes: [{ id: 'a', hosts: ['x.com', 'X.COM'], endpoints: [] }] }, 'routes.0.hosts.1 "x.com" is listed twice in this route'],
    [{ version: 1, routes: [{ id: 'a', hosts: ['*.x.com'], endpoints: [] }, { id: 'b', hosts: ['*.X.com'], endpoints: [] }] }, 'routes.1.hosts.0 "*.x.com" is already served by route "a"'],
    [{ version: 1, routes: [{ id: 'a', hosts: ['x.com'], endpoints: [], circuitBreaker: { consecutiveFailures: 0 } }] }, 'routes.0.circuitBreaker.consecutiveFailures'],
    [{ version: 1, routes: [{ id: 'a', hosts: ['x.com'], endpoints: [], extra: 1 }] }, 'routes.0 has unknown property "extra"'],
  ])('rejects %j naming the field', (input, msg) => {
    expect(() => validateRouteTable(input)).toThrow(RouteTableError);
    expect(() => validateRouteTable(input)).toThrow(msg);
  });
  it('rejects invalid JSON', () => {
    expect(() => parseRouteTable('{"version":')).toThrow(/not valid JSON/);
  });
  const r = (id: string, hosts: string[], trafficWeight?: number) => ({ id, hosts, endpoints: [], ...(trafficWeight === undefined ? {} : { trafficWeight }) });
  it.each([
    [[r('a', ['x.com']), r('a', ['y.com'])], 'routes.1.id "a" is used by another route'],
    // a host is shared only by different routes that all carry a trafficWeight
    [[r('a', ['x.com'], 50), r('b', ['X.com'])], 'routes.1.hosts.0 "x.com" is already served by route "a"; routes sharing a host must all have a trafficWeight'],
    [[r('a', ['x.com']), r('b', ['x.com'], 50)], 'routes.1.hosts.0 "x.com" is already served by route "a"; routes sharing a host must all have a trafficWeight'],
    [[r('a', ['y.com', 'x.com']), r('b', ['x.com'], 50), r('c', ['x.com'], 50)], 'routes.1.hosts.0 "x.com" is already served by route "a"'],
    [[r('a', ['x.com'], 50), r('b', ['x.com'], 50), r('c', ['x.com'])], 'routes.2.hosts.0 "x.com" is already served by route "a"'],
    [[r('a', ['x.com', 'x.com'], 50)], 'routes.0.hosts.1 "x.com" is listed twice in this route'],
    [[r('a', ['x.com'], 50), r('b', ['*.x.com', 'x.com', 'X.com.'], 50)], 'routes.1.hosts.2 "x.com" is listed twice in this route'],
  ])('refuses %j', (routes, msg) => {
    expect(() => validateRouteTable({ version: 1, routes })).toThrow(msg);
  });
  it('lets routes that all carry a trafficWeight share hosts', () => {
    const t = validateRouteTable({ version: 1, routes: [r('a', ['x.com', '*.x.com'], 90), r('b', ['X.com', 'only-b.com'], 10), r('c', ['*.X.com'], 1), r('d', ['d.com'])] });
    expect(t.routes.map((x) => x.hosts)).toEqual([['x.com', '*.x.com'], ['x.com', 'only-b.com'], ['*.x.com'], ['d.com']]);
  });
  it('checks upstream addresses without allocating exactly as the address grammar says', () => {
    // the grammar as a regex: host:port (A-Z a-z 0-9 . _ -) or [v6]:port (and ':'), port 1-65535
    const grammar = (a: string) => {
      const m = /^(?:\[[A-Za-z0-9._:-]+\]|[A-Za-z0-9._-]+):(\d{1,5})$/.exec(a);
      return m !== null && Number(m[1]) >= 1 && Number(m[1]) <= 65535;
    };
    const cases = ['127.0.0.1:80', 'h:1', 'h:65535', 'h:65536', 'h:0', 'h:00001', 'h:123456', ':80', 'h:', 'h', '[::1]:80', '[::1]80', '[]:80',
      '[::1]:', 'a:b:80', 'H_o-st.X:99', 'h :80', 'h:8 0', 'h:+80', 'h:80\n', 'x:-1', 'ä:80', '[a]b]:1', '[a:1', 'a]:1', '::1', ''];
    for (const c of cases) expect([c, isAddress(c)]).toEqual([c, grammar(c)]);
    expect(cases.filter(isAddress)).toEqual(['127.0.0.1:80', 'h:1', 'h:65535', 'h:00001', '[::1]:80', 'H_o-st.X:99']);
    // and on random strings over the characters that matter
    const alphabet = '[]:.a1-_9Z0 x';
    let seed = 7;
    const rnd = (n: number) => (seed = (seed * 1103515245 + 12345) % 2147483648) % n;
    for (let k = 0; k < 20_000; k++) {
      let s = '';
      for (let i = rnd(9); i > 0; i--) s += alphabet[rnd(alphabet.length)];
      if (isAddress(s) !== grammar(s)) expect([s, isAddress(s)]).toEqual([s, grammar(s)]);
    }
  });
});

describe('circuit breaker', () => {
  it('opens after N consecutive failures, admits one probe after openMs, closes on success', () => {
    const b = new CircuitBreaker(3, 1000);
    b.onFailure(0); b.onFailure(0);
    expect(b.admits(0)).toBe(true);
    b.onSuccess(); // resets the count
    b.onFailure(1); b.onFailure(2); b.onFailure(3);
    expect(b.stateName(3)).toBe('open');
    expect(b.admits(500)).toBe(false);
    expect(b.admits(1003)).toBe(true);
    b.acquire(1003);
    expect(b.stateName(1003)).toBe('half_open');
    expect(b.admits(1004)).toBe(false); // only one probe
    b.onSuccess();
    expect(b.stateName(1005)).toBe('closed');
  });
  it('a failed probe re-opens', () => {
    const b = new CircuitBreaker(1, 100);
    b.onFailure(0);
    b.acquire(100);
    b.onFailure(100);
    expect(b.admits(150)).toBe(false);
    expect(b.admits(200)).toBe(true);
  });
  it('a neutral outcome releases the probe', () => {
    const b = new CircuitBreaker(1, 100);
    b.onFailure(0);
    b.acquire(100);
    b.onNeutral();
    expect(b.admits(101)).toBe(true);
  });
});

describe('balancers', () => {
  it('round robin is even and deterministic, skipping open breakers', () => {
    const t = targets([1, 1, 1]);
    const rr = new RoundRobin(t);
    expect(Array.from({ length: 6 }, () => rr.pick(0, null)!.id)).toEqual(['e0', 'e1', 'e2', 'e0', 'e1', 'e2']);
    t[1].endpoint.breaker.onFailure(0); t[1].endpoint.breaker.onFailure(0); t[1].endpoint.breaker.onFailure(0);
    expect(Array.from({ length: 4 }, () => rr.pick(1, null)!.id)).toEqual(['e0', 'e2', 'e0', 'e2']);
    expect(rr.pick(1, t[0].endpoint)!.id).toBe('e2');
  });
  it('weighted is smooth (5,1,1 → a a b a c a a)', () => {
    const w = new Weighted(targets([5, 1, 1]));
    expect(Array.from({ length: 7 }, () => w.pick(0, null)!.id).join(' ')).toBe('e0 e0 e1 e0 e2 e0 e0');
  });
  it('weighted skips weight 0 and unavailable endpoints', () => {
    const t = targets([0, 2, 1]);
    const w = new Weighted(t);
    const picks = Array.from({ length: 30 }, () => w.pick(0, null)!.id);
    expect(picks.filter((p) => p === 'e0')).toHaveLength(0);
    expect(picks.filter((p) => p === 'e1')).toHaveLength(20);
  });
  it('least request prefers the endpoint with fewer in-flight requests', () => {
    const t = targets([1, 1]);
    t[0].endpoint.inflight = 10;
    const lr = new LeastRequest(t);
    const picks = Array.from({ length: 100 }, () => lr.pick(0, null)!.id);
    expect(picks.every((p) => p === 'e1')).toBe(true);
  });
  it('least request spreads over many endpoints and returns null when none is available', () => {
    const t = targets([1, 1, 1, 1]);
    const lr = new LeastRequest(t);
    const seen = new Set(Array.from({ length: 200 }, () => lr.pick(0, null)!.id));
    expect(seen.size).toBe(4);
    for (const x of t) { x.endpoint.breaker.onFailure(0); x.endpoint.breaker.onFailure(0); x.endpoint.breaker.onFailure(0); }
    expect(lr.pick(1, null)).toBeNull();
  });
});

describe('route lookup', () => {
  const reg = new EndpointRegistry(poolOpts);
  const spec = validateRouteTable({
    version: 3,
    routes: [
      { id: 'exact', hosts: ['a.example.com'], endpoints: [] },
      { id: 'wide', hosts: ['*.example.com'], endpoints: [] },
      { id: 'narrow', hosts: ['*.b.example.com'], endpoints: [] },
    ],
  });
  const t = compileRouteTable(spec, reg, new RouteState());
  it('exact first, then the longest wildcard suffix', () => {
    expect(t.lookup('a.example.com')!.id).toBe('exact');
    expect(t.lookup('x.example.com')!.id).toBe('wide');
    expect(t.lookup('x.y.example.com')!.id).toBe('wide');
    expect(t.lookup('x.b.example.com')!.id).toBe('narrow');
    expect(t.lookup('example.com')).toBeUndefined();
    expect(t.lookup('other.org')).toBeUndefined();
  });
  it('keeps endpoints (pools, breakers) across compiles by address', () => {
    const state = new RouteState();
    const s1 = validateRouteTable({ version: 1, routes: [{ id: 'r', hosts: ['h'], endpoints: [{ id: 'e', address: '127.0.0.1:9' }] }] });
    const t1 = compileRouteTable(s1, reg, state);
    const s2 = validateRouteTable({ version: 2, routes: [{ id: 'r', hosts: ['h'], endpoints: [{ id: 'x', address: '127.0.0.1:9' }] }] });
    const t2 = compileRouteTable(s2, reg, state);
    expect(t2.routes[0].targets[0].endpoint).toBe(t1.routes[0].targets[0].endpoint);
    expect(t2.routes[0].stats).toBe(t1.routes[0].stats);
  });
  it('a route id keeps its stats, cache and queue across compiles; a held request finds its newest route', () => {
    const state = new RouteState();
    const spec = (v: number, ids: string[], extra: object = {}) => validateRouteTable({ version: v, routes: ids.map((id) => ({ id, hosts: [`${id}.example.com`], endpoints: [{ id: 'e', address: '127.0.0.1:9' }], concurrency: { perEndpoint: 1 }, ...extra })) });
    const t1 = compileRouteTable(spec(1, ['a', 'b']), reg, state);
    const [a1, b1] = t1.routes;
    expect(a1.home.route).toBe(a1);
    const t2 = compileRouteTable(spec(2, ['a']), reg, state);
    const a2 = t2.routes[0];
    expect(a2).not.toBe(a1);
    expect(a2.stats).toBe(a1.stats);
    expect(a2.cache).toBe(a1.cache);
    expect(a2.queue).toBe(a1.queue);
    expect(a1.home.route).toBe(a2);
    // b left the table: its stats stay (monotonic counters), its cache and empty queue go
    expect(b1.home.route).toBeNull();
    expect(b1.home.cache).toBeNull();
    expect(b1.home.queue).toBeNull();
    expect(state.stats.get('b')).toBe(b1.stats);
    // back again: the same counters, a new cache
    const t3 = compileRouteTable(spec(3, ['a', 'b'], { fallbackCache: { ttlMs: 5 } }), reg, state);
    expect(t3.routes[1].stats).toBe(b1.stats);
    expect(t3.routes[1].cache).not.toBe(b1.cache);
    expect(t3.routes[0].cache).not.toBe(a2.cache); // its settings changed
    expect(t3.lookup('b.example.com')).toBe(t3.routes[1]);
  });
  it('a route id gone long enough, holding nothing and with nothing left to report, is forgotten', () => {
    const state = new RouteState();
    const spec = (v: number, ids: string[]) => validateRouteTable({ version: v, routes: ids.map((id) => ({ id, hosts: [`${id}.example.com`], endpoints: [{ id: 'e', address: '127.0.0.1:9' }] })) });
    const t1 = compileRouteTable(spec(1, ['a', 'b', 'c']), reg, state);
    const [, b1, c1] = t1.routes;
    compileRouteTable(spec(2, ['a']), reg, state);
    const gone = b1.home.goneAt;
    expect(gone).toBeGreaterThan(0);
    expect(t1.routes[0].home.goneAt).toBe(0);
    // too soon: kept
    expect(state.prune(gone + 1000, true, 60_000)).toBe(0);
    // b counted a request not yet reported, c holds one in flight: both kept while metered
    b1.stats.meterFor(b1.targets[0]).count(200, false, 1, 2);
    c1.stats.inflight = 1;
    expect(state.prune(gone + 60_000, true, 60_000)).toBe(0);
    expect([...state.homes.keys()]).toEqual(['a', 'b', 'c']);
    // nobody reads meters: unreported counts hold nothing back; the request in flight still does
    expect(state.prune(gone + 60_000, false, 60_000)).toBe(1);
    expect(state.stats.has('b')).toBe(false);
    c1.stats.inflight = 0;
    expect(state.prune(gone + 60_000, true, 60_000)).toBe(1);
    expect([...state.stats.keys()]).toEqual(['a']);
    // back again: fresh counters; a later table leaving it out starts its clock again
    const t3 = compileRouteTable(spec(3, ['a', 'b']), reg, state);
    expect(t3.routes[1].stats).not.toBe(b1.stats);
    expect(t3.routes[1].home.goneAt).toBe(0);
  });
});

describe('fallback cache', () => {
  it('is bounded by entries and bytes and expires', async () => {
    const c = new FallbackCache({ enabled: true, ttlMs: 50, maxEntries: 2, maxBytes: 10_000 });
    const v = (n: number) => ({ headers: [], body: Buffer.alloc(n), storedAt: Date.now() });
    c.store('a', v(10)); c.store('b', v(10)); c.store('c', v(10));
    expect(c.size).toBe(2);
    expect(c.get('a')).toBeUndefined();
    c.store('big', v(20_000));
    expect(c.get('big')).toBeUndefined();
    expect(c.bytes).toBeLessThanOrEqual(10_000);
    await new Promise((r) => setTimeout(r, 80));
    expect(c.get('c')).toBeUndefined();
  });

  it('wants a capture for a new key, not while its entry is young, again once it is due', () => {
    // ttl 10 s → refresh period min(1 s, ttl/10) = 1 s
    const c = new FallbackCache({ enabled: true, ttlMs: 10_000, maxEntries: 10, maxBytes: 10_000 });
    const t0 = Date.now();
    expect(c.wants('h', '/a', false, '', t0)).toBe(true);
    c.store('h/a', { headers: [], body: Buffer.from('x'), storedAt: t0 });
    expect(c.wants('h', '/a', false, '', t0 + 10)).toBe(false);
    expect(c.wants('h', '/a', false, '', t0 + 999)).toBe(false);
    // another path on the same route is not held back by the first one's memo
    expect(c.wants('h', '/b', false, '', t0 + 20)).toBe(true);
    expect(c.wants('h', '/a', false, '', t0 + 1000)).toBe(true);
    // a capture that never got stored is retried after one period
    expect(c.wants('h', '/c', false, '', t0 + 1000)).toBe(true);
    expect(c.wants('h', '/c', false, '', t0 + 1500)).toBe(false);
    expect(c.wants('h', '/c', false, '', t0 + 2000)).toBe(true);
    // responses varying on Accept-Encoding are keyed with it, as they are stored
    c.store('h/v\ngzip', { headers: [], body: Buffer.from('x'), storedAt: t0 });
    expect(c.wants('h', '/v', true, 'gzip', t0 + 10)).toBe(false);
    expect(c.wants('h', '/v', true, 'br', t0 + 10)).toBe(true);
  });
});
