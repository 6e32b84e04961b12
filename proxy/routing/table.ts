import { DEFAULTS, type RouteSpec, type RouteTableSpec } from '../../shared/routes/schema.js';
import { createBalancer } from '../balancing/index.js';
import type { Target } from '../balancing/target.js';
import { RouteStats } from '../metrics/route-stats.js';
import { FallbackCache, type FallbackCacheConfig } from '../resilience/fallback-cache.js';
import type { Endpoint, EndpointRegistry } from '../upstream/endpoint.js';
import type { HostOwners } from '../../shared/routes/validate.js';
import { RouteQueue } from './queue.js';
import type { Route } from './route.js';
import { Split } from './split.js';

/**
 * An immutable compiled route table. Lookup: exact host first, then the longest `*.` wildcard
 * suffix (any depth: `*.example.com` matches `a.b.example.com`, not `example.com`).
 */
export class RouteTable {
  constructor(
    readonly version: number,
    readonly routes: Route[],
    /** (patchRouteTable hands them on to the next table) */
    readonly exact: Map<string, Route | Split>,
    readonly wildcard: Map<string, Route | Split>,
  ) {}

  /**
   * `host` must already be normalised. A host split between revisions picks one per call (the one
   * the session-affinity cookie `key` names, when it is in the split).
   */
  lookup(host: string, key = ''): Route | undefined {
    const r = this.entry(host);
    return r instanceof Split ? r.stick(key) : r;
  }

  /** What serves `host`: a route, or a split between routes (the caller picks). */
  entry(host: string): Route | Split | undefined {
    const r = this.exact.get(host);
    if (r !== undefined) return r;
    if (this.wildcard.size === 0) return undefined;
    let i = host.indexOf('.');
    while (i !== -1) {
      const w = this.wildcard.get(host.slice(i + 1));
      if (w !== undefined) return w;
      i = host.indexOf('.', i + 1);
    }
    return undefined;
  }
}

/**
 * What a route id keeps across tables: its counters (monotonic for Prometheus while the id comes
 * and goes), its fallback cache and the queue of requests waiting for it. One Map lookup per route per compile finds all
 * of them (a 10,000-route table is compiled on the serving thread).
 */
export class RouteHome {
  cache: FallbackCache | null = null;
  /** waiting requests outlive table swaps: the queue is the route id's, not one table's */
  queue: RouteQueue | null = null;
  /** this id's route in the newest table; null while no table has it (a held request follows it) */
  route: Route | null = null;
  /** the spec `route` was compiled from: the same object in the next table means the same route */
  spec: RouteSpec | null = null;
  /** where `route` is in its table's `routes` (a patch replaces or removes it there) */
  index = -1;
  /** the last compile (RouteState.generation) that had this id */
  seen = 0;
  /** when a table first left this id out (clock ms; 0 while it is in the table) */
  goneAt = 0;
  constructor(readonly stats: RouteStats) {}

  queueWith(maxEntries: number, timeoutMs: number): RouteQueue {
    const q = this.queue;
    if (q === null) return (this.queue = new RouteQueue(maxEntries, timeoutMs));
    q.maxEntries = maxEntries;
    q.timeoutMs = timeoutMs;
    return q;
  }
}

/** A route id out of the table this long, with nothing left to count or report, is forgotten. */
export const ROUTE_FORGET_MS = 10 * 60_000;

/** State that outlives one table, by route id. */
export class RouteState {
  readonly homes = new Map<string, RouteHome>();
  /** every route id's stats, removed routes' included until they are forgotten (prune) */
  readonly stats = new Map<string, RouteStats>();
  /** traffic splits by host: their running weights outlive table swaps */
  splits = new Map<string, Split>();
  generation = 0;
  /** bumped whenever a route id's stats come or go (the reporter's id list is kept until it changes) */
  members = 0;

  home(id: string): RouteHome {
    let h = this.homes.get(id);
    if (h === undefined) {
      const stats = new RouteStats(id);
      h = new RouteHome(stats);
      this.homes.set(id, h);
      this.stats.set(id, stats);
      this.members++;
    }
    return h;
  }

  /**
   * Forget route ids out of the table for `forgetMs` that hold no request, no waiting request and,
   * when `metered` (metering is read), no count not yet reported. Without this, every revision
   * ever deployed kept its home, counters and Prometheus series for the life of the process. A
   * forgotten id that comes back starts its counters at zero (a reset Prometheus handles).
   */
  prune(now: number, metered: boolean, forgetMs = ROUTE_FORGET_MS): number {
    let n = 0;
    for (const [id, h] of this.homes) {
      if (h.route !== null || h.queue !== null || h.goneAt === 0 || now - h.goneAt < forgetMs || !h.stats.settled(metered)) continue;
      this.homes.delete(id);
      this.stats.delete(id);
      this.members++;
      n++;
    }
    return n;
  }
}

/** The fallback cache settings of a route that names none (most): one object for all of them. */
const DEFAULT_CACHE_CONFIG: FallbackCacheConfig = Object.freeze({ ...DEFAULTS.fallbackCache });

function cacheConfig(spec: RouteSpec): FallbackCacheConfig {
  if (spec.fallbackCache === undefined) return DEFAULT_CACHE_CONFIG;
  const c = spec.fallbackCache;
  const d = DEFAULTS.fallbackCache;
  return {
    enabled: c.enabled ?? d.enabled,
    ttlMs: c.ttlMs ?? d.ttlMs,
    maxEntries: c.maxEntries ?? d.maxEntries,
    maxBytes: c.maxBytes ?? d.maxBytes,
  };
}

/** An endpoint id as a cookie value: URI-encoded, or base64url when it is not valid UTF-16 (never throws). */
function cookieKey(id: string): string {
  try {
    return encodeURIComponent(id);
  } catch {
    return 'b64.' + Buffer.from(id).toString('base64url');
  }
}

/**
 * Compile a validated spec. Endpoints are shared through the registry (pools survive swaps).
 *
 * A 10,000-route table is compiled on the serving thread while it serves, so this is written for
 * a JIT that sees it seldom: one small function per route (cheap to optimise, never inlined into
 * one giant loop), one Map lookup per route (its RouteHome), one Map write per host.
 */
export function compileRouteTable(spec: RouteTableSpec, registry: EndpointRegistry, state: RouteState): RouteTable {
  const generation = ++state.generation;
  registry.recount();
  const exact = new Map<string, Route | Split>();
  const wildcard = new Map<string, Route | Split>();
  // hosts shared by several routes (validated: all of them carry a trafficWeight)
  let shared: Map<string, { routes: Route[]; weights: number[] }> | null = null;
  const specs = spec.routes;
  const routes: Route[] = new Array<Route>(specs.length);
  for (let i = 0; i < specs.length; i++) {
    const rs = specs[i];
    const home = state.home(rs.id);
    const route = compileRoute(rs, registry, home, generation);
    home.index = i;
    routes[i] = route;
    // validated: a host is shared only by routes that all carry a trafficWeight
    if (rs.trafficWeight === undefined) addHosts(route, exact, wildcard);
    else shared = addSharedHosts(route, exact, wildcard, shared ?? new Map());
  }
  const splits = new Map<string, Split>();
  if (shared !== null) {
    for (const [h, s] of shared) {
      const split = new Split(s.routes, s.weights, state.splits.get(h));
      splits.set(h, split);
      if (h.startsWith('*.')) wildcard.set(h.slice(2), split);
      else exact.set(h, split);
    }
  }
  state.splits = splits;
  // Routes no longer in the table: their caches go, empty queues too; stats stay a while
  // (RouteState.prune). A queue still holding requests is the data plane's to rehome.
  let now = 0;
  for (const h of state.homes.values()) {
    if (h.seen === generation) continue;
    if (h.goneAt === 0) h.goneAt = now === 0 ? (now = Date.now()) : now;
    h.route = null;
    h.spec = null;
    h.cache = null;
    if (h.queue !== null && h.queue.length === 0) h.queue = null;
  }
  return new RouteTable(spec.version, routes, exact, wildcard);
}

function compileRoute(rs: RouteSpec, registry: EndpointRegistry, home: RouteHome, generation: number): Route {
  if (home.spec === rs && home.route !== null) return keepRoute(home.route, home, generation);
  const cbs = rs.circuitBreaker;
  const tos = rs.timeouts;
  const threshold = cbs?.consecutiveFailures ?? DEFAULTS.circuitBreaker.consecutiveFailures;
  const openMs = cbs?.openMs ?? DEFAULTS.circuitBreaker.openMs;
  const connectMs = tos?.connectMs ?? DEFAULTS.timeouts.connectMs;
  const cap = rs.concurrency?.perEndpoint ?? DEFAULTS.concurrency.perEndpoint;
  const affinity = rs.affinity === true;
  // a loop, not map(): no closure per route
  const targets: Target[] = [];
  for (const e of rs.endpoints) {
    targets.push({
      id: e.id,
      endpoint: registry.get(e.address, threshold, openMs, connectMs, generation),
      weight: e.weight ?? 1,
      current: 0,
      cap,
      key: affinity ? cookieKey(e.id) : '',
    });
  }
  let byKey: Map<string, Target> | null = null;
  if (affinity) {
    byKey = new Map();
    for (const t of targets) if (!byKey.has(t.key)) byKey.set(t.key, t);
  }
  const cc = cacheConfig(rs);
  let cache = home.cache;
  if (cache === null || !cache.sameConfig(cc)) home.cache = cache = new FallbackCache(cc);
  const route: Route = {
    id: rs.id,
    hosts: rs.hosts,
    targets,
    balancer: createBalancer(rs.policy ?? DEFAULTS.policy, targets),
    cache,
    stats: home.stats,
    home,
    failOn5xx: cbs?.failOn5xx ?? DEFAULTS.circuitBreaker.failOn5xx,
    headersTimeoutMs: tos?.headersMs ?? DEFAULTS.timeouts.headersMs,
    idleTimeoutMs: tos?.idleMs ?? DEFAULTS.timeouts.idleMs,
    retries: rs.retry?.attempts ?? DEFAULTS.retry.attempts,
    queue: cap > 0 || rs.wake === true ? home.queueWith(
      rs.concurrency?.maxQueue ?? DEFAULTS.concurrency.maxQueue,
      rs.concurrency?.queueTimeoutMs ?? DEFAULTS.concurrency.queueTimeoutMs,
    ) : null,
    wake: rs.wake === true,
    trafficWeight: rs.trafficWeight ?? 1,
    byKey,
    auth: rs.auth === undefined ? null : new Set(rs.auth.tokens),
    pipeline: rs.pipeline ?? 1,
  };
  home.route = route;
  home.spec = rs;
  home.seen = generation;
  home.goneAt = 0;
  return route;
}

/**
 * A route whose spec is the very object it was compiled from (a table made by a delta keeps the
 * routes it does not change: shared/routes/delta.ts): kept as it is, balancer state and all; its
 * endpoints are marked as still in use. A one-route change to a 10,000-route table costs a Map
 * write per host, not 10,000 routes built again.
 */
function keepRoute(route: Route, home: RouteHome, generation: number): Route {
  const targets = route.targets;
  for (let i = 0; i < targets.length; i++) {
    const ep = targets[i].endpoint;
    ep.generation = generation;
    ep.refs++;
  }
  home.seen = generation;
  home.goneAt = 0;
  return route;
}

/**
 * The table after a change to a few routes (a delta), made of `prev` in place: `changed` names
 * each route id the change touched with its spec now (null: removed), `owners` is the new spec's
 * host index (shared/routes/validate.ts HostOwners). Only those routes are compiled, only their
 * hosts' entries written, only their endpoints counted: a one-route change to a 10,000-route
 * table costs about what one route does. `prev`'s maps and routes array become the new table's
 * (the swap is one synchronous step: no request sees half of it); `prev` is not to be used again.
 * (An endpoint address that routes with different breaker or connect settings share takes those
 * of the route compiled last: in a patch, the changed one's.)
 */
export function patchRouteTable(
  prev: RouteTable,
  version: number,
  changed: ReadonlyMap<string, RouteSpec | null>,
  owners: HostOwners,
  registry: EndpointRegistry,
  state: RouteState,
): RouteTable {
  const generation = ++state.generation;
  const routes = prev.routes;
  // the host entries whose route or split may have changed (as listed: `*.x` for a wildcard)
  const touched = new Set<string>();
  // endpoints of the routes leaving: counted down once the new ones are counted up (one that
  // stays in use moves to no drain)
  const released: Endpoint[] = [];
  let now = 0;
  for (const [id, rs] of changed) {
    // (an id a batch added and removed again never had a home here: none is made for it)
    const home = rs === null ? state.homes.get(id) : state.home(id);
    if (home === undefined) continue;
    const old = home.route;
    if (old !== null && home.spec === rs) continue;
    if (old !== null) {
      for (const h of old.hosts) touched.add(h);
      for (const t of old.targets) released.push(t.endpoint);
    }
    if (rs === null) {
      if (old === null) continue;
      // out of the table: as compileRouteTable does with an id it no longer has
      const last = routes.pop()!;
      if (last !== old) {
        routes[home.index] = last;
        last.home.index = home.index;
      }
      home.index = -1;
      home.route = null;
      home.spec = null;
      home.cache = null;
      if (home.goneAt === 0) home.goneAt = now === 0 ? (now = Date.now()) : now;
      if (home.queue !== null && home.queue.length === 0) home.queue = null;
      continue;
    }
    const route = compileRoute(rs, registry, home, generation);
    for (const h of rs.hosts) touched.add(h);
    if (old !== null) routes[home.index] = route;
    else {
      home.index = routes.length;
      routes.push(route);
    }
  }
  for (const ep of released) registry.release(ep);
  registry.pruneDraining();
  const exact = prev.exact;
  const wildcard = prev.wildcard;
  for (const h of touched) {
    const star = h.charCodeAt(0) === 42 /* * */ && h.charCodeAt(1) === 46; /* . */
    const map = star ? wildcard : exact;
    const key = star ? h.slice(2) : h;
    const o = owners.get(h);
    if (o === undefined) {
      map.delete(key);
      state.splits.delete(h);
    } else if (!Array.isArray(o)) {
      map.set(key, state.homes.get(o.id)!.route!);
      state.splits.delete(h);
    } else {
      const rs = o.map((x) => state.homes.get(x.id)!.route!);
      const split = new Split(rs, o.map((x) => x.trafficWeight ?? 1), state.splits.get(h));
      state.splits.set(h, split);
      map.set(key, split);
    }
  }
  return new RouteTable(version, routes, exact, wildcard);
}

/** A route that shares none of its hosts: one write each (`*.x` is kept as its suffix `x`). */
function addHosts(route: Route, exact: Map<string, Route | Split>, wildcard: Map<string, Route | Split>): void {
  const hosts = route.hosts;
  for (let i = 0; i < hosts.length; i++) {
    const h = hosts[i];
    if (h.charCodeAt(0) === 42 /* * */ && h.charCodeAt(1) === 46 /* . */) wildcard.set(h.slice(2), route);
    else exact.set(h, route);
  }
}

/** A route with a trafficWeight: hosts it shares with other routes become splits. */
function addSharedHosts(
  route: Route,
  exact: Map<string, Route | Split>,
  wildcard: Map<string, Route | Split>,
  shared: Map<string, { routes: Route[]; weights: number[] }>,
): Map<string, { routes: Route[]; weights: number[] }> {
  for (const h of route.hosts) {
    const map = h.startsWith('*.') ? wildcard : exact;
    const key = h.startsWith('*.') ? h.slice(2) : h;
    const prev = map.get(key);
    if (prev === undefined) {
      map.set(key, route);
      continue;
    }
    let s = shared.get(h);
    if (s === undefined) {
      const first = prev as Route;
      s = { routes: [first], weights: [first.trafficWeight] };
      shared.set(h, s);
    }
    s.routes.push(route);
    s.weights.push(route.trafficWeight);
  }
  return shared;
}
