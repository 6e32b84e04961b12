import { startSse } from '../http/sse.js';
import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import { normalizeHost } from '../../shared/hostname.js';
import { badRequest, conflict, notFound } from '../http/errors.js';
import { requireBearer, type BearerTokens } from '../http/tokens.js';
import type { Activation } from '../containers/activation.js';
import { MAX_ID, int } from '../http/schemas.js';
import { endpointAddress, withoutAffinity, withoutAuth, withoutPipeline, withoutSplits } from './route-table.js';
import type { RouteTableSpec } from '../../shared/routes/schema.js';
import type { RouteHub } from './hub.js';
import { RouteEvents } from './route-events.js';
import type { ProxyRegistry, ProxyReport } from './proxies.js';

/** Bytes a route watcher may leave unread before its stream is closed (it reconnects). */
export const WATCH_BUFFER_CAP = 8 * 1024 * 1024;

/** Constant-time bearer check against the proxy token. */
export const PROXY_TOKEN_REQUIRED = 'a valid proxy token is required (Authorization: Bearer $BERTH_PROXY_TOKEN)';

/** A counter a proxy reports: a whole number ≥ 0. */
const COUNT = int(0, MAX_ID);

const reportSchema = {
  type: 'object',
  required: ['proxyId', 'tableVersion', 'routes', 'endpoints'],
  additionalProperties: false,
  properties: {
    proxyId: { type: 'string', minLength: 1, maxLength: 200 },
    tableVersion: { type: ['integer', 'null'], minimum: 0, maximum: MAX_ID },
    partial: { type: 'boolean' },
    endpointsPartial: { type: 'boolean' },
    seq: int(1, MAX_ID),
    base: int(1, MAX_ID),
    gone: { type: 'array', maxItems: 200_000, items: { type: 'string', maxLength: 300 } },
    routes: {
      type: 'array', maxItems: 200_000,
      items: {
        type: 'object', required: ['id', 'requests', 'inflight'], additionalProperties: false,
        properties: { id: { type: 'string', maxLength: 300 }, requests: COUNT, inflight: COUNT, concurrency: { type: 'number', minimum: 0, maximum: 1e9 } },
      },
    },
    endpoints: {
      type: 'array', maxItems: 200_000,
      items: {
        type: 'object', required: ['address', 'inflight'], additionalProperties: false,
        properties: { address: { type: 'string', maxLength: 300 }, inflight: COUNT, requests: COUNT, state: { type: 'string', maxLength: 20 } },
      },
    },
  },
} as const;

/**
 * What a proxy says it reads (`GET /v1/routes/watch?features=a,b`), each with the table an older
 * proxy gets instead (route-table.ts): without private apps' routes (it would serve them to
 * anyone), each split host on its largest share only, routes without session affinity, without
 * upstream pipelining.
 */
const WATCH_FEATURES: ReadonlyArray<readonly [string, (t: RouteTableSpec) => RouteTableSpec]> = [
  ['auth', withoutAuth], ['split', withoutSplits], ['affinity', withoutAffinity], ['pipeline', withoutPipeline],
];

/**
 * Discovery:
 * - `GET /v1/routes/watch` (bearer proxy token): Server-Sent Events, `event: routes` with the
 *   full table on connect and on every change (with `features=…,delta`: `event: delta` with the
 *   routes changed and removed instead, when fewer than half changed: route-events.ts); `: ping`
 *   every 15 s.
 * - `POST /v1/proxy/report` (bearer proxy token): a proxy's applied version and counters → 204.
 * - `GET /v1/proxies`: live proxies and their last report; the proxy token sees all, a signed-in
 *   user only the counters of their own routes and endpoints.
 * - `GET /api/services/healthy?website_url=…`: healthy containers behind a hostname
 *   (a user sees their own apps; the proxy token sees all).
 */
export default async function discoveryPlugin(app: FastifyInstance, opts: { hub: RouteHub; proxies: ProxyRegistry; proxyTokens: BearerTokens; activation: Activation }): Promise<void> {
  const { hub, proxies, proxyTokens, activation } = opts;
  const streams = new Set<FastifyReply>();

  // onRequest: refused before a body is read (an anonymous 16 MiB report costs nothing)
  const requireProxy = requireBearer(proxyTokens, PROXY_TOKEN_REQUIRED);
  /** Which of the accepted tokens a proxy presented: "current" (the first) or "retiring #n". */
  const tokenLabel = (req: FastifyRequest) => {
    const i = proxyTokens.match(req.headers.authorization);
    return i <= 0 ? 'current' : `retiring #${i + 1}`;
  };
  /** Proxy token → { proxy: true }; otherwise a normal user login. */
  const proxyOrUser = async (req: FastifyRequest, reply: FastifyReply) => {
    if (proxyTokens.match(req.headers.authorization) >= 0) { (req as { viaProxy?: boolean }).viaProxy = true; return; }
    await app.authenticate.call(app, req, reply);
  };

  app.addHook('preClose', async () => {
    for (const r of streams) r.raw.end();
    streams.clear();
  });

  // each table's events, by the features of the proxies reading it (a bit mask)
  const events = new RouteEvents((t, mask) => {
    for (let i = 0; i < WATCH_FEATURES.length; i++) if ((mask & (1 << i)) === 0) t = WATCH_FEATURES[i][1](t);
    return t;
  });
  app.get<{ Querystring: { features?: string } }>('/v1/routes/watch', {
    onRequest: requireProxy,
    schema: { querystring: { type: 'object', properties: { features: { type: 'string', maxLength: 200 } } } },
  }, async (req, reply) => {
    // what the proxy reads, as a bit per WATCH_FEATURES entry
    const said = (req.query.features ?? '').split(',');
    let mask = 0;
    for (let i = 0; i < WATCH_FEATURES.length; i++) if (said.includes(WATCH_FEATURES[i][0])) mask |= 1 << i;
    const deltas = said.includes('delta');
    const res = startSse(req, reply);
    res.socket?.setNoDelay(true);
    // Backpressure: a proxy that stops reading must not make this process buffer table after
    // table (see `pending` below). Past the cap (one huge table, pings) the stream is cut; the
    // proxy reconnects and gets the full table.
    const write = (chunk: string) => {
      if (res.destroyed) return;
      if (res.writableLength > WATCH_BUFFER_CAP) {
        req.log.warn({ remote: req.ip, buffered: res.writableLength }, 'route watcher is not reading; closing its stream');
        res.destroy();
        return;
      }
      res.write(chunk);
    };
    // A proxy still reading (or applying) the last table gets only the newest when it has: tables
    // published meanwhile are skipped, not queued (a burst of changes costs the proxy one apply,
    // and this process one event per stream); a delta goes from the table it was sent last.
    let pending: RouteTableSpec | null = null;
    let sent: RouteTableSpec | null = null;
    const send = (t: RouteTableSpec) => {
      if (t === sent) return;
      if (res.writableNeedDrain) {
        pending = t;
        return;
      }
      const text = (deltas && sent !== null ? events.delta(sent, t, mask) : null) ?? events.table(t, mask);
      sent = t;
      write(text);
    };
    res.on('drain', () => {
      const t = pending;
      pending = null;
      if (t !== null) send(t);
    });
    streams.add(reply);
    const unsubscribe = hub.subscribe(send);
    const ping = setInterval(() => write(': ping\n\n'), 15_000);
    const done = () => { clearInterval(ping); unsubscribe(); streams.delete(reply); };
    req.raw.on('close', done);
    res.on('close', done);
    const table = hub.table ?? (await hub.rebuild().then(() => hub.table, () => null));
    if (table) send(table);
    const token = tokenLabel(req);
    if (token === 'current') req.log.info({ remote: req.ip, version: table?.version ?? null, token }, 'proxy subscribed to route updates');
    else req.log.warn({ remote: req.ip, version: table?.version ?? null, token }, 'proxy subscribed with a token being retired (not the first of BERTH_PROXY_TOKEN): move it to the current one');
  });

  // A proxy holds requests for a scaled-to-zero app: start an instance (202; the route table
  // brings its endpoint). Route ids are `img-{id}`.
  app.post<{ Params: { id: string } }>('/v1/routes/:id/activate', {
    onRequest: requireProxy,
    schema: { params: { type: 'object', required: ['id'], properties: { id: { type: 'string', pattern: '^img-[1-9][0-9]{0,15}$' } } } },
  }, async (req, reply) => {
    const imageId = Number(req.params.id.slice(4));
    if (!Number.isSafeInteger(imageId)) throw badRequest('route id out of range');
    const r = await activation.request(imageId);
    if (r === 'not_found') throw notFound('route');
    if (r === 'no_room') throw conflict(`route ${req.params.id} has no instance and its owner's container quota is full: none can start now`, 'container_quota_exceeded');
    if (r === 'not_scaled_to_zero') throw conflict(`route ${req.params.id} does not scale to zero (min_instances > 0); its instances are managed by the reconcile loop`, 'not_scaled_to_zero');
    return reply.code(202).send({ route: req.params.id, result: r });
  });

  app.post<{ Body: ProxyReport }>('/v1/proxy/report', { onRequest: requireProxy, bodyLimit: 16 * 1024 * 1024, schema: { body: reportSchema } }, async (req, reply) => {
    if (!proxies.record(req.body, req.ip, tokenLabel(req))) {
      throw conflict('this report does not follow the last one this control plane took from this proxy (it restarted, another control plane took reports in between, or the report came late): send a whole report', 'whole_report_needed');
    }
    return reply.code(204).send();
  });

  // The proxy token sees everything. A signed-in user sees the live proxies with only their own
  // routes and endpoints in the counters (no other tenant's hostnames, addresses or traffic).
  app.get('/v1/proxies', { preHandler: proxyOrUser }, async (req) => {
    const viaProxy = (req as { viaProxy?: boolean }).viaProxy === true;
    let routeOk = (_id: string) => true;
    let addressOk = (_a: string) => true;
    if (!viaProxy) {
      const uid = req.user!.id;
      const { rows: imgs } = await app.db.query<{ id: string }>('SELECT id FROM images WHERE user_id = $1', [uid]);
      const { rows: cs } = await app.db.query<{ host_port: number }>("SELECT host_port FROM containers WHERE user_id = $1 AND status IN ('creating', 'running', 'stopping') AND host_port IS NOT NULL", [uid]);
      const routeIds = new Set(imgs.map((i) => `img-${i.id}`));
      const addrs = new Set(cs.map((c) => endpointAddress(app.config.endpointHost, c.host_port)));
      routeOk = (id) => routeIds.has(id);
      addressOk = (a) => addrs.has(a);
    }
    const list = proxies.list().map((p) => ({
      proxy_id: p.proxyId,
      ...(viaProxy ? { remote_address: p.remoteAddress, token: p.token } : {}),
      table_version: p.tableVersion,
      last_report_at: new Date(p.receivedAt).toISOString(),
      routes: [...p.routes.values()].filter((r) => routeOk(r.id)),
      endpoints: [...p.endpoints.values()].filter((e) => addressOk(e.address)),
    }));
    return { current_version: hub.table?.version ?? null, watchers: hub.subscriberCount, proxies: list, count: list.length };
  });

  app.get<{ Querystring: { website_url?: string } }>('/api/services/healthy', {
    preHandler: proxyOrUser,
    schema: { summary: 'Healthy endpoints behind a hostname (your apps; the proxy token sees all)', tags: ['discovery'], querystring: { type: 'object', required: ['website_url'], properties: { website_url: { type: 'string', minLength: 1, maxLength: 2048 } } } },
  }, async (req) => {
    const host = normalizeHost(req.query.website_url ?? '');
    if (!host) throw badRequest('website_url must contain a hostname');
    const viaProxy = (req as { viaProxy?: boolean }).viaProxy === true;
    const { rows } = await app.db.query<{ id: number; image_id: number; user_id: number; name: string; host_port: number; internal_port: number; docker_id: string; healthy_at: Date | null; app_hostname: string }>(
      `SELECT c.id, c.image_id, c.user_id, c.name, c.host_port, c.internal_port, c.docker_id, c.healthy_at, i.app_hostname
         FROM images i JOIN containers c ON c.image_id = i.id
        WHERE i.app_hostname = $1 AND c.status = 'running' AND c.desired = 'running' AND c.health = 'healthy' AND c.host_port IS NOT NULL
          AND ($2::bigint IS NULL OR i.user_id = $2)
        ORDER BY c.id`, [host, viaProxy ? null : req.user!.id]);
    const ep = app.config.endpointHost;
    const services = rows.map((r) => ({
      container_id: r.id, image_id: r.image_id, name: r.name, app_hostname: r.app_hostname,
      host: ep, port: r.host_port, address: endpointAddress(ep, r.host_port), url: `http://${endpointAddress(ep, r.host_port)}`,
      internal_port: r.internal_port, docker_id: r.docker_id, healthy_since: r.healthy_at ? new Date(r.healthy_at).toISOString() : null,
    }));
    return { website_url: req.query.website_url, hostname: host, services, count: services.length };
  });
}
