import type { us_listen_socket } from 'uWebSockets.js';
import type { RouteDelta, RouteSpec, RouteTableSpec } from '../../shared/routes/schema.js';
import { applyRouteDeltas } from '../../shared/routes/delta.js';
import { hostOwners } from '../../shared/routes/validate.js';
import type { Logger } from '../../shared/logging.js';
import type { MeterEntry } from '../../shared/metering/schema.js';
import { snapshot, type StatsSnapshot } from '../metrics/prometheus.js';
import { ConcurrencySampler } from '../metrics/concurrency.js';
import { globalStats, type RouteStats } from '../metrics/route-stats.js';
import { reportCounts, type ReportCounts } from '../metrics/report-counts.js';
import { compileRouteTable, patchRouteTable, RouteState } from '../routing/table.js';
import { EndpointRegistry } from '../upstream/endpoint.js';
import { AccessLog } from './access-log.js';
import { handleRequest, handleTlsRequest } from './entry.js';
import type { TlsConfig } from './tls.js';
import { runtime } from './state.js';
import { loadUws } from './uws.js';
import { websocketBehavior } from './websocket.js';

type UwsApp = ReturnType<ReturnType<typeof loadUws>['SSLApp']>;

/** TLS apps kept open after reloads for the connections they still carry (see reloadTls). */
const MAX_RETIRED_TLS_APPS = 4;

export interface DataPlaneOptions {
  logger: Logger;
  accessLogRate: number;
  upstreamConnections: number;
  keepAliveTimeoutMs?: number;
  /** the proxy's own names, normalised (`--apps-path-hosts`): `/apps/{host}/` is served on them too */
  ownNames?: readonly string[];
}

/** One uWS listener and its route table. One per thread (`--workers N` runs N of them). */
export class DataPlane {
  readonly registry: EndpointRegistry;
  readonly state = new RouteState();
  private listenSocket: us_listen_socket | null = null;
  private app: ReturnType<ReturnType<typeof loadUws>['App']> | null = null;
  private tlsSocket: us_listen_socket | null = null;
  private tlsApp: UwsApp | null = null;
  /** TLS apps a reload replaced: their open connections finish on them (closed with the plane) */
  private retiredTlsApps: UwsApp[] = [];
  private tlsHost = '';
  private readonly uws = loadUws();
  port = 0;
  tlsPort = 0;

  private readonly sampler = new ConcurrencySampler(() => this.state.stats.values());
  /** metering reads this thread's meters (drainMeters was called): a gone route is forgotten only once reported */
  private metered = false;
  /** the route ids (and their stats) the last reportCounts() listed, as of RouteState.members */
  private reported: { members: number; ids: string[]; stats: RouteStats[] } = { members: -1, ids: [], stats: [] };
  /** the table this thread serves, as applied (what a delta applies to) */
  private spec: RouteTableSpec | null = null;

  constructor(opts: DataPlaneOptions) {
    this.sampler.start();
    this.registry = new EndpointRegistry({
      connections: opts.upstreamConnections,
      keepAliveTimeoutMs: opts.keepAliveTimeoutMs ?? 30_000,
      connectMs: 2000,
    });
    // the thread's serving state is this data plane's from here: nothing of one before it in the
    // thread (tests run several in one) — its table, redirect and activation — carries over
    runtime.table = null;
    runtime.httpsRedirect = null;
    runtime.activate = null;
    runtime.acmeChallenges = null;
    runtime.ownNames = new Set(opts.ownNames ?? []);
    runtime.accessLog = opts.accessLogRate > 0 ? new AccessLog(opts.logger.child({ log: 'access' }), opts.accessLogRate) : null;
  }

  listen(host: string, port: number): Promise<number> {
    const app = this.uws.App();
    this.app = app;
    app.ws('/*', websocketBehavior());
    app.any('/*', handleRequest);
    return new Promise((resolve, reject) => {
      app.listen(host, port, (token) => {
        if (!token) {
          reject(new Error(`could not listen on ${host}:${port} (address in use or not permitted)`));
          return;
        }
        this.listenSocket = token;
        this.port = this.uws.us_socket_local_port(token);
        resolve(this.port);
      });
    });
  }

  /**
   * An HTTPS listener beside the plain one: the same routes and handlers, TLS terminated by uWS
   * (certificates by SNI from `tls.names`, else the default), X-Forwarded-Proto: https.
   */
  async listenTls(host: string, port: number, tls: TlsConfig, redirect = false): Promise<number> {
    const app = this.tlsAppFor(tls);
    this.tlsSocket = await this.listenOn(app, host, port);
    this.tlsApp = app;
    this.tlsHost = host;
    this.tlsPort = this.uws.us_socket_local_port(this.tlsSocket);
    runtime.httpsRedirect = redirect ? (this.tlsPort === 443 ? '' : `:${this.tlsPort}`) : null;
    return this.tlsPort;
  }

  /**
   * New certificates without a restart (SIGHUP): a second listener on the same port with them
   * (SO_REUSEPORT, as workers share it), then the old listener closes. Connections already open
   * stay on the old app, whose handshakes are done, until they end; the kernel hands new ones to
   * the new listener. (Connections still in the old listener's accept queue at that instant are
   * reset unless net.ipv4.tcp_migrate_req is 1.)
   */
  async reloadTls(tls: TlsConfig): Promise<void> {
    const old = this.tlsApp;
    const oldSocket = this.tlsSocket;
    if (old === null || oldSocket === null) throw new Error('this proxy has no TLS listener (--tls-listen)');
    const app = this.tlsAppFor(tls);
    let token: us_listen_socket;
    try {
      token = await this.listenOn(app, this.tlsHost, this.tlsPort);
    } catch (e) {
      (app as { close?: () => void }).close?.();
      throw e;
    }
    this.tlsApp = app;
    this.tlsSocket = token;
    this.uws.us_listen_socket_close(oldSocket);
    this.retiredTlsApps.push(old);
    // bounded: past a few reloads the oldest app closes, with whatever connections it still has
    // (they predate several renewals; clients reconnect to the current listener)
    if (this.retiredTlsApps.length > MAX_RETIRED_TLS_APPS) (this.retiredTlsApps.shift() as { close?: () => void }).close?.();
  }

  private tlsAppFor(tls: TlsConfig): UwsApp {
    const app = this.uws.SSLApp({ cert_file_name: tls.default.cert, key_file_name: tls.default.key });
    app.ws('/*', websocketBehavior('https'));
    app.any('/*', handleTlsRequest);
    // uWS keeps a router per server name: each gets the same handlers (`domain` selects the
    // router later registrations go to; this build's typings lag)
    for (const n of tls.names) {
      app.addServerName(n.serverName, { cert_file_name: n.cert, key_file_name: n.key });
      const named = (app as unknown as { domain(name: string): typeof app }).domain(n.serverName);
      named.ws('/*', websocketBehavior('https'));
      named.any('/*', handleTlsRequest);
    }
    return app;
  }

  private listenOn(app: UwsApp, host: string, port: number): Promise<us_listen_socket> {
    return new Promise((resolve, reject) => {
      app.listen(host, port, (token) => {
        if (token) resolve(token);
        else reject(new Error(`could not listen (TLS) on ${host}:${port} (address in use or not permitted)`));
      });
    });
  }

  /**
   * Swap in a validated table. In-flight requests keep the route objects they started with. A
   * route whose spec is the same object as in the table before is kept, not compiled again.
   */
  apply(spec: RouteTableSpec): { version: number; routes: number; ms: number } {
    const t0 = performance.now();
    const table = compileRouteTable(spec, this.registry, this.state);
    this.spec = spec;
    runtime.table = table;
    this.registry.sweep(this.state.generation);
    // requests held for a route (waking, or at its concurrency cap) go to endpoints that appeared
    for (const r of table.routes) if (r.queue !== null && r.queue.length > 0 && r.targets.length > 0) r.queue.releaseAll();
    // requests held for a route that left the table (its revision lost its traffic while it
    // woke) follow their host to the route that has it now
    for (const h of this.state.homes.values()) {
      const q = h.queue;
      if (h.route !== null || q === null) continue;
      h.queue = null;
      for (const w of q.takeAll()) w.rehome();
    }
    this.state.prune(Date.now(), this.metered);
    return { version: table.version, routes: table.routes.length, ms: performance.now() - t0 };
  }

  /**
   * Apply deltas to the table this thread serves (they must be from it: throws otherwise, and the
   * main thread sends the whole table): only the routes they name are compiled and only their
   * hosts written (patchRouteTable). `merged`: the table they make, when the caller has it
   * (applyRouteDeltas on this very table: the thread without workers).
   */
  applyDeltas(deltas: readonly RouteDelta[], merged?: RouteTableSpec): { version: number; routes: number; ms: number } {
    const t0 = performance.now();
    const base = this.spec;
    const prev = runtime.table;
    if (base === null || prev === null) throw new Error('no table to apply a delta to');
    const spec = merged ?? applyRouteDeltas(base, deltas);
    const owners = hostOwners(spec);
    if (owners === undefined) throw new Error('the table the deltas made has no host index');
    // each id the deltas name, with its spec now (null: removed)
    const changed = new Map<string, RouteSpec | null>();
    for (const d of deltas) {
      for (const r of d.upsert) changed.set(r.id, r);
      for (const id of d.remove) changed.set(id, null);
    }
    const table = patchRouteTable(prev, spec.version, changed, owners, this.registry, this.state);
    runtime.table = table;
    this.spec = spec;
    // as apply() does, for the routes that changed: held requests go to endpoints that appeared,
    // or follow their host when their route left
    for (const id of changed.keys()) {
      const h = this.state.homes.get(id);
      if (h === undefined) continue;
      const r = h.route;
      if (r !== null) {
        if (r.queue !== null && r.queue.length > 0 && r.targets.length > 0) r.queue.releaseAll();
      } else if (h.queue !== null) {
        const q = h.queue;
        h.queue = null;
        for (const w of q.takeAll()) w.rehome();
      }
    }
    return { version: table.version, routes: table.routes.length, ms: performance.now() - t0 };
  }

  /**
   * The control plane cannot start an instance for `routeId` now (its owner's container quota is
   * full): the requests held for its wake are answered 503 `not_started` at once instead of at the
   * hold's timeout. Not those of a route that has endpoints (they wait for a slot, not a wake).
   */
  refuseWake(routeId: string): number {
    const h = this.state.homes.get(routeId);
    const q = h?.queue ?? null;
    if (h === undefined || q === null || q.length === 0 || (h.route !== null && h.route.targets.length > 0)) return 0;
    const held = q.takeAll();
    for (const w of held) w.refuseWake();
    return held.length;
  }

  get tableVersion(): number | null {
    return runtime.table?.version ?? null;
  }

  /** The reporter's counts (metrics/report-counts.ts): flat, the id list kept while the route ids are the same. */
  reportCounts(): ReportCounts {
    if (this.reported.members !== this.state.members) {
      const stats = [...this.state.stats.values()];
      this.reported = { members: this.state.members, ids: stats.map((x) => x.id), stats };
    }
    return reportCounts(this.reported.ids, this.reported.stats, this.registry);
  }

  snapshot(): StatsSnapshot {
    return snapshot(this.state.stats.values(), runtime.table, this.registry);
  }

  /** Metering: what every route/endpoint did since the last call (counters restart at zero). */
  drainMeters(): MeterEntry[] {
    const out: MeterEntry[] = [];
    for (const s of this.state.stats.values()) s.drainMeters(out);
    // route ids gone a while are forgotten once their last counts are in `out`
    this.metered = true;
    this.state.prune(Date.now(), true);
    return out;
  }

  /** Stop accepting, let in-flight requests finish (bounded), then close upstream pools. */
  async close(drainMs = 5000): Promise<void> {
    this.sampler.stop();
    for (const s of [this.listenSocket, this.tlsSocket]) if (s) this.uws.us_listen_socket_close(s);
    this.listenSocket = null;
    this.tlsSocket = null;
    const deadline = Date.now() + drainMs;
    while (globalStats.inflight > 0 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 20));
    // idle keep-alive client connections too: a worker thread whose loop still has sockets aborts
    // the whole process when it is terminated (uv_loop_close with open handles)
    // (App.close exists in this uWS build; its typings lag)
    for (const a of [this.app, this.tlsApp, ...this.retiredTlsApps]) (a as { close?: () => void } | null)?.close?.();
    this.app = null;
    this.tlsApp = null;
    this.retiredTlsApps = [];
    await this.registry.closeAll();
  }
}
