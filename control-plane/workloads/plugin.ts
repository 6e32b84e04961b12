/**
 * The workload generator's API: `POST /api/workloads` starts an open-model run against the caller's
 * own apps through the berth proxy (config.workloads.proxyUrl), in a worker thread (runner.ts);
 * runs and their metrics are stored in `workloads` (every few seconds while running, final at the
 * end) and survive restarts (a run cut off by one ends `failed` with the reason). Also the original
 * platform's `/workload/*` paths (compat.ts).
 */
import { randomUUID } from 'node:crypto';
import { hostname } from 'node:os';
import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import type { WorkloadOptions } from '../../bench/workload/engine.js';
import { checkPattern, peakRate } from '../../bench/workload/patterns.js';
import { renderReport } from '../../bench/workload/report.js';
import { RequestSpecError, prepareRequest } from '../../bench/workload/request.js';
import { normalizeHost } from '../../shared/hostname.js';
import { withTransaction } from '../db/pool.js';
import { ApiError, badRequest, conflict, notFound } from '../http/errors.js';
import { idParams } from '../http/schemas.js';
import { startSse } from '../http/sse.js';
import { envNumber } from '../env.js';
import { streamLimits } from '../http/stream-limits.js';
import { compatRoutes } from './compat.js';
import { startBody, type StartBody } from './schema.js';
import {
  countRunning, failInterrupted, publicConfig, finishWorkload, getWorkload, heartbeat, insertWorkload, INTERRUPTED_REASON, listWorkloads, ownedHostnames, saveMetrics,
  STALE_AFTER_S,
  type WorkloadConfigRow, type WorkloadRow,
} from './repo.js';
import { WorkloadRunner, type LiveEvent } from './runner.js';

/** A run as the API shows it. */
export function publicWorkload(r: WorkloadRow, live?: ReturnType<WorkloadRunner['metrics']>) {
  return {
    id: r.id,
    status: r.status,
    status_reason: r.status_reason,
    // rows stored before migration 013 may still hold sensitive header values: never shown
    config: publicConfig(r.config),
    metrics: live ?? r.metrics,
    created_at: new Date(r.created_at).toISOString(),
    finished_at: r.finished_at ? new Date(r.finished_at).toISOString() : null,
  };
}

export { HEARTBEAT_S } from './config.js';

declare module 'fastify' {
  interface FastifyInstance {
    workloads: WorkloadService;
  }
}

/** What the routes (and the compat paths) share. */
export interface WorkloadService {
  runner: WorkloadRunner;
  start(userId: number, body: StartBody): Promise<WorkloadRow>;
  get(userId: number, id: number): Promise<WorkloadRow>;
  view(r: WorkloadRow): ReturnType<typeof publicWorkload>;
  stop(userId: number, id: number): Promise<WorkloadRow>;
}

export default async function workloadsPlugin(app: FastifyInstance): Promise<void> {
  const cfg = app.config.workloads;
  const log = app.log.child({ module: 'workloads' });
  let checkpointing = new Set<number>();
  const runner = new WorkloadRunner({
    onCheckpoint(id, metrics) {
      if (checkpointing.has(id)) return;
      checkpointing.add(id);
      saveMetrics(app.db, id, metrics).catch((e) => log.warn({ err: (e as Error).message, id }, 'could not store the metrics of a running workload'))
        .finally(() => checkpointing.delete(id));
    },
    async onEnd(id, end) {
      try {
        await finishWorkload(app.db, id, end.status, end.reason, end.metrics);
        log.info({ id, status: end.status, reason: end.reason, requests: end.metrics?.total_requests }, 'workload ended');
      } catch (e) {
        log.error({ err: (e as Error).message, id }, `could not store the end of a workload (it will be marked failed once its heartbeat is ${STALE_AFTER_S} s old)`);
      }
    },
  });

  // Which control plane runs a workload: this instance's id is stored with each run it starts
  // (workloads.runner) and its live runs heartbeat every heartbeatMs (heartbeat_at, 5 s). Any control
  // plane on the database fails, at its start and then at every heartbeat, the `running` rows with
  // no heartbeat for STALE_AFTER_S (repo.ts failInterrupted): those of a control plane that was
  // killed (its restart gets no special treatment: it has a new id and the old one's runs go stale)
  // but never those another live control plane is running. A run whose row someone else ended
  // (this process's heartbeats stalled past the limit) is stopped here at the next heartbeat.
  const runnerId = `${hostname()}/${process.pid}/${randomUUID().slice(0, 8)}`;
  const beat = async () => {
    const live = runner.ids(); // before the query: a run started since may not be in its result yet
    const running = await heartbeat(app.db, runnerId, live);
    for (const id of live) {
      const r = runner.get(id);
      if (running.has(id) || !r || r.settled || r.stopRequested) continue;
      log.warn({ id }, 'a running workload was ended by another control plane (its heartbeats were late); stopping it here');
      void runner.stop(r, INTERRUPTED_REASON);
    }
    // a run sends to apps its owner had at the start: one deleted since (whose name another user
    // may claim) or no longer routed (a tag removed) ends the run, or its load and bill would
    // land on someone else's app
    for (const id of live) {
      const r = runner.get(id);
      if (!r || r.settled || r.stopRequested) continue;
      const owned = await ownedHostnames(app.db, r.userId, r.hosts);
      const lost = r.hosts.find((h) => !owned.has(h));
      if (lost === undefined) continue;
      log.info({ id, host: lost }, 'stopping a workload: one of its apps was deleted (or is no longer its owner\'s)');
      void runner.stop(r, `the app ${lost} was deleted (or is no longer yours) during the run`, 'stopped');
    }
    const interrupted = await failInterrupted(app.db);
    if (interrupted) log.warn({ count: interrupted }, `workloads whose control plane stopped (no heartbeat for ${STALE_AFTER_S} s) marked failed`);
  };
  await beat();
  let beating: Promise<void> | undefined;
  const heartbeats = setInterval(() => {
    if (beating) return;
    beating = beat().catch((e) => log.warn({ err: (e as Error).message }, 'workload heartbeat failed')).finally(() => { beating = undefined; });
  }, cfg.heartbeatMs);
  heartbeats.unref();

  const followers = new Set<() => void>();
  app.addHook('preClose', async () => {
    for (const f of [...followers]) f();
    clearInterval(heartbeats);
    await beating;
    await runner.stopAll('the control plane shut down during the run');
    checkpointing = new Set();
  });

  /** starts past the checks but not yet running: counted against maxRunningTotal, maxRpsTotal and maxRpsPerUser (no await between check and count) */
  let starting = 0;
  let startingRps = 0;
  const startingRpsOf = new Map<number, number>();
  const service: WorkloadService = {
    runner,
    async start(userId, b) {
      const hosts = [...new Set([...(b.app_hostname !== undefined ? [b.app_hostname] : []), ...(b.app_hostnames ?? [])].map((h) => normalizeHost(h)))];
      if (hosts.length === 0) throw badRequest('body.app_hostname (or app_hostnames) is required: the app to send load to');
      if (hosts.some((h) => h === '')) throw badRequest('an app hostname is empty or not a hostname');
      if (b.rps === undefined) throw badRequest('body.rps is required');
      if (b.duration_seconds === undefined) throw badRequest('body.duration_seconds is required');
      const config: WorkloadConfigRow = {
        app_hostnames: hosts, pattern: b.pattern, rps: b.rps, duration_seconds: b.duration_seconds,
        ...(b.ramp_to_rps !== undefined ? { ramp_to_rps: b.ramp_to_rps } : {}),
        ...(b.stages !== undefined ? { stages: b.stages } : {}),
        path: b.path, method: b.method.toUpperCase(),
        ...(b.headers !== undefined ? { headers: b.headers } : {}),
        ...(b.body !== undefined ? { body: b.body } : {}),
        ...(b.connections !== undefined ? { connections: b.connections } : {}),
        timeout_ms: b.timeout_ms,
      };
      const bad = checkPattern(config as WorkloadOptions);
      if (bad) throw badRequest(bad);
      // The proxy routes `/apps/{host}/…` by the host in the path when the Host names no app and is
      // its own address: should the app's route be gone meanwhile, such a path could send this load
      // (and its bill) to whatever app it names, not the one checked. Refused outright.
      if (/^\/apps\//i.test(config.path)) throw badRequest(`path "${config.path.slice(0, 100)}" must not start with /apps/ (the proxy would route it to the app named in it); the app is the one in app_hostname`);
      const peak = peakRate(config as WorkloadOptions);
      // forced connections are bounded by the rate: a slow trickle must not hold thousands of sockets on the shared proxy
      const maxConnections = Math.max(64, Math.ceil(peak * 2));
      if (config.connections !== undefined && config.connections > maxConnections) {
        throw new ApiError(400, 'workload_limit', `connections ${config.connections} is more than this workload needs (at most ${maxConnections} for a peak of ${peak} req/s)`);
      }
      if (peak > cfg.maxRps) throw new ApiError(400, 'workload_limit', `this workload peaks at ${peak} req/s; the most allowed is ${cfg.maxRps} req/s (BERTH_WORKLOAD_MAX_RPS)`);
      if (peak > cfg.maxRpsPerUser) throw new ApiError(400, 'workload_limit', `this workload peaks at ${peak} req/s; one user's runs together may send at most ${cfg.maxRpsPerUser} req/s (BERTH_WORKLOAD_MAX_RPS_PER_USER)`);
      if (config.duration_seconds > cfg.maxDurationSeconds) throw new ApiError(400, 'workload_limit', `duration_seconds ${config.duration_seconds} is longer than allowed (${cfg.maxDurationSeconds} s, BERTH_WORKLOAD_MAX_DURATION_S)`);
      const options: WorkloadOptions = {
        url: cfg.proxyUrl, hosts, method: config.method, path: config.path, headers: config.headers, body: config.body,
        pattern: b.pattern, rps: config.rps, duration_seconds: config.duration_seconds, ramp_to_rps: config.ramp_to_rps,
        stages: config.stages, connections: config.connections, timeout_ms: config.timeout_ms, app_hostnames: hosts,
      };
      try {
        prepareRequest(options);
      } catch (e) {
        if (e instanceof RequestSpecError) throw badRequest(e.message);
        throw e;
      }
      // the control plane's cap, checked and reserved in one turn (users' transactions run in parallel)
      if (runner.size + starting >= cfg.maxRunningTotal) {
        throw new ApiError(429, 'too_many_workloads', `${runner.size + starting} workloads are running on this control plane, the most allowed at once (${cfg.maxRunningTotal}); try again later`, { 'retry-after': '10' });
      }
      if (runner.peakTotal + startingRps + peak > cfg.maxRpsTotal) {
        throw new ApiError(429, 'too_many_workloads', `the workloads running on this control plane already send up to ${runner.peakTotal + startingRps} req/s; with this one's ${peak} that is more than all of them may (${cfg.maxRpsTotal} req/s, BERTH_WORKLOAD_MAX_RPS_TOTAL); try again later or lower the rate`, { 'retry-after': '10' });
      }
      const mine = runner.peakOf(userId) + (startingRpsOf.get(userId) ?? 0);
      if (mine + peak > cfg.maxRpsPerUser) {
        throw new ApiError(429, 'too_many_workloads', `your workloads running on this control plane already send up to ${mine} req/s; with this one's ${peak} that is more than one user's may (${cfg.maxRpsPerUser} req/s, BERTH_WORKLOAD_MAX_RPS_PER_USER); wait for one to finish or lower the rate`, { 'retry-after': '10' });
      }
      starting++;
      startingRps += peak;
      startingRpsOf.set(userId, (startingRpsOf.get(userId) ?? 0) + peak);
      let row: Awaited<ReturnType<typeof insertWorkload>>;
      try {
        row = await withTransaction(app.db, async (c) => {
          // one user's starts are serialised by the lock on their row: the running count is exact
          await c.query('SELECT id FROM users WHERE id = $1 FOR UPDATE', [userId]);
          const owned = await ownedHostnames(c, userId, hosts);
          const missing = hosts.find((h) => !owned.has(h));
          if (missing !== undefined) throw notFound(`app ${missing}`);
          const running = await countRunning(c, userId);
          if (running >= cfg.maxRunningPerUser) {
            throw new ApiError(429, 'too_many_workloads', `you have ${running} workload(s) running, the most allowed at once (${cfg.maxRunningPerUser}); stop one or wait for it to finish`, { 'retry-after': '5' });
          }
          return insertWorkload(c, userId, config, runnerId);
        });
        try {
          runner.start(row.id, userId, options, peak);
        } catch (e) {
          await finishWorkload(app.db, row.id, 'failed', (e as Error).message, null);
          throw e;
        }
      } finally {
        starting--; // runner.size, peakTotal and peakOf count it from here (or it failed)
        startingRps -= peak;
        const left = startingRpsOf.get(userId)! - peak;
        if (left <= 1e-9) startingRpsOf.delete(userId); else startingRpsOf.set(userId, left); // (peaks may be fractional)
      }
      log.info({ id: row.id, userId, hosts, pattern: config.pattern, rps: config.rps, duration: config.duration_seconds }, 'workload started');
      return row;
    },
    async get(userId, id) {
      const r = await getWorkload(app.db, userId, id);
      if (!r) throw notFound('workload');
      return r;
    },
    view(r) {
      const live = r.status === 'running' ? runner.get(r.id) : undefined;
      return publicWorkload(r, live ? runner.metrics(live) ?? undefined : undefined);
    },
    async stop(userId, id) {
      const r = await service.get(userId, id);
      const live = runner.get(id);
      if (r.status !== 'running' || !live) throw conflict(`workload ${id} is not running (${r.status})`, 'not_running');
      await runner.stop(live);
      return service.get(userId, id);
    },
  };
  app.decorate('workloads', service);

  const auth = { preHandler: app.authenticate };
  type IdReq = { Params: { id: number } };

  app.post<{ Body: StartBody }>('/api/workloads', {
    ...auth,
    schema: { summary: 'Start a workload: open-model load on your own apps through the berth proxy', tags: ['workloads'], body: startBody } as Record<string, unknown>,
  }, async (req, reply) => {
    const row = await service.start(req.user!.id, req.body);
    return reply.code(201).send({ id: row.id, status: 'running', config: publicConfig(row.config) });
  });

  app.get<{ Querystring: { limit: number } }>('/api/workloads', {
    ...auth,
    schema: {
      summary: 'List your workload runs, newest first (metrics without the series)', tags: ['workloads'],
      querystring: { type: 'object', additionalProperties: false, properties: { limit: { type: 'integer', minimum: 1, maximum: 1000, default: 100 } } },
    } as Record<string, unknown>,
  }, async (req) => {
    const rows = await listWorkloads(app.db, req.user!.id, req.query.limit ?? 100);
    return {
      workloads: rows.map((r) => {
        const v = service.view(r);
        if (v.metrics) v.metrics = { ...v.metrics, series: undefined as never, latency_distribution: undefined as never };
        return v;
      }),
    };
  });

  app.get<IdReq>('/api/workloads/:id', {
    ...auth,
    schema: { summary: 'One workload run: status, config and metrics (live while running)', tags: ['workloads'], params: idParams() } as Record<string, unknown>,
  }, async (req) => service.view(await service.get(req.user!.id, req.params.id)));

  app.post<IdReq>('/api/workloads/:id/stop', {
    ...auth,
    schema: { summary: 'Stop a running workload (409 when it is not running)', tags: ['workloads'], params: idParams() } as Record<string, unknown>,
  }, async (req) => service.view(await service.stop(req.user!.id, req.params.id)));

  app.get<IdReq>('/api/workloads/:id/live', {
    ...auth,
    schema: { summary: 'Server-sent events: one progress event per second while the workload runs, then end', tags: ['workloads'], params: idParams() } as Record<string, unknown>,
  }, async (req, reply) => {
    const r = await service.get(req.user!.id, req.params.id);
    // counts against the per-user and global caps on live streams (429 past them) until it closes
    const release = streamLimits(app).acquire(req.user!.id, 'workload live', req.ip);
    reply.raw.on('close', release);
    // a client that left while the run was looked up: its close came before that listener
    if (reply.raw.destroyed || req.raw.socket?.destroyed) {
      release();
      reply.hijack();
      return;
    }
    const live = runner.get(r.id);
    // it ended between the read above and now: the row says how (it said running)
    const row = live === undefined && r.status === 'running' ? await service.get(req.user!.id, req.params.id) : r;
    followLive(req, reply, row, live, followers);
  });

  app.get<IdReq>('/api/workloads/:id/report', {
    ...auth,
    schema: { summary: 'The workload report: one self-contained HTML page (charts as inline SVG)', tags: ['workloads'], params: idParams() } as Record<string, unknown>,
  }, async (req, reply) => {
    const v = service.view(await service.get(req.user!.id, req.params.id));
    if (!v.metrics) throw conflict('this workload has no metrics yet; try again in a second', 'no_metrics');
    const html = renderReport({ title: `berth workload #${v.id}: ${v.config.app_hostnames.join(', ')}`, config: v.config as unknown as Record<string, unknown>, metrics: v.metrics, status: v.status, status_reason: v.status_reason });
    return reply.type('text/html; charset=utf-8')
      .header('content-security-policy', "default-src 'none'; style-src 'unsafe-inline'; img-src data:")
      .header('x-content-type-options', 'nosniff')
      .send(html);
  });

  app.get<IdReq>('/api/workloads/:id/report.json', {
    ...auth,
    schema: { summary: 'The workload report as JSON: config and metrics with the per-second series', tags: ['workloads'], params: idParams() } as Record<string, unknown>,
  }, async (req) => {
    const v = service.view(await service.get(req.user!.id, req.params.id));
    return { id: v.id, status: v.status, status_reason: v.status_reason, config: v.config, metrics: v.metrics };
  });

  await compatRoutes(app, service);
}

/** How long a live stream may leave what was sent unread before it is closed. */
const LIVE_STALL_MS = envNumber('BERTH_LOG_STALL_MS', 60_000, 100, 86_400_000, true);

/**
 * SSE: `event: progress` once per second while the run goes, then `event: end {status}`.
 * Progress events are snapshots: while the client has not read the last one, the next ones are
 * skipped (nothing piles up), and one that reads nothing for LIVE_STALL_MS is disconnected.
 */
function followLive(req: FastifyRequest, reply: FastifyReply, r: WorkloadRow, live: ReturnType<WorkloadRunner['get']>, followers: Set<() => void>): void {
  const res = startSse(req, reply);
  const send = (event: string, data: unknown) => { if (!res.destroyed) res.write(`event: ${event}\ndata: ${JSON.stringify(data)}\n\n`); };
  if (!live) {
    send('end', { status: r.status, reason: r.status_reason });
    res.end();
    return;
  }
  let closed = false;
  let stall: NodeJS.Timeout | undefined;
  const heartbeat = setInterval(() => { if (!res.destroyed && !res.writableNeedDrain) res.write(': keep-alive\n\n'); }, 15_000);
  const cleanup = () => {
    closed = true;
    clearInterval(heartbeat);
    if (stall) clearTimeout(stall);
    live.listeners.delete(listener);
    followers.delete(shutdown);
  };
  res.on('drain', () => { if (stall) { clearTimeout(stall); stall = undefined; } });
  const listener = (e: LiveEvent) => {
    if (closed) return;
    if (e.type === 'progress') {
      if (res.writableNeedDrain) {
        stall ??= setTimeout(() => {
          req.log.info({ stallMs: LIVE_STALL_MS }, 'workload live reader read nothing for too long; disconnected');
          cleanup();
          res.destroy();
        }, LIVE_STALL_MS);
        return;
      }
      send('progress', { id: r.id, ...e.progress, metrics: e.metrics });
    } else {
      cleanup();
      send('end', { status: e.status, reason: e.reason });
      res.end();
    }
  };
  const shutdown = () => {
    if (closed) return;
    cleanup();
    if (!res.destroyed) res.end(': control plane shutting down\n\n');
  };
  live.listeners.add(listener);
  followers.add(shutdown);
  req.raw.on('close', cleanup);
  res.on('close', cleanup);
  send('start', { id: r.id, status: 'running', config: publicConfig(r.config) });
}
