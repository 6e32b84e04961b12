import { answerClientError } from './http/client-error.js';
import { isLoopbackName } from '../shared/hostname.js';
import { Ajv } from 'ajv';
import { randomUUID } from 'node:crypto';
import { startEventRetention } from './events/retention.js';
import { mkdir } from 'node:fs/promises';
import { join } from 'node:path';
import Fastify, { LogController, type FastifyInstance } from 'fastify';
import cookie from '@fastify/cookie';
import { pino } from 'pino';
import { createLogger, logFormat, type Logger } from '../shared/logging.js';
import { lockDataDir } from '../shared/data-dir-lock.js';
import './types.js';
import { resolveConfig, type ControlPlaneOptions, type ResolvedConfig } from './config.js';
import { createPool, type Db } from './db/pool.js';
import { startEmbeddedPostgres, type EmbeddedPostgresHandle } from './db/embedded.js';
import { migrate } from './db/migrate.js';
import { answerFrameworkError, genRequestId, installErrorHandling, sendError } from './http/errors.js';
import { installTraceLogging } from './http/trace.js';
import { hardenNumberSchemas, numberAjvOptions } from './http/schemas.js';
import { createMetrics, installHttpMetrics } from './http/metrics.js';
import healthPlugin from './http/health.js';
import { BearerTokens, loadToken } from './http/tokens.js';
import authPlugin from './auth/plugin.js';
import { DEFAULT_USER, seedDefaultUser } from './auth/users.js';
import imagesPlugin from './images/plugin.js';
import { BuildQueue } from './images/build-queue.js';
import { verifyBuildSources } from './images/build-check.js';
import { eventRoutes } from './events/routes.js';
import { EventRelay } from './events/outbox.js';
import { createRuntime, type Runtime } from './runtime/docker.js';
import { warnUntrustedForwarding } from './http/forwarding.js';
import { capConnectionsPerAddress } from './http/connection-cap.js';
import { EGRESS_RECHECK_MS, EgressGuard } from './runtime/egress.js';
import { Periodic } from './periodic.js';
import platformPlugin from './containers/platform.js';
import { registerOpenApi } from './http/openapi.js';
import logRoutes from './logs/routes.js';
import infoRoutes from './http/info.js';
import { installRequestLog } from './http/request-log.js';
import appsPlugin from './apps/plugin.js';
import meteringPlugin from './metering/plugin.js';
import workloadsPlugin from './workloads/plugin.js';
import billingPlugin from './billing/plugin.js';

export type { ControlPlaneOptions } from './config.js';

export interface ControlPlane {
  /** http://host:port the API listens on */
  url: string;
  app: FastifyInstance;
  db: Db;
  config: ResolvedConfig;
  runtime: Runtime;
  events: EventRelay;
  builds: BuildQueue;
  log: Logger;
  /** Bearer token `GET /metrics` needs, and the file it was read from or generated into (unset when configured). */
  metricsToken: string;
  metricsTokenFile: string | undefined;
  /** Connection string of the database in use (embedded or DATABASE_URL). */
  databaseUrl: string;
  /** Graceful stop: stop accepting, finish in-flight requests, abort builds, close pools, stop embedded Postgres. */
  close(): Promise<void>;
}

/**
 * Build and start the control plane: database (embedded unless databaseUrl), migrations,
 * default user, Fastify app with every module, build recovery, listening socket.
 * Extra modules (issue 4: containers, discovery, route push) register through `plugins`,
 * which run after the core decorations (db, config, runtime, events, authenticate, builds) exist.
 */
export async function startControlPlane(
  opts: ControlPlaneOptions & { plugins?: ((app: FastifyInstance) => Promise<void>)[]; /** log here instead (embedding, tests) */ logger?: Logger } = {},
): Promise<ControlPlane> {
  const config = resolveConfig(opts);
  const log = opts.logger ?? (config.quiet ? pino({ level: 'silent' }) : createLogger('control-plane', { level: config.logLevel }));
  await mkdir(config.dataDir, { recursive: true });
  // one control plane per data directory: a second one would stop the first one's embedded
  // Postgres as a leftover, and sweep its uploads and build contexts as a dead process's
  const lock = await lockDataDir(config.dataDir, 'control-plane');

  let embedded: EmbeddedPostgresHandle | undefined;
  let databaseUrl = config.databaseUrl;
  if (!databaseUrl) {
    try {
      embedded = await startEmbeddedPostgres(join(config.dataDir, 'pg'), log);
    } catch (e) {
      await lock.release();
      throw e;
    }
    databaseUrl = embedded.url;
  }
  const db = createPool(databaseUrl, config.dbPoolMax, config.dbStatementTimeoutMs);
  const cleanupEarly = async () => { await db.end().catch(() => {}); await embedded?.stop().catch(() => {}); await lock.release(); };
  try {
    const applied = await migrate(db);
    if (applied.length) log.info({ applied }, 'database migrations applied');
    if (config.seedDefaultUser && !config.production && (await seedDefaultUser(db))) {
      log.warn(`!!! DEFAULT USER CREATED: ${DEFAULT_USER.email} / ${DEFAULT_USER.password} — change it or set BERTH_ENV=production to never create it !!!`);
    }
  } catch (e) {
    await cleanupEarly();
    throw e;
  }

  let metricsAuth: { token: string; tokens: string[]; file?: string };
  try {
    metricsAuth = await loadToken(config.metricsToken, config.dataDir, 'metrics-token', 'bmt_');
  } catch (e) {
    await cleanupEarly();
    throw e;
  }
  if (metricsAuth.file) log.info({ file: metricsAuth.file }, 'metrics token (BERTH_METRICS_TOKEN) for GET /metrics read from the data directory');
  const metrics = createMetrics(() => db);
  const egress = new EgressGuard({ mode: config.egressGuard, policy: config.egressPolicy, log: log.child({ component: 'egress' }), failLevel: config.production ? 'warn' : 'info' });
  const runtime = createRuntime({ dockerHost: config.dockerHost, log, networks: { app: config.appNetwork, build: config.buildNetwork }, buildTimeoutMs: config.buildTimeoutMs, egress });
  const events = new EventRelay(db, log);
  const builds = new BuildQueue({
    db, runtime, events, metrics, log, dataDir: config.dataDir,
    concurrency: config.buildConcurrency, maxLogBytes: config.maxBuildLogBytes, timeoutMs: config.buildTimeoutMs,
    memoryBytes: config.buildMemoryBytes, cpus: config.buildCpus, pids: config.buildPids, diskBytes: config.buildDiskBytes, minFreeBytes: config.buildMinFreeBytes,
    verify: (img, ctx, o) => verifyBuildSources(runtime, img.user_id, ctx, { ...o, minFreeBytes: config.buildMinFreeBytes, registries: config.registries }),
  });

  let draining = false;
  let stopping = false;
  const app = Fastify({
    loggerInstance: log,
    genReqId: (req) => genRequestId(req.headers['x-request-id'], randomUUID),
    bodyLimit: 1024 * 1024,
    forceCloseConnections: 'idle',
    // on a terminal one line per request instead of two (http/request-log.ts)
    ...(logFormat() === 'pretty' ? { logController: new LogController({ disableRequestLogging: true }) } : {}),
    // (a stopping control plane answers in the API's shape: see the onRequest hook below)
    return503OnClosing: false,
    // behind a reverse proxy: its X-Forwarded-* are believed from the configured addresses only
    ...(config.trustProxy.length > 0 ? { trustProxy: config.trustProxy } : {}),
    // the whole request (headers and body) within 10 minutes, a 200 MiB upload included: a body
    // trickled a byte at a time, even to /api/auth/login, held a connection for good (408 past it)
    requestTimeout: 10 * 60_000,
    // (past those limits, or bytes Node's parser refuses: the API's error body, http/client-error.ts)
    clientErrorHandler: answerClientError,
    // (a URL Fastify refuses before routing — bad percent-encoding, a segment past maxParamLength — too)
    frameworkErrors: answerFrameworkError,
    // an app's hostname is up to 253 characters: /api/apps/:host with a longer one found no route
    routerOptions: { maxParamLength: 300 },
  }) as unknown as FastifyInstance;
  // JSON bodies are validated as sent — `{"private": null}` is a 400, never `false` — while query
  // strings and path params, which are text, are coerced to their schema's types
  const ajvOptions = { removeAdditional: false, useDefaults: true, allErrors: false, ...numberAjvOptions } as const;
  const bodyAjv = new Ajv({ ...ajvOptions, coerceTypes: false });
  const textAjv = new Ajv({ ...ajvOptions, coerceTypes: true });
  app.setValidatorCompiler(({ schema, httpPart }) => (httpPart === 'body' ? bodyAjv : textAjv).compile(schema));
  app.decorate('db', db);
  app.decorate('config', config);
  app.decorate('metrics', metrics);
  app.decorate('events', events);
  app.decorate('runtime', runtime);
  app.decorate('builds', builds);
  try {
    await registerModules();
  } catch (e) {
    // (a module that refuses its configuration — BERTH_PUBLIC_URL, the JWT key — must not leave
    // the pool, the embedded Postgres and the data directory's lock behind)
    await app.close().catch(() => {});
    await builds.close().catch(() => {});
    await cleanupEarly();
    throw e;
  }

  async function registerModules(): Promise<void> {
    installErrorHandling(app);
    // Requests that reach a control plane while it stops (on a keep-alive connection, or
    // pipelined: closing only reaps idle ones) are answered 503 `shutting_down` in the API's shape,
    // with Retry-After, and the connection closes (Fastify's own 503 for them has its own body).
    app.addHook('onRequest', (_req, reply, done) => {
      if (!stopping) { done(); return; }
      reply.header('connection', 'close').header('retry-after', '1');
      sendError(reply, 503, 'shutting_down', 'the control plane is stopping; try again in a moment');
    });
    warnUntrustedForwarding(app, log); // X-Forwarded-For from an address BERTH_TRUST_PROXY does not name
    capConnectionsPerAddress(app.server, config.connectionsPerAddress, config.trustProxy, log);
    installTraceLogging(app); // the trace id of a W3C traceparent on every log line of the request
    hardenNumberSchemas(app); // before any route: every integer/number in a schema must be finite (400 otherwise)
    installHttpMetrics(app, metrics);
    if (logFormat() === 'pretty') installRequestLog(app);
    await registerOpenApi(app); // before any route: OpenAPI at /docs is generated from the route schemas
    await app.register(cookie);
    await app.register(healthPlugin, { isDraining: () => draining, metricsTokens: new BearerTokens(metricsAuth.tokens) });
    await app.register(authPlugin);
    await app.register(imagesPlugin);
    await app.register(eventRoutes);
    await app.register(platformPlugin); // containers, health, discovery + route push, reconcile, relays
    await app.register(logRoutes); // GET /api/containers/:id/logs, /api/apps/:host/logs
    await app.register(infoRoutes); // GET /api/info: the proxy's public URL for clients
    await app.register(appsPlugin); // apps: revisions and traffic splitting
    await app.register(meteringPlugin); // proxies' metering deltas, /api/metrics
    await app.register(workloadsPlugin); // the workload generator: /api/workloads, /workload/*
    await app.register(billingPlugin); // usage records' stats sampling, /api/billing, invoices
    for (const p of opts.plugins ?? []) await app.register(p);
  }

  // the berth networks (no inter-container traffic); builds and containers ensure them again, so a
  // daemon that is away now only delays this
  runtime.ensureNetworks().catch((e) => log.warn({ err: (e as Error).message }, 'could not set up the berth Docker networks yet; builds and containers will retry'));
  if (!isLoopbackName(config.publishHost)) {
    log.warn({ publishHost: config.publishHost }, `apps' ports are published on ${config.publishHost}, not loopback: anything that reaches that address — other tenants' apps through their bridge, the internet — reaches every app directly, past the proxy, private-app tokens and metering. Firewall the published port range (docs/security.md, Networks)`);
  }
  try {
    await builds.recover();
    events.start();
    await app.listen({ host: config.host, port: config.port });
  } catch (e) {
    await builds.close().catch(() => {});
    await events.stop().catch(() => {});
    await app.close().catch(() => {});
    await cleanupEarly();
    throw e;
  }
  const addr = app.server.address();
  const port = typeof addr === 'object' && addr ? addr.port : config.port;
  const host = config.host.includes(':') ? `[${config.host}]` : config.host === '0.0.0.0' ? '127.0.0.1' : config.host;
  const url = `http://${host}:${port}`;
  log.info({ url, dataDir: config.dataDir, database: embedded ? 'embedded' : 'external', docker: runtime.endpoint }, 'control plane listening');
  const stopEventRetention = startEventRetention(db, config.eventRetentionDays, config.kafkaBrokers.length > 0, log);
  // the egress guard's rules are put back within a minute when a firewall reload removes them
  const egressWatch = new Periodic(EGRESS_RECHECK_MS, () => egress.recheck(), (e) => log.error({ err: e.message }, 'could not put the egress guard back'));
  if (config.egressGuard !== 'off') egressWatch.start();

  let closing: Promise<void> | undefined;
  const close = () => {
    closing ??= (async () => {
      draining = true;
      log.info('control plane shutting down');
      // (the data directory's lock goes whatever fails on the way: this process is done with it)
      try {
        await stopEventRetention();
        await egressWatch.stop();
        stopping = true;
        await app.close(); // stops accepting, waits for in-flight requests
        await builds.close();
        await events.stop();
        await db.end();
        await embedded?.stop();
      } finally {
        await lock.release();
      }
      log.info('control plane stopped');
    })();
    return closing;
  };
  return { url, app, db, config, runtime, events, builds, log, metricsToken: metricsAuth.token, metricsTokenFile: metricsAuth.file, databaseUrl, close };
}
