import { isLoopbackName } from '../shared/hostname.js';
import { once } from 'node:events';
import type { AddressInfo } from 'node:net';
import type { Server } from 'node:http';
import { join } from 'node:path';
import { randomBytes } from 'node:crypto';
import { chmod, mkdir, readFile, writeFile } from 'node:fs/promises';
import { rmSync } from 'node:fs';
import type { RouteDelta, RouteTableSpec } from '../shared/routes/schema.js';
import { applyRouteDeltas } from '../shared/routes/delta.js';
import type { Logger } from '../shared/logging.js';
import { lockDataDir, type DataDirLock } from '../shared/data-dir-lock.js';
import { createAdminServer, type AdminAuth } from './admin/server.js';
import { merge, type StatsSnapshot } from './metrics/prometheus.js';
import { DataPlane } from './server/data-plane.js';
import { runtime } from './server/state.js';
import { Activator } from './sync/activator.js';
import { ControlPlaneSource, type Arrival } from './sync/control-plane-source.js';
import { FileSource } from './sync/file-source.js';
import { MeterOutbox, MeterReporter } from './sync/meter-outbox.js';
import { loadTable, saveTable } from './sync/persist.js';
import { Reporter } from './sync/reporter.js';
import { mergeCounts } from './metrics/report-counts.js';
import { WorkerPool } from './workers/pool.js';
import { loadTlsConfig } from './server/tls.js';
import type { AcmeManager, AcmeOptions } from './acme/manager.js';
import { setChallenge } from './server/acme-challenge.js';
import { tlsExpiryMetrics, workerRestartMetric } from './metrics/prometheus.js';

export interface ProxyOptions {
  listenHost: string;
  listenPort: number;
  adminHost: string;
  adminPort: number;
  adminToken?: string;
  routesFile?: string;
  controlPlaneUrl?: string;
  token?: string;
  dataDir: string;
  workers: number;
  /**
   * the data plane on a worker thread even with one worker (`berth up`: the control plane's
   * event loop and the proxy's do not hold each other up, and a bug in the proxy costs a thread
   * that is started again, not the process)
   */
  threaded?: boolean;
  accessLogRate: number;
  upstreamConnections: number;
  /** the proxy's own names (`--apps-path-hosts`): `/apps/{host}/` reaches an app on them, as on an IP address or localhost */
  ownNames?: readonly string[];
  /** reconnect when the control-plane stream is silent this long (it pings every 15 s) */
  watchIdleMs?: number;
  /** an HTTPS listener too: TLS terminated here, certificates checked at start (server/tls.ts) */
  tls?: { host: string; port: number; cert: string; key: string; dir?: string; redirect?: boolean; acme?: AcmeOptions };
  logger: Logger;
}

export interface ProxyHandle {
  port: number;
  /** the HTTPS listener's port (0 without one) */
  tlsPort: number;
  adminPort: number;
  /** the admin bearer token (given, or generated into <data-dir>/admin-token) */
  adminToken: string;
  apply(spec: RouteTableSpec, source: string): Promise<{ version: number; routes: number; ms: number }>;
  /** read the TLS certificates again and serve new connections with them (SIGHUP, POST /tls/reload) */
  reloadTls(): Promise<{ certificates: number }>;
  close(): Promise<void>;
}


/**
 * Admin writes always need a token. When the operator gave none, one is generated per data dir
 * and kept in `<data-dir>/admin-token` (0600, reused across restarts) — reads stay open on
 * loopback in that case, as Envoy's and Traefik's admin listeners are.
 */
export async function resolveAdminAuth(given: string | undefined, dataDir: string, log: Logger): Promise<AdminAuth> {
  if (given) return { token: given, protectReads: true };
  const file = join(dataDir, 'admin-token');
  let token = '';
  try {
    token = (await readFile(file, 'utf8')).trim();
  } catch { /* first start */ }
  if (!/^[A-Za-z0-9_-]{32,}$/.test(token)) {
    token = `bat_${randomBytes(24).toString('base64url')}`;
    await mkdir(dataDir, { recursive: true, mode: 0o700 });
    // tighten an existing file before the secret goes into it; 'wx'-then-rename is not needed
    // as the directory is the operator's own
    await chmod(file, 0o600).catch(() => {});
    await writeFile(file, token + '\n', { mode: 0o600 });
  }
  await chmod(file, 0o600);
  log.info({ file }, 'admin writes (PUT /routes) need the bearer token stored in this file');
  return { token, protectReads: false };
}

export async function startProxy(o: ProxyOptions): Promise<ProxyHandle> {
  const log = o.logger;
  if (!isLoopbackName(o.adminHost) && !o.adminToken) {
    throw new Error(`the admin listener on ${o.adminHost} is not loopback: set --admin-token (or BERTH_ADMIN_TOKEN)`);
  }
  if (o.controlPlaneUrl && !o.token) throw new Error('--control-plane needs --token (or BERTH_PROXY_TOKEN)');
  if (o.routesFile && o.controlPlaneUrl) throw new Error('use either --routes or --control-plane, not both');
  // one proxy per data directory: two would overwrite each other's route table and metering
  // batches (counts lost, or billed twice). A proxy that writes nothing there (a routes file, an
  // admin token given, no TLS) takes no lock: its directory may be read-only.
  const writes = o.controlPlaneUrl !== undefined || o.tls !== undefined || !o.adminToken;
  let lock: DataDirLock | null = null;
  if (writes) {
    await mkdir(o.dataDir, { recursive: true, mode: 0o700 });
    lock = await lockDataDir(o.dataDir, 'proxy');
  }
  try {
    return await start(o, lock);
  } catch (e) {
    await lock?.release();
    throw e;
  }
}

async function start(o: ProxyOptions, lock: DataDirLock | null): Promise<ProxyHandle> {
  const log = o.logger;
  const adminAuth = await resolveAdminAuth(o.adminToken, o.dataDir, log);

  // Data plane: in this thread for one worker, on worker threads otherwise.
  let plane: DataPlane | null = null;
  let pool: WorkerPool | null = null;
  let port: number;
  // scaled-to-zero routes are woken through the control plane (file-fed proxies cannot wake them)
  const activator = o.controlPlaneUrl && o.token ? new Activator(o.controlPlaneUrl, o.token, log) : null;
  // certificates are checked before anything listens: a bad file is a start error naming it
  // (uWS reads private copies of the checked files: <data-dir>/tls/N/, one N per load)
  const tlsRoot = join(o.dataDir, 'tls');
  let tlsLoads = 0;
  // (copies a proxy that stopped without closing left, with TLS on or off since)
  rmSync(tlsRoot, { recursive: true, force: true });
  const tls = o.tls ? { host: o.tls.host, port: o.tls.port, config: loadTlsConfig(o.tls, join(tlsRoot, String(++tlsLoads))), redirect: o.tls.redirect === true } : undefined;
  let tlsPort = 0;
  // an ACME pair that does not fit is left out at every load (tls.ts), and said
  const warnSkipped = (c: { skipped?: { name: string; reason: string }[] }) => {
    for (const k of c.skipped ?? []) log.warn({ certificate: k.name, err: k.reason }, 'TLS: an ACME certificate does not fit its key; not served, ordered again');
  };
  // a certificate close to its end is said at every load (renew it, then SIGHUP)
  const warnExpiry = (expiry: { name: string; notAfter: string }[]) => {
    for (const e of expiry) {
      const days = (Date.parse(e.notAfter) - Date.now()) / 86_400_000;
      if (days < 14) log.warn({ certificate: e.name, notAfter: e.notAfter, days: Math.floor(days) }, days < 0 ? 'TLS certificate has expired' : 'TLS certificate expires within 14 days');
    }
  };
  if (tls) { warnExpiry(tls.config.expiry); warnSkipped(tls.config); }
  // a wake the control plane cannot do now: the held requests are answered at once (either mode)
  if (activator) activator.onRefused = (id) => { if (plane) plane.refuseWake(id); else pool?.refuseWake(id); };
  if (o.workers <= 1 && o.threaded !== true) {
    plane = new DataPlane({ logger: log, accessLogRate: o.accessLogRate, upstreamConnections: o.upstreamConnections, ownNames: o.ownNames });
    runtime.activate = activator ? (id) => activator.activate(id) : null;
    port = await plane.listen(o.listenHost, o.listenPort);
    if (tls) tlsPort = await plane.listenTls(tls.host, tls.port, tls.config, tls.redirect);
  } else {
    pool = new WorkerPool(log);
    pool.onActivate = activator ? (id) => activator.activate(id) : null;
    ({ port, tlsPort } = await pool.start(Math.max(1, o.workers), { host: o.listenHost, port: o.listenPort, accessLogRate: o.accessLogRate, logLevel: log.level, upstreamConnections: o.upstreamConnections, ownNames: o.ownNames, canActivate: activator !== null, tls }));
  }

  // SIGHUP (cli.ts) and POST /tls/reload: the files read and checked again, then a new HTTPS
  // listener per thread; a bad file keeps the certificates in use and says which file
  let tlsChain: Promise<unknown> = Promise.resolve();
  const reloadTls = (): Promise<{ certificates: number }> => {
    const p = tlsChain.then(async () => {
      if (!o.tls || !tls) throw Object.assign(new Error('this proxy has no TLS listener (--tls-listen)'), { status: 404 });
      const snapshot = join(tlsRoot, String(++tlsLoads));
      let config;
      try {
        config = loadTlsConfig(o.tls, snapshot);
      } catch (e) {
        rmSync(snapshot, { recursive: true, force: true });
        const local = (e as { local?: boolean }).local === true;
        throw Object.assign(new Error(`certificates not reloaded, the ones in use stay: ${(e as Error).message}`), { status: local ? 500 : 422 });
      }
      try {
        if (plane) await plane.reloadTls(config);
        else await pool!.reloadTls(config, tls.config);
      } catch (e) {
        // no thread serves them (unless one could not go back: it keeps its copies in memory)
        rmSync(snapshot, { recursive: true, force: true });
        throw e;
      }
      // every thread has read the new copies: the old ones go
      if (tls.config.snapshot) rmSync(tls.config.snapshot, { recursive: true, force: true });
      tls.config = config;
      warnExpiry(config.expiry);
      warnSkipped(config);
      const certificates = 1 + config.names.length;
      log.info({ certificates }, 'TLS certificates reloaded');
      return { certificates };
    });
    tlsChain = p.catch(() => {});
    return p;
  };

  // certificates from an ACME CA for the names listed (acme/manager.ts): HTTP-01 answered by every
  // listener thread, the results written into --tls-dir, then reloaded as a SIGHUP would
  // (loaded only then: the ACME client's modules take ~0.3 s to load)
  const acmeManager: AcmeManager | null = o.tls?.acme && o.tls.dir !== undefined
    ? new (await import('./acme/manager.js')).AcmeManager(o.tls.acme, o.tls.dir, join(o.dataDir, 'acme'), log,
      async (token, answer) => { if (plane) setChallenge(token, answer); else await pool!.setChallenge(token, answer); },
      reloadTls)
    : null;
  acmeManager?.start();

  let current: RouteTableSpec | null = null;
  let source = 'none';
  let applyChain: Promise<unknown> = Promise.resolve();
  const persistFile = join(o.dataDir, 'proxy-routes.json');

  // The control plane's table on disk: a whole table as it came; one made by deltas serialised at
  // most once a second (JSON.stringify of 10,000 routes is 6-13 ms, on the serving thread
  // without workers), and at close. Writes are serialised (saveTable uses one temporary file).
  let saving: Promise<unknown> = Promise.resolve();
  let unsaved: RouteTableSpec | null = null;
  let saveTimer: NodeJS.Timeout | null = null;
  const save = (text: () => string) => {
    saving = saving.then(() => saveTable(persistFile, text())).catch((e: Error) => log.error({ err: e.message }, 'could not persist route table'));
    return saving;
  };
  const saveUnsaved = () => {
    if (saveTimer !== null) clearTimeout(saveTimer);
    saveTimer = null;
    const spec = unsaved;
    unsaved = null;
    return spec === null ? saving : save(() => JSON.stringify(spec));
  };

  /**
   * `how` (a control plane's table): its text when it came whole (kept on disk as it came; the
   * other sources' tables are not kept), the deltas that made it of the table delivered before
   * (worker threads are sent those, not the table), and how long reading it took.
   */
  const apply = (spec: RouteTableSpec, from: string, how?: Arrival) => {
    // Serialise applies so tables land in the order they arrived.
    const p = applyChain.then(() => install(spec, from, how));
    applyChain = p.catch(() => {});
    return p;
  };

  /**
   * A delta sent to the admin listener (PATCH /routes), applied to the table served when its turn
   * comes: it must name that table as its base (409 otherwise: another table came first).
   */
  const applyDelta = (delta: RouteDelta, from: string) => {
    const p = applyChain.then(() => {
      const base = current;
      if (base === null || base.version !== delta.base) {
        throw Object.assign(new Error(base === null
          ? 'no route table is served yet: PUT a whole one first'
          : `the delta is from version ${delta.base}; the table served is version ${base.version} (GET /routes, then send a delta from it, or PUT the whole table)`), { status: 409 });
      }
      const t0 = performance.now();
      const spec = applyRouteDeltas(base, [delta]);
      return install(spec, from, { change: { from: base, deltas: [delta] }, text: null, parseMs: performance.now() - t0 });
    });
    applyChain = p.catch(() => {});
    return p;
  };

  /** A checked table served: patched by the deltas that made it when it is made of the one served now, else whole. */
  const install = async (spec: RouteTableSpec, from: string, how?: Arrival) => {
    const change = how?.change;
    const text = how?.text;
    const whole = () => (plane ? plane.apply(spec) : pool!.apply(spec));
    let r: { version: number; routes: number; ms: number };
    if (change && change.from === current) {
      try {
        r = plane ? plane.applyDeltas(change.deltas, spec) : await pool!.applyDeltas(change.deltas, spec);
      } catch (e) {
        log.warn({ err: (e as Error).message }, 'route deltas could not be applied; applying the whole table');
        r = await whole();
      }
    } else r = await whole();
    current = spec;
    source = from;
    activator?.served(spec);
    log.info({
      version: r.version, routes: r.routes, applyMs: Math.round(r.ms * 100) / 100, source: from,
      ...(how ? { parseMs: Math.round(how.parseMs * 100) / 100 } : {}), ...(change ? { deltas: change.deltas.length } : {}),
    }, 'route table applied');
    if (from === 'control-plane') {
      reporter?.send();
      if (typeof text === 'string') {
        unsaved = null;
        await save(() => text);
      } else {
        unsaved = spec;
        saveTimer ??= setTimeout(() => void saveUnsaved(), 1000);
        saveTimer.unref();
      }
    }
    return r;
  };

  const stats = async (): Promise<StatsSnapshot> => (plane ? plane.snapshot() : merge(await pool!.stats()));
  const reporter: Reporter | null = o.controlPlaneUrl
    ? new Reporter(o.controlPlaneUrl, o.token!, async () => ({ tableVersion: current?.version ?? null, counts: plane ? plane.reportCounts() : mergeCounts(await pool!.reportCounts()) }), log)
    : null;
  reporter?.start();
  // metering deltas (shared/metering/schema.ts): kept in <data-dir>/proxy-metering.json until acknowledged
  const meter: MeterReporter | null = o.controlPlaneUrl
    ? new MeterReporter(o.controlPlaneUrl, o.token!, await MeterOutbox.open(join(o.dataDir, 'proxy-metering.json'), log),
      async () => (plane ? plane.drainMeters() : pool!.drainMeters()), log)
    : null;
  meter?.start();

  let fileSource: FileSource | null = null;
  let cpSource: ControlPlaneSource | null = null;
  if (o.routesFile) {
    fileSource = new FileSource(o.routesFile, async (t) => { await apply(t, 'file'); }, (e) => log.error({ err: e.message }, 'route file'));
    await fileSource.start();
  } else if (o.controlPlaneUrl) {
    const saved = await loadTable(persistFile).catch((e: Error) => {
      log.error({ err: e.message, file: persistFile }, 'persisted route table is invalid; ignoring it');
      return null;
    });
    if (saved) {
      await apply(saved, 'persisted');
      log.info({ version: saved.version, file: persistFile }, 'serving the persisted route table until the control plane answers');
    }
    cpSource = new ControlPlaneSource(o.controlPlaneUrl, o.token!, async (t, how) => (await apply(t, 'control-plane', how)).ms, log, o.watchIdleMs);
    cpSource.start();
  }

  const admin: Server = createAdminServer({
    // (and a data plane listens: all of a pool's workers may be starting again)
    ready: () => current !== null && (pool === null || pool.serving > 0),
    table: () => current,
    apply,
    applyDelta,
    stats,
    reloadTls,
    status: () => ({
      tableVersion: current?.version ?? null,
      source,
      workers: Math.max(1, o.workers),
      // worker threads started again after one died (pool.ts)
      workerRestarts: pool?.restarts ?? 0,
      controlPlane: cpSource ? { url: o.controlPlaneUrl, connected: cpSource.connected, lastError: cpSource.lastError, proxyId: reporter!.proxyId } : null,
      metering: meter ? { stream: meter.outbox.stream, pendingBatches: meter.outbox.pending, lastError: meter.lastError } : null,
      // when each certificate expires (renew, then SIGHUP / POST /tls/reload)
      tls: tls ? { listen: `${tls.host}:${tlsPort}`, certificates: tls.config.expiry, ...(acmeManager ? { acme: acmeManager.list() } : {}) } : null,
    }),
    extraMetrics: () => (tls ? tlsExpiryMetrics(tls.config.expiry) : '') + (pool ? workerRestartMetric(pool.restarts) : ''),
  }, adminAuth);
  admin.listen(o.adminPort, o.adminHost);
  await once(admin, 'listening');
  const adminPort = (admin.address() as AddressInfo).port;
  log.info({
    listen: `${o.listenHost}:${port}`, ...(tls ? { tls: `${tls.host}:${tlsPort}`, certificates: 1 + tls.config.names.length } : {}),
    admin: `${o.adminHost}:${adminPort}`, workers: Math.max(1, o.workers),
  }, 'berth proxy listening');

  return {
    port,
    tlsPort,
    adminPort,
    adminToken: adminAuth.token,
    apply,
    reloadTls,
    async close() {
      try {
        await closeAll();
      } finally {
        await lock?.release();
      }
    },
  };

  async function closeAll(): Promise<void> {
    fileSource?.stop();
    cpSource?.stop();
    await acmeManager?.stop();
    await applyChain;
    await saveUnsaved();
    reporter?.stop();
    await activator?.close();
    admin.close();
    admin.closeAllConnections();
    await meter?.halt();
    if (plane) await plane.close();
    const last = pool ? await pool.close() : undefined;
    // what the last requests counted: persisted, and delivered if the control plane answers
    await meter?.flush(last).catch((e: Error) => log.error({ err: e.message }, 'metering: final flush failed'));
    if (pool) await pool.terminate();
    // the private copies of the TLS keys uWS read go with the proxy
    if (o.tls) rmSync(tlsRoot, { recursive: true, force: true });
  }
}
