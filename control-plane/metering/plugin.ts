import type { FastifyInstance } from 'fastify';
import client from 'prom-client';
import type { Logger } from '../../shared/logging.js';
import { METERING_PATH, METER_BUCKET_COUNT, meterUploadSchema, type MeterUpload } from '../../shared/metering/schema.js';
import { PROXY_TOKEN_REQUIRED } from '../discovery/plugin.js';
import { requireBearer } from '../http/tokens.js';
import { badRequest } from '../http/errors.js';
import { ID, int } from '../http/schemas.js';
import { cachedFor } from '../http/metrics.js';
import { applyUpload, checkUpload } from './ingest.js';
import { addBuckets, quantileMs, round3 } from './histogram.js';
import { ownContainer, ownHostname, parseRange } from './query.js';
import { timeQuerySchema } from '../http/time-query.js';
import { heavyHandler } from '../http/heavy-queries.js';

declare module 'fastify' {
  interface FastifySchema {
    /** one line describing the route (OpenAPI) */
    summary?: string;
  }
}

interface Agg {
  requests: number; s: number[]; proxyErrors: number; latencyMsSum: number; latencyCount: number; buckets: number[]; bytesIn: number; bytesOut: number;
}
const emptyAgg = (): Agg => ({ requests: 0, s: [0, 0, 0, 0, 0], proxyErrors: 0, latencyMsSum: 0, latencyCount: 0, buckets: new Array<number>(METER_BUCKET_COUNT).fill(0), bytesIn: 0, bytesOut: 0 });

/** A group of per-minute rows summed (numeric sums arrive as strings). */
interface MinuteRow {
  app_hostname: string; container_id: number; requests: string; s1xx: string; s2xx: string; s3xx: string; s4xx: string; s5xx: string;
  proxy_errors: string; latency_ms_sum: number; latency_count: string; buckets: string[] | null; bytes_in: string; bytes_out: string;
}

function add(a: Agg, r: MinuteRow): void {
  a.requests += Number(r.requests);
  a.s[0] += Number(r.s1xx); a.s[1] += Number(r.s2xx); a.s[2] += Number(r.s3xx); a.s[3] += Number(r.s4xx); a.s[4] += Number(r.s5xx);
  a.proxyErrors += Number(r.proxy_errors);
  a.latencyMsSum += Number(r.latency_ms_sum);
  a.latencyCount += Number(r.latency_count);
  if (r.buckets) addBuckets(a.buckets, r.buckets);
  a.bytesIn += Number(r.bytes_in);
  a.bytesOut += Number(r.bytes_out);
}

/** The public shape of an aggregate (errors: 5xx, the proxy's own 502/503/504 included). */
function view(a: Agg) {
  return {
    total_requests: a.requests,
    total_errors: a.s[4],
    proxy_errors: a.proxyErrors,
    avg_latency_ms: a.latencyCount ? round3(a.latencyMsSum / a.latencyCount) : null,
    p50_latency_ms: quantileMs(a.buckets, 0.5),
    p95_latency_ms: quantileMs(a.buckets, 0.95),
    p99_latency_ms: quantileMs(a.buckets, 0.99),
    status_codes: { '1xx': a.s[0], '2xx': a.s[1], '3xx': a.s[2], '4xx': a.s[3], '5xx': a.s[4] },
    bytes_in: a.bytesIn,
    bytes_out: a.bytesOut,
  };
}

/** `GET /api/metrics` without `since` covers this much (the last 30 days). */
export const METRICS_DEFAULT_SPAN_MS = 30 * 24 * 3600_000;
/** `GET /api/metrics/series` answers at most this many points (400 past it). */
export const SERIES_MAX_POINTS = 10_000;

const SUMMED = ['requests', 's1xx', 's2xx', 's3xx', 's4xx', 's5xx', 'proxy_errors', 'latency_ms_sum', 'latency_count', 'bytes_in', 'bytes_out'] as const;

/**
 * The per-minute rows matching `where`, summed in Postgres per group (`keys`: `[alias, SQL
 * expression]`), histograms element-wise: one row per group comes back, however many minutes it
 * covers. (Inner level: one row per group and bucket index, each scalar counted on the first index
 * only; outer level: the buckets in order.)
 */
function aggregateSql(keys: [string, string][], where: string): string {
  const n = keys.length;
  return `SELECT ${keys.map(([a]) => a).join(', ')},
                 ${SUMMED.map((c) => `sum(${c}) AS ${c}`).join(', ')},
                 array_agg(b ORDER BY i) FILTER (WHERE i IS NOT NULL) AS buckets
            FROM (SELECT ${keys.map(([a, e]) => `${e} AS ${a}`).join(', ')}, u.i, sum(u.x) AS b,
                         ${SUMMED.map((c) => `sum(r.${c}) FILTER (WHERE u.i IS NULL OR u.i = 1) AS ${c}`).join(', ')}
                    FROM request_minutes r LEFT JOIN LATERAL unnest(r.buckets) WITH ORDINALITY AS u(x, i) ON true
                   WHERE ${where}
                   GROUP BY ${Array.from({ length: n + 1 }, (_, k) => k + 1).join(', ')}) g
           GROUP BY ${keys.map(([a]) => a).join(', ')}`;
}

/** How long the per-app gauges (one query each over images/containers) keep their values. */
export const PER_APP_GAUGE_TTL_MS = 15_000;

/**
 * Metering: `POST /v1/proxy/metering` (proxies: deltas applied once per stream seq), and the
 * user's traffic: `GET /api/metrics` (totals, by app and by container) and
 * `GET /api/metrics/series` (points for charts), both from the per-minute rows.
 */
export default async function meteringPlugin(app: FastifyInstance): Promise<void> {
  const log = app.log as unknown as Logger;
  // history sums hold a pooled connection each: a few at once per user (http/heavy-queries.ts)
  const heavy = heavyHandler(app);
  const proxyTokens = app.platform.proxyTokens;

  // For dashboards: the proxies label by route id; these join route → app and count instances per app.
  // Each query's answer is kept PER_APP_GAUGE_TTL_MS, so scrapes cannot hammer the database.
  const registers = [app.metrics.registry];
  const routeInfo = cachedFor(PER_APP_GAUGE_TTL_MS, async () =>
    (await app.db.query<{ id: string; app_hostname: string }>(`SELECT id, app_hostname FROM images WHERE status = 'ready'`)).rows);
  const appInstances = cachedFor(PER_APP_GAUGE_TTL_MS, async () =>
    (await app.db.query<{ app_hostname: string; status: string; n: number }>(
      'SELECT i.app_hostname, c.status, count(*)::int AS n FROM containers c JOIN images i ON i.id = c.image_id GROUP BY 1, 2')).rows);
  new client.Gauge({
    name: 'berth_cp_route_info', help: 'Route ids proxies report (img-<image id>) and the app hostname each serves (value 1; join on route)',
    labelNames: ['route', 'app_hostname', 'image_id'], registers,
    async collect() {
      const rows = await routeInfo();
      this.reset();
      for (const r of rows) this.set({ route: `img-${r.id}`, app_hostname: r.app_hostname, image_id: r.id }, 1);
    },
  });
  new client.Gauge({
    name: 'berth_cp_app_instances', help: 'Instances (containers) per app by status', labelNames: ['app_hostname', 'status'], registers,
    async collect() {
      const rows = await appInstances();
      this.reset();
      for (const r of rows) this.set({ app_hostname: r.app_hostname, status: r.status }, r.n);
    },
  });

  app.post<{ Body: MeterUpload }>(METERING_PATH, {
    // before the body (up to 32 MiB) is read, parsed and validated
    onRequest: requireBearer(proxyTokens, PROXY_TOKEN_REQUIRED),
    bodyLimit: 32 * 1024 * 1024,
    schema: { summary: 'A proxy delivers metering batches; each (stream, seq) is applied once', body: meterUploadSchema },
  }, async (req) => {
    checkUpload(req.body);
    const r = await applyUpload(app.db, req.body, log);
    if (r.duplicates) req.log.info({ stream: req.body.stream, duplicates: r.duplicates, acked: r.acked }, 'metering batches already applied were ignored');
    return { stream: req.body.stream, acked: r.acked, applied: r.applied, duplicates: r.duplicates };
  });

  /** WHERE clause for the caller's rows with the optional filters. */
  const filters = async (userId: number, q: { app_hostname?: string; container_id?: number; since?: string; until?: string }, defaultSinceMs?: number) => {
    const { since, until } = parseRange(q, defaultSinceMs);
    const where = ['user_id = $1', 'minute < $2'];
    const args: unknown[] = [userId, until];
    let host: string | undefined;
    if (since) { args.push(since); where.push(`minute >= date_trunc('minute', $${args.length}::timestamptz)`); }
    if (q.app_hostname !== undefined) { host = await ownHostname(app.db, userId, q.app_hostname); args.push(host); where.push(`app_hostname = $${args.length}`); }
    if (q.container_id !== undefined) { await ownContainer(app.db, userId, q.container_id); args.push(q.container_id); where.push(`container_id = $${args.length}`); }
    return { where: where.join(' AND '), args, since, until, host };
  };

  const filterProps = {
    app_hostname: { type: 'string', minLength: 1, maxLength: 300 },
    container_id: ID,
    since: timeQuerySchema,
    until: timeQuerySchema,
  } as const;

  app.get<{ Querystring: { app_hostname?: string; container_id?: number; since?: string; until?: string } }>('/api/metrics', {
    preHandler: app.authenticate,
    schema: {
      summary: 'Your traffic as the proxies metered it: totals, latency percentiles, status classes, by app and by container',
      querystring: { type: 'object', additionalProperties: false, properties: filterProps },
    },
  }, heavy(async (req) => {
    const uid = req.user!.id;
    const f = await filters(uid, req.query, METRICS_DEFAULT_SPAN_MS);
    // one row per (app, container): summed in Postgres, not minute by minute here
    const { rows } = await app.db.query<MinuteRow>(aggregateSql([['app_hostname', 'r.app_hostname'], ['container_id', 'r.container_id']], f.where), f.args);
    const total = emptyAgg();
    const byHost = new Map<string, Agg>();
    const byContainer = new Map<number, Agg & { app_hostname: string }>();
    for (const r of rows) {
      add(total, r);
      let h = byHost.get(r.app_hostname);
      if (!h) byHost.set(r.app_hostname, (h = emptyAgg()));
      add(h, r);
      if (Number(r.container_id) !== 0) { // container 0: requests no endpoint answered (in the totals only)
        let c = byContainer.get(r.container_id);
        if (!c) byContainer.set(r.container_id, (c = { ...emptyAgg(), app_hostname: r.app_hostname }));
        add(c, r);
      }
    }
    return {
      user_id: uid,
      since: f.since?.toISOString() ?? null,
      until: f.until.toISOString(),
      ...view(total),
      by_app_hostname: Object.fromEntries([...byHost].sort(([a], [b]) => a.localeCompare(b)).map(([h, a]) => [h, view(a)])),
      by_container: Object.fromEntries([...byContainer].sort(([a], [b]) => Number(a) - Number(b)).map(([id, a]) => [id, { app_hostname: a.app_hostname, ...view(a) }])),
    };
  }));

  app.get<{ Querystring: { app_hostname?: string; container_id?: number; since?: string; until?: string; step?: number } }>('/api/metrics/series', {
    preHandler: app.authenticate,
    schema: {
      summary: 'Your metered traffic as points for charts: requests, errors and latency per step (seconds, a multiple of 60)',
      querystring: { type: 'object', additionalProperties: false, properties: { ...filterProps, step: int(60, 86_400, { default: 60 }) } },
    },
  }, heavy(async (req) => {
    const step = req.query.step ?? 60;
    if (step % 60 !== 0) throw badRequest('step must be a multiple of 60 seconds (rows are per minute)');
    const f = await filters(req.user!.id, req.query, 3600_000);
    const span = (f.until.getTime() - f.since!.getTime()) / 1000;
    if (span / step > SERIES_MAX_POINTS) throw badRequest(`since..until spans ${Math.ceil(span / step)} steps of ${step} s; at most ${SERIES_MAX_POINTS} points — use a larger step or a shorter range`);
    // one row per point (≤ SERIES_MAX_POINTS), summed in Postgres
    const { rows } = await app.db.query<MinuteRow & { t: string }>(
      aggregateSql([['t', `floor(extract(epoch FROM r.minute) / ${step})::bigint * ${step}`]], f.where), f.args);
    const points = new Map<number, Agg>();
    for (const r of rows) {
      const t = Number(r.t);
      let p = points.get(t);
      if (!p) points.set(t, (p = emptyAgg()));
      add(p, r);
    }
    return {
      app_hostname: f.host ?? null,
      step,
      since: f.since!.toISOString(),
      until: f.until.toISOString(),
      points: [...points].sort(([a], [b]) => a - b).map(([t, a]) => ({
        t: new Date(t * 1000).toISOString(),
        requests: a.requests,
        errors: a.s[4],
        avg_latency_ms: a.latencyCount ? round3(a.latencyMsSum / a.latencyCount) : null,
        p95_latency_ms: quantileMs(a.buckets, 0.95),
        bytes_in: a.bytesIn,
        bytes_out: a.bytesOut,
      })),
    };
  }));
}
