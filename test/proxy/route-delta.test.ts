import { describe, expect, it } from 'vitest';
import type { RouteDelta, RouteSpec, RouteTableSpec } from '../../shared/routes/schema.js';
import { applyRouteDeltas } from '../../shared/routes/delta.js';
import { parseRouteDelta, RouteTableError, validateRouteTable } from '../../shared/routes/validate.js';
import { compileRouteTable, patchRouteTable, RouteState, type RouteTable } from '../../proxy/routing/table.js';
import { Split } from '../../proxy/routing/split.js';
import type { Route } from '../../proxy/routing/route.js';
import { hostOwners } from '../../shared/routes/validate.js';
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
    const next = applyRouteDeltas(base, [d(1, 2, [r('d', ['d.test'], 4), r('b', ['b.test', 'bb.test'], 5)], ['a'])]);
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

  it('a delta refused before its hosts are looked at leaves the base its host index (the next delta is not checked against the whole table again)', () => {
    const base = validateRouteTable(JSON.parse(JSON.stringify({ version: 5, routes: [r('a', ['a.test'], 1), r('b', ['b.test'], 2)] })), true);
    const index = hostOwners(base);
    expect(index).toBeDefined();
    for (const bad of [d(4, 6), d(5, 6, [], ['zz']), d(5, 6, [{ ...r('c', ['c.test'], 3), endpoints: [{ id: 'x', address: 'nope' }] }])]) {
      expect(() => applyRouteDeltas(base, [bad])).toThrow(RouteTableError);
      expect(hostOwners(base)).toBe(index);
    }
    // refused on a host (the index was being changed): dropped, and built again when needed
    expect(() => applyRouteDeltas(base, [d(5, 6, [r('c', ['a.test'], 3)])])).toThrow(/already served/);
    expect(hostOwners(base)).toBeUndefined();
    const next = applyRouteDeltas(base, [d(5, 6, [r('c', ['c.test'], 3)])]);
    expect(next.routes.map((x) => x.id)).toEqual(['a', 'b', 'c']);
    expect([...hostOwners(next)!.keys()].sort()).toEqual(['a.test', 'b.test', 'c.test']);
  });

  it('checks a delta the same whatever the order of its routes: a host may move to a route listed before the one it leaves', () => {
    const whole = (x: RouteTableSpec) => validateRouteTable(JSON.parse(JSON.stringify(x)));
    const cases: Array<[RouteTableSpec, (order: 0 | 1) => RouteDelta]> = [
      // two routes swap their hosts (a rollback of a custom domain to the older revision)
      [t(1, [r('a', ['x.test'], 1), r('b', ['y.test'], 2)]), (o) => d(1, 2, o ? [r('b', ['x.test'], 2), r('a', ['z.test'], 1)] : [r('a', ['z.test'], 1), r('b', ['x.test'], 2)])],
      [t(1, [r('a', ['x.test'], 1), r('b', ['y.test'], 2)]), (o) => d(1, 2, o ? [r('b', ['x.test'], 2), r('a', ['y.test'], 1)] : [r('a', ['y.test'], 1), r('b', ['x.test'], 2)])],
      // a split ends: the revision that keeps the host loses its weight, the other leaves it
      [t(1, [r('a', ['s.test'], 1, { trafficWeight: 1 }), r('b', ['s.test'], 2, { trafficWeight: 1 })]),
        (o) => d(1, 2, o ? [r('a', ['s.test'], 1), r('b', ['t.test'], 2, { trafficWeight: 1 })] : [r('b', ['t.test'], 2, { trafficWeight: 1 }), r('a', ['s.test'], 1)])],
      // a new route takes the host of one that is removed
      [t(1, [r('a', ['x.test'], 1)]), () => d(1, 2, [r('n', ['x.test'], 3)], ['a'])],
    ];
    for (const [base, delta] of cases) {
      for (const order of [0, 1] as const) {
        const made = applyRouteDeltas(t(base.version, base.routes), [delta(order)]);
        expect(whole(made).routes).toEqual(made.routes);
      }
    }
    // and what a whole check refuses, either order
    for (const order of [0, 1] as const) {
      const base = t(1, [r('a', ['x.test'], 1), r('b', ['y.test'], 2)]);
      const up = [r('a', ['x.test', 'y.test'], 1), r('b', ['y.test'], 3)];
      expect(() => applyRouteDeltas(base, [d(1, 2, order ? up.reverse() : up)])).toThrow(/"y\.test" is already served by route/);
    }
  });

  it('holds a table a delta makes to the schema\'s 200,000 routes', () => {
    const base = t(1, Array.from({ length: 200_000 }, (_, i) => r(`r${i}`, [`h${i}.test`], 1000)));
    const t0 = Date.now();
    expect(() => applyRouteDeltas(base, [d(1, 2, [r('one-more', ['more.test'], 1)])])).toThrow(/has 200001 routes; at most 200000/);
    expect(applyRouteDeltas(base, [d(1, 2, [r('one-more', ['more.test'], 1)], ['r0'])]).routes).toHaveLength(200_000);
    expect(Date.now() - t0).toBeLessThan(20_000);
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

describe('patching a table by a delta (patchRouteTable)', () => {
  /** what a table serves, host by host: a route id, or a split's ids and weights; and its routes and endpoints */
  const served = (table: RouteTable, registry: EndpointRegistry) => {
    const entry = (e: Route | Split) => (e instanceof Split ? `split(${e.signature})` : e.id);
    return {
      exact: Object.fromEntries([...table.exact].map(([h, e]) => [h, entry(e)]).sort()),
      wildcard: Object.fromEntries([...table.wildcard].map(([h, e]) => [h, entry(e)]).sort()),
      routes: table.routes.map((r) => r.id).sort(),
      endpoints: Object.fromEntries([...registry.byAddress].map(([a, ep]) => [a, ep.refs]).sort()),
    };
  };

  it('serves what compiling the whole table would, delta after delta (splits, wildcards, shared endpoints, routes coming and going)', () => {
    // a small deterministic PRNG (the same sequence every run)
    let seed = 12345;
    const rnd = (n: number) => ((seed = (seed * 1103515245 + 12345) >>> 0) >>> 8) % n;
    const apps = ['a', 'b', 'c', 'd', 'e', 'f'];
    /** a route of app `app` (revision `rev`): split apps' revisions carry a weight */
    const make = (app: string, rev: number, split: boolean): RouteSpec => ({
      id: `${app}-${rev}`,
      hosts: split || rev % 2 === 0 ? [`${app}.test`, `*.${app}.test`] : [`${app}.test`],
      endpoints: Array.from({ length: 1 + rnd(3) }, (_, i) => ({ id: `e${i}`, address: `127.0.0.1:${1000 + rnd(6)}` })),
      ...(split ? { trafficWeight: 1 + rnd(9) } : {}),
    });
    // app → its routes now (several only when split)
    const now = new Map<string, RouteSpec[]>();
    let rev = 0;
    for (const app of apps.slice(0, 4)) now.set(app, [make(app, ++rev, false)]);
    let spec = t(1, [...now.values()].flat());
    const registry = new EndpointRegistry({ connections: 4, keepAliveTimeoutMs: 1000, connectMs: 1000 });
    const state = new RouteState();
    let table = compileRouteTable(spec, registry, state);
    registry.sweep(state.generation);
    for (let step = 0; step < 1000; step++) {
      const upsert: RouteSpec[] = [];
      const remove: string[] = [];
      const app = apps[rnd(apps.length)];
      const have = now.get(app) ?? [];
      const what = rnd(6);
      const plain = (x: string) => (now.get(x) ?? []).length === 1 && now.get(x)![0].trafficWeight === undefined;
      if (what === 5 && plain(app)) {
        // a custom domain moves to this app from whichever plain app has it: both routes in one
        // delta, in either order
        const from = [...now.keys()].find((x) => x !== app && now.get(x)!.some((y) => y.hosts.includes('moving.test')));
        const to = { ...now.get(app)![0], hosts: [...now.get(app)![0].hosts.filter((h) => h !== 'moving.test'), 'moving.test'] };
        const moves = [to];
        if (from !== undefined) {
          const left = { ...now.get(from)![0], hosts: now.get(from)![0].hosts.filter((h) => h !== 'moving.test') };
          moves.push(left);
          now.set(from, [left]);
        }
        now.set(app, [to]);
        upsert.push(...(rnd(2) === 0 ? moves : moves.reverse()));
      } else if (what === 5) {
        continue;
      } else if (have.length === 0) {
        // a new app, split from the start or not
        const split = rnd(2) === 0;
        const rs = split ? [make(app, ++rev, true), make(app, ++rev, true)] : [make(app, ++rev, false)];
        upsert.push(...rs);
        now.set(app, rs);
      } else if (what === 0) {
        // the app goes
        remove.push(...have.map((r) => r.id));
        now.delete(app);
      } else if (what === 1 && have[0].trafficWeight !== undefined) {
        // a split gains a revision, or loses one
        if (have.length > 2 && rnd(2) === 0) {
          const [gone, ...rest] = have;
          remove.push(gone.id);
          now.set(app, rest);
        } else {
          const r = make(app, ++rev, true);
          upsert.push(r);
          now.set(app, [...have, r]);
        }
      } else {
        // a revision's instances, weight or hosts change: the same id, a new spec
        const i = rnd(have.length);
        const keep = have[i].hosts.includes('moving.test') ? ['moving.test'] : [];
        const r = { ...make(app, 0, have[i].trafficWeight !== undefined), id: have[i].id, hosts: [...(rnd(2) === 0 ? [`${app}.test`] : [`*.${app}.test`, `${app}.test`]), ...keep] };
        upsert.push(r);
        now.set(app, have.map((x, k) => (k === i ? r : x)));
      }
      const delta = d(spec.version, spec.version + 1, JSON.parse(JSON.stringify(upsert)) as RouteSpec[], remove);
      const next = applyRouteDeltas(spec, [delta]);
      const changed = new Map<string, RouteSpec | null>([...delta.upsert.map((r) => [r.id, r] as const), ...remove.map((id) => [id, null] as const)]);
      table = patchRouteTable(table, next.version, changed, hostOwners(next)!, registry, state);
      spec = next;
      // the same table compiled whole, from nothing
      const fresh = new EndpointRegistry({ connections: 4, keepAliveTimeoutMs: 1000, connectMs: 1000 });
      const whole = compileRouteTable(t(spec.version, spec.routes), fresh, new RouteState());
      fresh.sweep(1);
      expect(served(table, registry), `step ${step}`).toEqual(served(whole, fresh));
      expect(table.version).toBe(spec.version);
    }
    // every endpoint of a route that left drained (none in flight here): none kept past its last route
    expect(registry.draining.size).toBe(0);
  });

  it('an id a batch of deltas adds and removes again leaves nothing behind', () => {
    const registry = new EndpointRegistry({ connections: 4, keepAliveTimeoutMs: 1000, connectMs: 1000 });
    const state = new RouteState();
    const base = t(1, [r('a', ['a.test'], 1)]);
    const t1 = compileRouteTable(base, registry, state);
    const members = state.members;
    const deltas = [d(1, 2, [r('tmp', ['tmp.test'], 2)]), d(2, 3, [], ['tmp'])];
    const next = applyRouteDeltas(base, deltas);
    const t2 = patchRouteTable(t1, 3, new Map([['tmp', null]]), hostOwners(next)!, registry, state);
    expect(t2.routes.map((x) => x.id)).toEqual(['a']);
    expect(state.homes.has('tmp')).toBe(false);
    expect(state.members).toBe(members);
  });

  it('a split that goes on across a patch keeps its running weights; the routes it does not name keep theirs', () => {
    const registry = new EndpointRegistry({ connections: 4, keepAliveTimeoutMs: 1000, connectMs: 1000 });
    const state = new RouteState();
    const base = t(1, [r('a1', ['a.test'], 1, { trafficWeight: 90 }), r('a2', ['a.test'], 2, { trafficWeight: 10 }), r('b', ['b.test'], 3)]);
    const t1 = compileRouteTable(base, registry, state);
    const picks = Array.from({ length: 5 }, () => t1.lookup('a.test')!.id);
    const next = applyRouteDeltas(base, [d(1, 2, [r('c', ['c.test'], 4)])]);
    const t2 = patchRouteTable(t1, 2, new Map([['c', next.routes[3]]]), hostOwners(next)!, registry, state);
    // the split is the same object, so it carries on where it was (90/10 over every 10 picks)
    const more = Array.from({ length: 5 }, () => t2.lookup('a.test')!.id);
    expect([...picks, ...more].filter((x) => x === 'a2')).toHaveLength(1);
    expect(t2.lookup('b.test')).toBe(t1.lookup('b.test'));
    expect(t2.lookup('c.test')!.id).toBe('c');
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
