import { DEFAULTS, type RouteSpec, type RouteTableSpec } from '../../shared/routes/schema.js';
import { createBalancer } from '../balancing/index.js';
import type { Target } from '../balancing/target.js';
import { RouteStats } from '../metrics/route-stats.js';
import { FallbackCache, type FallbackCacheConfig } from '../resilience/fallback-cache.js';
import type { EndpointRegistry } from '../upstream/endpoint.js';
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
    readonly spec: RouteTableSpec,
    readonly routes: Route[],
    private readonly exact: Map<string, Route | Split>,
    private readonly wildcard: Map<string, Route | Split>,
    private readonly byId: Map<string, Route>,
  ) {}

  /** The route with this id in this table (a held request follows its route across swaps). */
  route(id: string): Route | undefined {
    return this.byId.get(id);
  }

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

/** State that outlives one table: stats and caches by route id. */
export class RouteState {
  readonly stats = new Map<string, RouteStats>();
  readonly caches = new Map<string, FallbackCache>();
  /** waiting requests outlive table swaps: the queue is the route id's, not one table's */
  readonly queues = new Map<string, RouteQueue>();
  /** traffic splits by host: their running weights outlive table swaps */
  splits = new Map<string, Split>();
  generation = 0;

  queue(id: string, maxEntries: number, timeoutMs: number): RouteQueue {
    let q = this.queues.get(id);
    if (q === undefined) {
      q = new RouteQueue(maxEntries, timeoutMs);
      this.queues.set(id, q);
    } else {
      q.maxEntries = maxEntries;
      q.timeoutMs = timeoutMs;
    }
    return q;
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

/** Compile a validated spec. Endpoints are shared through the registry (pools survive swaps). */
export function compileRouteTable(spec: RouteTableSpec, registry: EndpointRegistry, state: RouteState): RouteTable {
  const generation = ++state.generation;
  const exact = new Map<string, Route | Split>();
  const wildcard = new Map<string, Route | Split>();
  // hosts shared by several routes (validated: all of them carry a trafficWeight)
  const shared = new Map<string, { routes: Route[]; weights: number[] }>();
  const routes: Route[] = [];
  const byId = new Map<string, Route>();
  for (const rs of spec.routes) {
    const cbs = rs.circuitBreaker;
    const tos = rs.timeouts;
    const threshold = cbs?.consecutiveFailures ?? DEFAULTS.circuitBreaker.consecutiveFailures;
    const openMs = cbs?.openMs ?? DEFAULTS.circuitBreaker.openMs;
    const connectMs = tos?.connectMs ?? DEFAULTS.timeouts.connectMs;
    const cap = rs.concurrency?.perEndpoint ?? DEFAULTS.concurrency.perEndpoint;
    const affinity = rs.affinity === true;
    // a loop, not map(): no closure per route (a 10,000-route table is compiled on the serving thread)
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
    let stats = state.stats.get(rs.id);
    if (stats === undefined) {
      stats = new RouteStats(rs.id);
      state.stats.set(rs.id, stats);
    }
    const cc = cacheConfig(rs);
    let cache = state.caches.get(rs.id);
    if (cache === undefined || !cache.sameConfig(cc)) {
      cache = new FallbackCache(cc);
      state.caches.set(rs.id, cache);
    }
    const route: Route = {
      id: rs.id,
      hosts: rs.hosts,
      targets,
      balancer: createBalancer(rs.policy ?? DEFAULTS.policy, targets),
      cache,
      stats,
      failOn5xx: cbs?.failOn5xx ?? DEFAULTS.circuitBreaker.failOn5xx,
      headersTimeoutMs: tos?.headersMs ?? DEFAULTS.timeouts.headersMs,
      idleTimeoutMs: tos?.idleMs ?? DEFAULTS.timeouts.idleMs,
      retries: rs.retry?.attempts ?? DEFAULTS.retry.attempts,
      queue: cap > 0 || rs.wake === true ? state.queue(rs.id,
        rs.concurrency?.maxQueue ?? DEFAULTS.concurrency.maxQueue,
        rs.concurrency?.queueTimeoutMs ?? DEFAULTS.concurrency.queueTimeoutMs,
      ) : null,
      wake: rs.wake === true,
      trafficWeight: rs.trafficWeight ?? 1,
      byKey,
      auth: rs.auth === undefined ? null : new Set(rs.auth.tokens),
      pipeline: rs.pipeline ?? 1,
    };
    byId.set(rs.id, route);
    routes.push(route);
    for (const h of rs.hosts) {
      const map = h.startsWith('*.') ? wildcard : exact;
      const key = h.startsWith('*.') ? h.slice(2) : h;
      const prev = map.get(key);
      if (prev === undefined) { map.set(key, route); continue; }
      let s = shared.get(h);
      if (s === undefined) {
        const first = prev as Route;
        s = { routes: [first], weights: [first.trafficWeight] };
        shared.set(h, s);
      }
      s.routes.push(route);
      s.weights.push(route.trafficWeight);
    }
  }
  const splits = new Map<string, Split>();
  for (const [h, s] of shared) {
    const split = new Split(s.routes, s.weights, state.splits.get(h));
    splits.set(h, split);
    if (h.startsWith('*.')) wildcard.set(h.slice(2), split);
    else exact.set(h, split);
  }
  state.splits = splits;
  // Caches of removed routes are dropped; stats stay (counters must be monotonic for Prometheus).
  for (const id of state.caches.keys()) if (!byId.has(id)) state.caches.delete(id);
  for (const [id, q] of state.queues) if (!byId.has(id) && q.length === 0) state.queues.delete(id);
  return new RouteTable(spec.version, spec, routes, exact, wildcard, byId);
}
