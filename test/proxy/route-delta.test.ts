import { describe, expect, it } from 'vitest';
import type { RouteDelta, RouteSpec, RouteTableSpec } from '../../shared/routes/schema.js';
import { applyRouteDeltas, mergeRouteDelta } from '../../shared/routes/delta.js';
import { parseRouteDelta, RouteTableError, validateRouteTable } from '../../shared/routes/validate.js';
import { compileRouteTable, RouteState } from '../../proxy/routing/table.js';
import { EndpointRegistry } from '../../proxy/upstream/endpoint.js';
import { RouteEvents } from '../../control-plane/discovery/route-events.js';

const r = (id: string, hosts: string[], port: number, extra: Partial<RouteSpec> = {}): RouteSpec =>
  ({ id, hosts, endpoints: [{ id: `${id}-e`, address: `127.0.0.1:${port}` }], ...extra });
const t = (version: number, routes: RouteSpec[]): RouteTableSpec => validateRouteTable(JSON.parse(JSON.stringify({ version, routes })));
const d = (base: number, version: number, upsert: RouteSpec[] = [], remove: string[] = []): RouteDelta => ({ base, version, upsert, remove });

describe('route deltas (shared/routes/delta.ts)', () => {
  it('keeps the base order and its route objects, changes in place, appends new ones, and leaves the base alone', () => {
    const base = t(1, [r('a', ['a.test'], 1), r('b', ['b.test'], 2), r('c', ['c.test'], 3)]);
    const copy = JSON.stringify(base);
    const next = mergeRouteDelta(base, d(1, 2, [r('d', ['d.test'], 4), r('b', ['b.test', 'bb.test'], 5)], ['a']));
    expect(next.version).toBe(2);
    expect(next.routes.map((x) => x.id)).toEqual(['b', 'c', 'd']);
    expect(next.routes[1]).toBe(base.routes[2]);
    expect(next.routes[0].hosts).toEqual(['b.test', 'bb.test']);
    expect(JSON.stringify(base)).toBe(copy);
  });

  it('refuses a delta that does not fit its base, naming why', () => {
    const base = t(5, [r('a', ['a.test'], 1), r('b', ['b.test'], 2)]);
    const refused = (deltas: RouteDelta[]) => {
      try {
        applyRouteDeltas(base, deltas);
      } catch (e) {
        expect(e).toBeInstanceOf(RouteTableError);
        return (e as Error).message;
      }
      throw new Error('applied');
    };
    expect(refused([d(4, 6)])).toMatch(/from version 4; the table here is version 5/);
    expect(refused([d(5, 6), d(5, 7)])).toMatch(/from version 5; the table here is version 6/);
    expect(refused([d(5, 6, [], ['zz'])])).toMatch(/remove\.0 "zz" is not a route of version 5/);
    expect(refused([d(5, 6, [r('a', ['a.test'], 3)], ['a'])])).toMatch(/remove\.0 "a" is also in upsert/);
    expect(refused([d(5, 6, [r('c', ['c.test'], 3), r('c', ['c2.test'], 3)])])).toMatch(/upsert\.1\.id "c" is named twice/);
    // the table the deltas make is checked whole: a host another route serves
    expect(refused([d(5, 6, [r('c', ['A.test'], 3)])])).toMatch(/"a\.test" is already served by route "a"/);
    // ... also across two deltas
    expect(refused([d(5, 6, [r('c', ['c.test'], 3)]), d(6, 7, [r('b', ['c.test'], 3)])])).toMatch(/already served/);
    // a new route is checked as in a whole table (its address, its hosts)
    expect(refused([d(5, 6, [{ ...r('c', ['c.test'], 3), endpoints: [{ id: 'x', address: 'nope' }] }])])).toMatch(/endpoints\.0\.address "nope" must be host:port/);
    expect(refused([d(5, 6, [r('c', ['bad host'], 3)])])).toMatch(/"bad host" is not a valid hostname/);
    // a removed host may be taken in the same delta; hosts come out normalised
    const ok = applyRouteDeltas(base, [d(5, 6, [r('c', ['A.TEST.'], 3)], ['a'])]);
    expect(ok.routes.map((x) => [x.id, x.hosts])).toEqual([['b', ['b.test']], ['c', ['a.test']]]);
  });

  it('parses only what its schema says', () => {
    expect(parseRouteDelta('{"base":1,"version":2,"upsert":[],"remove":[]}')).toEqual(d(1, 2));
    for (const [text, why] of [
      ['not json', /route delta is not valid JSON/],
      ['{"base":1,"version":2,"upsert":[{"id":1}],"remove":[]}', /upsert\.0/],
      ['{"base":1,"version":2,"upsert":[],"remove":[""]}', /remove\.0/],
      ['{"base":-1,"version":2,"upsert":[],"remove":[]}', /base/],
      ['{"base":1,"version":2,"upsert":[]}', /remove/],
      ['{"base":1,"version":2,"upsert":[],"remove":[],"routes":[]}', /unknown property "routes"/],
    ] as const) expect(() => parseRouteDelta(text), text).toThrow(why);
  });
});

describe('compiling a table a delta made (proxy/routing/table.ts)', () => {
  it('keeps the compiled route of every spec object it had (balancer state and all) and builds the changed ones', () => {
    const registry = new EndpointRegistry({ connections: 4, keepAliveTimeoutMs: 1000, connectMs: 1000 });
    const state = new RouteState();
    const base = t(1, [r('a', ['a.test'], 1), r('b', ['b.test'], 2), r('c', ['c.test'], 3)]);
    const t1 = compileRouteTable(base, registry, state);
    registry.sweep(state.generation);
    const next = applyRouteDeltas(base, [d(1, 2, [r('b', ['b.test'], 4)], ['c'])]);
    const t2 = compileRouteTable(next, registry, state);
    registry.sweep(state.generation);
    expect(t2.lookup('a.test')).toBe(t1.lookup('a.test'));
    expect(t2.lookup('b.test')).not.toBe(t1.lookup('b.test'));
    expect(t2.lookup('b.test')!.targets[0].endpoint.address).toBe('127.0.0.1:4');
    expect(t2.lookup('c.test')).toBeUndefined();
    // the kept route's endpoint is still in use; the changed and removed routes' ones drain
    expect([...registry.byAddress.keys()].sort()).toEqual(['127.0.0.1:1', '127.0.0.1:4']);
    expect(state.homes.get('c')!.goneAt).toBeGreaterThan(0);
    // a whole table (new objects, even if equal) is compiled whole; a route that left and came back too
    const t3 = compileRouteTable(t(3, [r('a', ['a.test'], 1)]), registry, state);
    expect(t3.lookup('a.test')).not.toBe(t2.lookup('a.test'));
    expect(t3.lookup('a.test')!.targets[0].endpoint).toBe(t2.lookup('a.test')!.targets[0].endpoint);
  });
});

describe('route watch events (control-plane/discovery/route-events.ts)', () => {
  const events = new RouteEvents((table) => table);
  const data = (text: string) => JSON.parse(/^data: (.*)$/m.exec(text)![1]) as Record<string, unknown>;

  it('sends what changed, and the whole table when a delta would not be much smaller', () => {
    const routes = Array.from({ length: 10 }, (_, i) => r(`r${i}`, [`h${i}.test`], 1000 + i));
    const v1 = t(1, routes);
    const v2 = t(2, [...routes.slice(1, 9).map((x, i) => (i === 0 ? { ...x, hosts: ['moved.test'] } : x)), r('new', ['new.test'], 7)]);
    const text = events.delta(v1, v2, 0)!;
    expect(text.startsWith('event: delta\n')).toBe(true);
    expect(data(text)).toEqual({ base: 1, version: 2, upsert: [v2.routes[0], v2.routes[8]], remove: ['r0', 'r9'] });
    // one text per pair of tables and features
    expect(events.delta(v1, v2, 0)).toBe(text);
    // the applied delta is the table the control plane would send whole
    expect(applyRouteDeltas(v1, [data(text) as unknown as RouteDelta]).routes.map((x) => x.id).sort()).toEqual(v2.routes.map((x) => x.id).sort());
    expect(data(events.table(v2, 0))).toEqual(v2);
    // more than half changed, or not newer: null (the caller sends the whole table)
    expect(events.delta(v1, t(3, routes.slice(0, 4)), 0)).toBeNull();
    expect(events.delta(v2, v1, 0)).toBeNull();
  });
});
