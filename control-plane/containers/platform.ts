import { ContainerDiskWatch } from './disk-watch.js';
import type { FastifyInstance } from 'fastify';
import client from 'prom-client';
import type { Logger } from '../../shared/logging.js';
import fp from '../http/fp.js';
import { BearerTokens, loadToken } from '../http/tokens.js';
import { createContainerRuntime, type ContainerRuntime } from '../runtime/containers.js';
import { RouteHub } from '../discovery/hub.js';
import { Activation } from './activation.js';
import { Autoscaler } from '../autoscale/autoscaler.js';
import { ProxyRegistry } from '../discovery/proxies.js';
import discoveryPlugin from '../discovery/plugin.js';
import { HealthChecker } from '../health/checker.js';
import { Leadership } from '../reconcile/leader.js';
import { Reconciler } from '../reconcile/reconciler.js';
import { KafkaRelay } from '../relay/kafka.js';
import { ConsulSync } from '../relay/consul.js';
import containerRoutes from './routes.js';
import { ContainerService } from './service.js';
import { discardImage } from '../images/plugin.js';

/** Everything issue 4 adds, reachable as `app.platform` (tests and `berth up` use it). */
export interface Platform {
  clusterId: string;
  /** the proxy tokens accepted (BERTH_PROXY_TOKEN may list several, for rotation) */
  proxyTokens: BearerTokens;
  runtime: ContainerRuntime;
  hub: RouteHub;
  proxies: ProxyRegistry;
  service: ContainerService;
  health: HealthChecker;
  leader: Leadership;
  reconciler: Reconciler;
  kafka: KafkaRelay | undefined;
  consul: ConsulSync | undefined;
  autoscaler: Autoscaler;
  activation: Activation;
  /** BERTH_CONTAINER_DISK: instances that wrote too much to their filesystem are stopped and replaced */
  diskWatch: ContainerDiskWatch;
}

declare module 'fastify' {
  interface FastifyInstance {
    platform: Platform;
  }
}

/** The proxy token(s): configured, else read from (or generated once into) DATA_DIR/proxy-token. */
export function loadProxyToken(configured: string | undefined, dataDir: string): Promise<{ token: string; tokens: string[]; file?: string }> {
  return loadToken(configured, dataDir, 'proxy-token', 'bpt_');
}

/**
 * Containers, health checks, discovery and route push, reconcile loop, relays. Loops start when
 * the app is ready and stop when it closes (before the database pool ends).
 */
async function platformPlugin(app: FastifyInstance): Promise<void> {
  const cfg = app.config;
  const log = app.log as unknown as Logger;
  const { rows: [{ value: clusterId }] } = await app.db.query<{ value: string }>(`SELECT value FROM berth_settings WHERE key = 'cluster_id'`);
  const { tokens, file: tokenFile } = await loadProxyToken(cfg.proxyToken, cfg.dataDir);
  const proxyTokens = new BearerTokens(tokens);
  if (tokenFile) log.info({ file: tokenFile, tokens: tokens.length }, 'proxy token (BERTH_PROXY_TOKEN) read from the data directory');
  else if (tokens.length > 1) log.info({ tokens: tokens.length }, 'proxy tokens: the first is current, the others are accepted while proxies move off them');

  const runtime = createContainerRuntime(app.runtime, log);
  // (it LISTENs for the apps whose rows changed, on any control plane: migration 029)
  const hub = new RouteHub(app.db, cfg.endpointHost, log.child({ component: 'routes' }), cfg.routeDebounceMs, 1000, cfg.hold, app.db.options.connectionString);
  const proxies = new ProxyRegistry();
  const leader = new Leadership(app.db, log);
  let health: HealthChecker | undefined;
  let consul: ConsulSync | undefined;
  const service = new ContainerService({
    db: app.db, runtime, events: app.events, hub, proxies, config: cfg, log, clusterId,
    onStarted: (c) => health?.kick(c.id),
  });
  health = new HealthChecker(app.db, cfg.health, cfg.endpointHost, async (id, h, detail, port) => {
    const row = await service.setHealth(id, h, detail, port);
    if (row) consul?.schedule();
  }, log.child({ component: 'health' }), 200, () => leader.isLeader);
  const reconciler = new Reconciler({ db: app.db, runtime, service, leader, config: cfg, log, clusterId, discard: (img) => discardImage(app, img, log) });
  const kafka = cfg.kafkaBrokers.length ? new KafkaRelay(app.db, cfg.kafkaBrokers, log.child({ component: 'kafka' })) : undefined;
  consul = cfg.consulAddr ? new ConsulSync(app.db, cfg.consulAddr, cfg.endpointHost, log.child({ component: 'consul' }), 5000, () => leader.isLeader, clusterId) : undefined;
  // stopped/deleted containers leave Consul right away too
  if (consul) hub.subscribe(() => consul?.schedule());
  if (kafka) app.events.subscribe(() => kafka.nudge());

  const activation = new Activation(app.db, service, log.child({ component: 'activation' }));
  const autoscaler = new Autoscaler({
    db: app.db, service, proxies, leader, events: app.events, log: log.child({ component: 'autoscaler' }), config: cfg.autoscale,
    activation,
  });
  const diskWatch = new ContainerDiskWatch({
    db: app.db, runtime, service, log: log.child({ component: 'disk' }), isLeader: () => leader.isLeader,
    limitBytes: cfg.containerDiskBytes, stoppedLimitBytes: cfg.containerStoppedDiskBytes, intervalMs: cfg.containerDiskPollMs, onDied: (c) => reconciler.noteDeath(c, true),
  });
  app.decorate('platform', { clusterId, proxyTokens, runtime, hub, proxies, service, health, leader, reconciler, kafka, consul, autoscaler, activation, diskWatch } satisfies Platform);

  const registers = [app.metrics.registry];
  new client.Gauge({
    name: 'berth_cp_containers', help: 'Containers by status and health', labelNames: ['status', 'health'], registers,
    async collect() {
      const { rows } = await app.db.query<{ status: string; health: string; n: number }>('SELECT status, health, count(*)::int AS n FROM containers GROUP BY 1, 2');
      this.reset();
      for (const r of rows) this.set({ status: r.status, health: r.health }, r.n);
    },
  });
  new client.Gauge({ name: 'berth_cp_route_table_version', help: 'Version of the route table this control plane publishes', registers, collect() { this.set(hub.table?.version ?? 0); } });
  new client.Gauge({ name: 'berth_cp_proxies', help: 'Proxies that reported in the last 15 s', registers, collect() { this.set(proxies.live().length); } });
  new client.Gauge({ name: 'berth_cp_route_watchers', help: 'Open /v1/routes/watch streams', registers, collect() { this.set(hub.subscriberCount); } });
  new client.Gauge({ name: 'berth_cp_reconcile_leader', help: '1 when this control plane holds the reconcile lock', registers, collect() { this.set(leader.isLeader ? 1 : 0); } });

  await app.register(containerRoutes, { service });
  await app.register(discoveryPlugin, { hub, proxies, proxyTokens, activation });

  app.addHook('onReady', async () => {
    await hub.start();
    await leader.start();
    health!.start();
    reconciler.start();
    autoscaler.start();
    diskWatch.start();
    kafka?.start();
    consul?.start();
  });
  app.addHook('onClose', async () => {
    health!.stop();
    runtime.shutdown();
    await reconciler.stop();
    await autoscaler.stop();
    await diskWatch.stop();
    await kafka?.stop();
    await consul?.stop();
    hub.stop();
    await leader.stop();
  });
}

export default fp(platformPlugin, 'berth-platform');
