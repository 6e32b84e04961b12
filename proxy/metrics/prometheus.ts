import { LATENCY_BUCKETS, type RouteStats } from './route-stats.js';
import { globalStats } from './route-stats.js';
import type { EndpointRegistry } from '../upstream/endpoint.js';
import type { RouteTable } from '../routing/table.js';

/** A snapshot of one thread's counters: plain data, safe to post between worker threads. */
export interface StatsSnapshot {
  global: typeof globalStats;
  routes: Array<{
    id: string; requests: number; inflight: number; byClass: number[]; errors: number; fallbackHits: number;
    retries: number; resent: number; staleResent: number; refused: number; concurrency: number; buckets: number[]; sum: number; count: number; cacheEntries: number; cacheBytes: number;
  }>;
  endpoints: Array<{ address: string; inflight: number; requests: number; failures: number; state: string; opens: number }>;
}

export function snapshot(stats: Iterable<RouteStats>, table: RouteTable | null, registry: EndpointRegistry): StatsSnapshot {
  registry.pruneDraining();
  const now = Date.now();
  const caches = new Map<string, { size: number; bytes: number }>();
  if (table) for (const r of table.routes) caches.set(r.id, { size: r.cache.size, bytes: r.cache.bytes });
  return {
    global: { ...globalStats },
    routes: [...stats].map((s) => ({
      id: s.id, requests: s.requests, inflight: s.inflight, byClass: [...s.byClass], errors: s.errors,
      fallbackHits: s.fallbackHits, retries: s.retries, resent: s.resent, staleResent: s.staleResent, refused: s.refused, concurrency: s.concurrency, buckets: [...s.latencyBuckets], sum: s.latencySum,
      count: s.latencyCount, cacheEntries: caches.get(s.id)?.size ?? 0, cacheBytes: caches.get(s.id)?.bytes ?? 0,
    })),
    endpoints: [
      ...[...registry.byAddress.values()].map((e) => ({
        address: e.address, inflight: e.inflight, requests: e.requests, failures: e.failures,
        state: e.breaker.stateName(now), opens: e.breaker.opens,
      })),
      ...[...registry.draining.values()].map((e) => ({
        address: e.address, inflight: e.inflight, requests: e.requests, failures: e.failures,
        state: 'draining', opens: e.breaker.opens,
      })),
    ],
  };
}

const STATE_RANK: Record<string, number> = { closed: 0, half_open: 1, open: 2, draining: 3 };

/** Of one endpoint's states on two worker threads, the one to report: the worse (draining worst). */
export function worseState(a: string, b: string): string {
  return (STATE_RANK[b] ?? 0) > (STATE_RANK[a] ?? 0) ? b : a;
}

/** Merge snapshots of several worker threads (sum counters; breaker state: worst wins). */
export function merge(snaps: StatsSnapshot[]): StatsSnapshot {
  if (snaps.length === 1) return snaps[0];
  const out: StatsSnapshot = { global: { requests: 0, noRoute: 0, badRequest: 0, notReady: 0, inflight: 0 }, routes: [], endpoints: [] };
  const routes = new Map<string, StatsSnapshot['routes'][number]>();
  const eps = new Map<string, StatsSnapshot['endpoints'][number]>();
  for (const s of snaps) {
    for (const k of Object.keys(out.global) as Array<keyof typeof globalStats>) out.global[k] += s.global[k];
    for (const r of s.routes) {
      const m = routes.get(r.id);
      if (!m) { routes.set(r.id, { ...r, byClass: [...r.byClass], buckets: [...r.buckets] }); continue; }
      m.requests += r.requests; m.inflight += r.inflight; m.errors += r.errors; m.fallbackHits += r.fallbackHits;
      m.retries += r.retries; m.resent += r.resent; m.staleResent += r.staleResent; m.refused += r.refused; m.concurrency += r.concurrency; m.sum += r.sum; m.count += r.count; m.cacheEntries += r.cacheEntries; m.cacheBytes += r.cacheBytes;
      r.byClass.forEach((v, i) => (m.byClass[i] += v));
      r.buckets.forEach((v, i) => (m.buckets[i] += v));
    }
    for (const e of s.endpoints) {
      const m = eps.get(e.address);
      if (!m) { eps.set(e.address, { ...e }); continue; }
      m.inflight += e.inflight; m.requests += e.requests; m.failures += e.failures; m.opens += e.opens;
      m.state = worseState(m.state, e.state);
    }
  }
  out.routes = [...routes.values()];
  out.endpoints = [...eps.values()];
  return out;
}

function esc(v: string): string {
  return v.replace(/\\/g, '\\\\').replace(/"/g, '\\"').replace(/\n/g, '\\n');
}

export function formatPrometheus(s: StatsSnapshot, tableVersion: number | null): string {
  const L: string[] = [];
  const classes = ['', '1xx', '2xx', '3xx', '4xx', '5xx'];
  L.push('# HELP berth_proxy_requests_total Requests by route and response status class.');
  L.push('# TYPE berth_proxy_requests_total counter');
  for (const r of s.routes) {
    for (let c = 1; c <= 5; c++) L.push(`berth_proxy_requests_total{route="${esc(r.id)}",class="${classes[c]}"} ${r.byClass[c]}`);
    if (r.byClass[0] > 0 || r.byClass.length > 6) L.push(`berth_proxy_requests_total{route="${esc(r.id)}",class="other"} ${r.byClass[0]}`);
  }
  L.push('# HELP berth_proxy_unrouted_requests_total Requests the proxy answered itself without forwarding, by reason (bad_request: missing or malformed Host, or refused at admission).');
  L.push('# TYPE berth_proxy_unrouted_requests_total counter');
  L.push(`berth_proxy_unrouted_requests_total{reason="no_route"} ${s.global.noRoute}`);
  L.push(`berth_proxy_unrouted_requests_total{reason="bad_request"} ${s.global.badRequest}`);
  L.push(`berth_proxy_unrouted_requests_total{reason="not_ready"} ${s.global.notReady}`);
  const head = (name: string, type: string, help: string) => L.push(`# HELP ${name} ${help}`, `# TYPE ${name} ${type}`);
  const perRoute = (name: string, type: string, help: string, value: (r: StatsSnapshot['routes'][number]) => number) => {
    head(name, type, help);
    for (const r of s.routes) L.push(`${name}{route="${esc(r.id)}"} ${value(r)}`);
  };
  const perEndpoint = (name: string, type: string, help: string, value: (e: StatsSnapshot['endpoints'][number]) => number) => {
    head(name, type, help);
    for (const e of s.endpoints) L.push(`${name}{endpoint="${esc(e.address)}"} ${value(e)}`);
  };
  perRoute('berth_proxy_inflight_requests', 'gauge', 'Requests being proxied now.', (r) => r.inflight);
  perRoute('berth_proxy_proxy_errors_total', 'counter', 'Proxy-generated errors (502/503/504, truncations) by route.', (r) => r.errors);
  perRoute('berth_proxy_retries_total', 'counter', 'Requests retried on another endpoint after a connect failure.', (r) => r.retries);
  perRoute('berth_proxy_stale_resent_total', 'counter', 'Requests sent again on another connection because the one they were given was closed by the upstream as they were sent: a reused keep-alive connection ended or reset before any byte of their answer, or a connection ended, reset or sent stray bytes before they went out at all.', (r) => r.staleResent);
  perRoute('berth_proxy_pipeline_resent_total', 'counter', 'Pipelined requests sent again, alone: the answer in front would have held them up, or their upstream connection ended before their answer began.', (r) => r.resent);
  perRoute('berth_proxy_refused_requests_total', 'counter', 'Requests answered 400 as the client\'s fault (ambiguous framing, unforwardable bytes); never counted against an endpoint.', (r) => r.refused);
  perRoute('berth_proxy_fallback_hits_total', 'counter', 'Responses served from the fallback cache.', (r) => r.fallbackHits);
  perRoute('berth_proxy_fallback_cache_entries', 'gauge', 'Entries held by the fallback cache.', (r) => r.cacheEntries);
  L.push('# HELP berth_proxy_upstream_latency_seconds Upstream request latency (dispatch to last byte).');
  L.push('# TYPE berth_proxy_upstream_latency_seconds histogram');
  for (const r of s.routes) {
    let acc = 0;
    for (let i = 0; i < LATENCY_BUCKETS.length; i++) {
      acc += r.buckets[i];
      L.push(`berth_proxy_upstream_latency_seconds_bucket{route="${esc(r.id)}",le="${LATENCY_BUCKETS[i]}"} ${acc}`);
    }
    acc += r.buckets[LATENCY_BUCKETS.length];
    L.push(`berth_proxy_upstream_latency_seconds_bucket{route="${esc(r.id)}",le="+Inf"} ${acc}`);
    L.push(`berth_proxy_upstream_latency_seconds_sum{route="${esc(r.id)}"} ${r.sum}`);
    L.push(`berth_proxy_upstream_latency_seconds_count{route="${esc(r.id)}"} ${r.count}`);
  }
  const code: Record<string, number> = { closed: 0, open: 1, half_open: 2, draining: 3 };
  perEndpoint('berth_proxy_endpoint_circuit_state', 'gauge',
    'Circuit breaker state per endpoint (0 closed, 1 open, 2 half_open, 3 draining: removed from the table, requests still in flight).', (e) => code[e.state]);
  perEndpoint('berth_proxy_endpoint_inflight_requests', 'gauge', 'In-flight requests per endpoint.', (e) => e.inflight);
  perEndpoint('berth_proxy_endpoint_failures_total', 'counter', 'Failed upstream attempts per endpoint.', (e) => e.failures);
  L.push('# HELP berth_proxy_route_table_version Version of the route table being served.');
  L.push('# TYPE berth_proxy_route_table_version gauge');
  L.push(`berth_proxy_route_table_version ${tableVersion ?? -1}`);
  const mem = process.memoryUsage();
  L.push('# HELP process_resident_memory_bytes Resident memory size in bytes.');
  L.push('# TYPE process_resident_memory_bytes gauge');
  L.push(`process_resident_memory_bytes ${mem.rss}`);
  return L.join('\n') + '\n';
}

/** When each TLS certificate expires, as Prometheus text (alert on `berth_proxy_tls_certificate_expiry_seconds - time() < 14*86400`). */
export function tlsExpiryMetrics(expiry: { name: string; notAfter: string }[]): string {
  if (expiry.length === 0) return '';
  const L = [
    '# HELP berth_proxy_tls_certificate_expiry_seconds When each certificate of the HTTPS listener expires (Unix time): `default`, or the server name.',
    '# TYPE berth_proxy_tls_certificate_expiry_seconds gauge',
  ];
  for (const e of expiry) L.push(`berth_proxy_tls_certificate_expiry_seconds{name="${esc(e.name)}"} ${Math.floor(Date.parse(e.notAfter) / 1000)}`);
  return L.join('\n') + '\n';
}

/** How many worker threads were started again after one died (workers/pool.ts). */
export function workerRestartMetric(restarts: number): string {
  return '# HELP berth_proxy_worker_restarts_total Worker threads started again in the place of one that died.\n' +
    '# TYPE berth_proxy_worker_restarts_total counter\n' +
    `berth_proxy_worker_restarts_total ${restarts}\n`;
}
