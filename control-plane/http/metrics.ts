import client from 'prom-client';
import type { FastifyInstance } from 'fastify';
import type { Db } from '../db/pool.js';

/** One registry per control plane instance (tests run several in one process). */
export interface Metrics {
  registry: client.Registry;
  httpRequests: client.Counter<'method' | 'route' | 'status'>;
  httpDuration: client.Histogram<'method' | 'route'>;
  builds: client.Counter<'result'>;
  buildDuration: client.Histogram<'result'>;
  buildsRunning: client.Gauge;
  buildsQueued: client.Gauge;
}

export function createMetrics(db: () => Db | undefined): Metrics {
  const registry = new client.Registry();
  client.collectDefaultMetrics({ register: registry, prefix: 'berth_cp_' });
  const m: Metrics = {
    registry,
    httpRequests: new client.Counter({ name: 'berth_cp_http_requests_total', help: 'HTTP requests by route and status', labelNames: ['method', 'route', 'status'], registers: [registry] }),
    httpDuration: new client.Histogram({ name: 'berth_cp_http_request_duration_seconds', help: 'HTTP request duration', labelNames: ['method', 'route'], buckets: [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 10], registers: [registry] }),
    builds: new client.Counter({ name: 'berth_cp_builds_total', help: 'Image builds finished, by result', labelNames: ['result'], registers: [registry] }),
    buildDuration: new client.Histogram({ name: 'berth_cp_build_duration_seconds', help: 'Image build duration', labelNames: ['result'], buckets: [1, 5, 15, 30, 60, 120, 300, 600, 1800], registers: [registry] }),
    buildsRunning: new client.Gauge({ name: 'berth_cp_builds_running', help: 'Builds running now', registers: [registry] }),
    buildsQueued: new client.Gauge({ name: 'berth_cp_builds_queued', help: 'Builds waiting for a slot', registers: [registry] }),
  };
  const poolGauge = (name: string, help: string, pick: (p: Db) => number) =>
    new client.Gauge({ name, help, registers: [registry], collect() { const p = db(); if (p) this.set(pick(p)); } });
  poolGauge('berth_cp_db_pool_total', 'Postgres pool clients (idle + busy)', (p) => p.totalCount);
  poolGauge('berth_cp_db_pool_idle', 'Postgres pool idle clients', (p) => p.idleCount);
  poolGauge('berth_cp_db_pool_waiting', 'Requests waiting for a Postgres client', (p) => p.waitingCount);
  return m;
}

export function installHttpMetrics(app: FastifyInstance, m: Metrics): void {
  app.addHook('onResponse', async (req, reply) => {
    const route = req.routeOptions.url ?? 'unmatched';
    m.httpRequests.inc({ method: req.method, route, status: String(reply.statusCode) });
    m.httpDuration.observe({ method: req.method, route }, reply.elapsedTime / 1000);
  });
}

/**
 * `fn`'s last answer for `ttlMs` (concurrent callers share one call): gauges whose collect runs
 * a query, so that scrapes, however frequent, cost the database at most one query per window.
 */
export function cachedFor<T>(ttlMs: number, fn: () => Promise<T>, now: () => number = Date.now): () => Promise<T> {
  let at = -Infinity;
  let last: Promise<T> | undefined;
  return () => {
    if (!last || now() - at >= ttlMs) {
      at = now();
      last = fn();
      last.catch(() => { last = undefined; }); // a failed query is retried by the next scrape
    }
    return last;
  };
}
