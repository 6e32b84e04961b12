import { isIP } from 'node:net';
import { resolve } from 'node:path';
import { UsageError } from '../shared/cli/args.js';
import { workloadConfig, type WorkloadConfig } from './workloads/config.js';
import { envNumber } from './env.js';
import { defaultHostPorts, deniedRanges, egressGuardMode, parseDnsServers, parseEgressRanges, parseHostPorts, proxyAllow, proxyUrlPorts, type EgressGuardMode, type EgressPolicy } from './runtime/egress.js';
import { cpus, totalmem } from 'node:os';
import { parseCpu, parseMemory } from './images/fields.js';
import { parseAppDomains } from './apps/domains.js';
import { parseRegistries } from './images/registries.js';
import { ownNamesOption } from '../shared/own-names.js';
import { normalizeHost } from '../shared/hostname.js';
import { dockerOptions } from './runtime/docker.js';

/** A limit from the environment: `none` for no limit, else parsed (a bad value stops the start, naming the variable). */
function envLimit(name: string, dflt: string, parse: (v: string) => number): number | null {
  const raw = (process.env[name] ?? dflt).trim();
  if (raw.toLowerCase() === 'none') return null;
  try {
    return parse(raw);
  } catch (e) {
    throw new Error(`${name}="${raw}": ${(e as Error).message.replace(/^field "[a-z_]+"( must be|:)? ?/, '')} (or none)`);
  }
}

/** A process count: a whole number from 16 (a build needs a shell and a few tools) to 1,000,000. */
function parsePids(v: string): number {
  if (!/^[0-9]{1,7}$/.test(v) || Number(v) < 16 || Number(v) > 1_000_000) throw new Error('a whole number from 16 to 1000000');
  return Number(v);
}

/** Everything the control plane can be configured with. `startControlPlane` fills in defaults. */
export interface ControlPlaneOptions {
  /** Host to listen on (default 127.0.0.1). */
  host?: string;
  /** Port to listen on; 0 picks a free one (default 3000). */
  port?: number;
  /** Data directory: embedded Postgres, JWT key, uploads, build contexts (default ./.berth). */
  dataDir?: string;
  /** External Postgres; unset → embedded PostgreSQL in DATA_DIR/pg. */
  databaseUrl?: string;
  /** Docker endpoint: unix:///path, tcp://host:port, or a socket path. Unset → dockerode defaults (DOCKER_HOST or /var/run/docker.sock). */
  dockerHost?: string;
  /** HS256 secret for session JWTs; unset → generated once into DATA_DIR/jwt-secret. */
  jwtSecret?: string;
  /** Session lifetime in seconds (default 7 days). */
  sessionTtlSeconds?: number;
  /** `production` disables the default user. */
  env?: string;
  /** Set the Secure flag on the session cookie (default: when env is production). */
  secureCookies?: boolean;
  /** Upload size limit in bytes (default 200 MiB). */
  maxUploadBytes?: number;
  /** Archive limits: number of entries and total extracted bytes (defaults 20000 / 1 GiB). */
  maxArchiveEntries?: number;
  maxArchiveBytes?: number;
  /** Build log cap in bytes; the tail is kept (default 1 MiB). */
  maxBuildLogBytes?: number;
  /** Builds running at once (default 2). */
  buildConcurrency?: number;
  /** A build running longer than this is aborted and marked failed (default 30 min). */
  buildTimeoutMs?: number;
  /**
   * What one build's steps (RUN) may use: memory in bytes (no swap beyond it) and CPUs; null: no
   * limit. Defaults: BERTH_BUILD_MEMORY (4g) and BERTH_BUILD_CPUS (2), `none` for no limit.
   */
  buildMemoryBytes?: number | null;
  buildCpus?: number | null;
  /**
   * Processes one build's steps may run at once (runtime/build-cgroup.ts); null: no limit.
   * Default BERTH_BUILD_PIDS (1024), `none` for no limit.
   */
  buildPids?: number | null;
  /**
   * Disk one build may fill: what its steps write (every container it runs) and the finished
   * image, base included (runtime/build-disk.ts); null: no limit. Default BERTH_BUILD_DISK (10g),
   * `none` for no limit.
   */
  buildDiskBytes?: number | null;
  /**
   * What one app instance may write to its own filesystem (containers/disk-watch.ts); null: no
   * limit. Default BERTH_CONTAINER_DISK (10g), `none` for no limit; looked at every
   * BERTH_CONTAINER_DISK_POLL_MS (30000).
   */
  containerDiskBytes?: number | null;
  containerDiskPollMs?: number;
  /**
   * What a stopped instance keeps of what it wrote (containers/disk-watch.ts): a larger writable
   * layer is removed, and the instance is made afresh at its next start. Default
   * BERTH_CONTAINER_STOPPED_DISK (64m), `none` to keep everything.
   */
  containerStoppedDiskBytes?: number | null;
  /**
   * Builds stop when the Docker daemon's disk has less free than this (runtime/build-disk.ts);
   * null: no floor. Default BERTH_BUILD_MIN_FREE (1g), `none` for no floor.
   */
  buildMinFreeBytes?: number | null;
  /**
   * The largest instance a tenant may ask for (cpu_limit, memory_limit): 400 `instance_too_large`
   * past it; null: no ceiling. Defaults: BERTH_MAX_INSTANCE_CPUS and BERTH_MAX_INSTANCE_MEMORY,
   * else this host's CPUs and memory (`none` for no ceiling).
   */
  instanceMax?: { cpus: number | null; memoryBytes: number | null };
  /**
   * Login throttling (control-plane/README.md, "Security"). Per (account, source address):
   * `perAccountMax` failures answered without delay (default 5), then a delay from
   * `backoffBaseMs` (1 s) doubling per failure up to `backoffMaxMs` (15 min); forgotten after a
   * success or `perAccountWindowMs` (15 min) without failures. Per address across accounts:
   * `perIpMax` failed logins (and, on their own counter, signups) per `perIpWindowMs` (30 / 1 min).
   * Per account across addresses, counting only clients that never signed in to it (no device
   * cookie for it, not an address that signed in within `knownForMs`, 30 days):
   * `perAccountUnknownMax` failures per `perAccountUnknownWindowMs` (20 / 15 min).
   * At most `maxTracked` keys per table (10 000, LRU).
   */
  loginRateLimit?: { perIpMax?: number; perIpWindowMs?: number; perAccountMax?: number; perAccountWindowMs?: number; backoffBaseMs?: number; backoffMaxMs?: number; maxTracked?: number; perAccountUnknownMax?: number; perAccountUnknownWindowMs?: number; knownForMs?: number };
  /** Pool size (default 10). */
  dbPoolMax?: number;
  /** a query running longer is cancelled (BERTH_DB_STATEMENT_TIMEOUT_MS, default 60000; 0: never) */
  dbStatementTimeoutMs?: number;
  /** Seed example@gmail.com / example123 when the users table is empty and env != production (default true). */
  seedDefaultUser?: boolean;
  /** Log level override (default BERTH_LOG_LEVEL or info). */
  logLevel?: string;
  /** Silence logs (tests). */
  quiet?: boolean;
  /** Bearer token proxies use for /v1/routes/watch and /v1/proxy/report; unset → generated into DATA_DIR/proxy-token. */
  proxyToken?: string;
  /** Bearer token Prometheus presents on the control plane's `/metrics`; unset → BERTH_METRICS_TOKEN, else generated into DATA_DIR/metrics-token. */
  metricsToken?: string;
  /** Host address container ports are published on (default 127.0.0.1). */
  publishHost?: string;
  /** Address proxies and health checks use to reach published ports (default: publishHost, 127.0.0.1 for 0.0.0.0). */
  endpointHost?: string;
  /** Active health checks: interval, timeout, consecutive results to flip state (defaults 1000 / 1000 / 1 / 2). */
  /** probes of app instances; `startupGraceMs`: how long a starting instance that does not answer is not yet said to be unhealthy (30 s) */
  health?: { intervalMs?: number; timeoutMs?: number; healthyThreshold?: number; unhealthyThreshold?: number; startupGraceMs?: number };
  /** Reconcile loop period (default 3000 ms; Docker events trigger it sooner). */
  reconcileIntervalMs?: number;
  /** Labelled containers unknown to the database are removed once older than this (default 10 s). */
  orphanGraceMs?: number;
  /** Graceful stop: wait this long at most for proxies to ack the new table and drain (default 5000 ms). */
  drainTimeoutMs?: number;
  /** Extra wait after the ack when a proxy does not report in-flight counts for the endpoint (default 500 ms). */
  drainGraceMs?: number;
  /** SIGTERM → SIGKILL delay for `docker stop` (default 10 s). */
  stopTimeoutSec?: number;
  /** Coalescing window for route-table pushes (default 50 ms). */
  routeDebounceMs?: number;
  /**
   * How proxies hold requests an app cannot take yet (waking from zero, or at its concurrency cap):
   * at most `maxQueue` per route (503 `overloaded` past it) for at most `timeoutMs` (504
   * `queue_timeout`). Defaults BERTH_HOLD_QUEUE (1000) and BERTH_HOLD_TIMEOUT_S (30).
   */
  hold?: { maxQueue?: number; timeoutMs?: number };
  /** Kafka brokers for the container-lifecycle relay (default: KAFKA_BROKERS, comma separated). */
  kafkaBrokers?: string[];
  /** Consul agent address host:port or URL (default: CONSUL_HTTP_ADDR). */
  consulAddr?: string;
  /** Per-user quotas: images kept (409 past it), containers that should run (409), builds queued or running at once (429). Defaults 100 / 20 / 4. */
  quotas?: { images?: number; containers?: number; builds?: number };
  /** DNS names new apps must be under (apps/domains.ts); empty: any hostname. */
  appDomains?: string[];
  /** Registries a Dockerfile's images may come from (images/registries.ts; default BERTH_REGISTRIES, else the public ones). */
  registries?: string[];
  /**
   * The platform's own names (the proxy's `--apps-path-hosts`; default BERTH_APPS_PATH_HOSTS): no
   * app may take one (it would take the `/apps/{host}/` path form, and its visitors, with it).
   * The host of BERTH_PUBLIC_URL is reserved as well.
   */
  reservedHostnames?: string[];
  /**
   * Who may create an account (POST /api/auth/signup): anyone (`open`, the default), whoever
   * sends `invite` equal to `signupInvite` (`invite`), or no one (`closed`: 403).
   */
  signup?: 'open' | 'invite' | 'closed';
  signupInvite?: string;
  /**
   * Reverse proxies in front of the API (addresses or CIDRs): requests from them are taken at
   * their X-Forwarded-For/-Proto/-Host word (the client address the login limits key on). Empty:
   * none — each request's peer is the client.
   */
  trustProxy?: string[];
  /** Days a deleted app's hostname stays its owner's (default BERTH_HOSTNAME_HOLD_DAYS, 30; 0: free at once). */
  hostnameHoldDays?: number;
  /** Days events are kept once delivered (default BERTH_EVENT_RETENTION_DAYS, 90; 0: all). */
  eventRetentionDays?: number;
  /** Changes one user may make in a minute (default BERTH_WRITES_PER_MINUTE, 600). */
  writesPerMinute?: number;
  /** Open connections to the API one client address may hold (BERTH_API_CONNECTIONS_PER_ADDRESS, default 256; http/connection-cap.ts). */
  connectionsPerAddress?: number;
  /** Inactive revisions each app keeps (older ones are deleted, apps/retention.ts); null keeps all. Default 20 (Knative's). */
  revisionsKept?: number | null;
  /** and any revision active this recently (default BERTH_REVISIONS_GRACE_H, 15 h as Knative's retain-since-last-active-time) */
  revisionsGraceMs?: number;
  /** How long an instance of a revision that never served may run without passing its health check before the revision is given up on (apps/start-failure.ts; default BERTH_REVISION_START_DEADLINE_S, 600 s as Knative's progress deadline). */
  revisionStartDeadlineMs?: number;
  /** Container hardening: PID limit (default 512) and the memory limit of images that set none (bytes; default 512 MiB). */
  containerPidsLimit?: number;
  containerMemoryDefaultBytes?: number;
  /** Docker networks (created at start, bridge, inter-container traffic disabled) for app containers and build steps (defaults berth-apps / berth-builds). */
  appNetwork?: string;
  buildNetwork?: string;
  /**
   * The egress guard (runtime/egress.ts): auto (default BERTH_EGRESS_GUARD), require or off; the
   * IPv4 ranges apps and builds may not reach besides the cloud metadata services and the private
   * ranges (BERTH_EGRESS_DENY), and those they may reach in the private ranges (BERTH_EGRESS_ALLOW).
   */
  egressGuard?: EgressGuardMode;
  egressDeny?: string[];
  egressAllow?: string[];
  /** TCP ports containers may open on the host's own addresses (BERTH_EGRESS_HOST_PORTS; default 80, 443 and the proxy's ports) */
  egressHostPorts?: number[] | 'all';
  /** where containers may send DNS queries in the denied ranges and on the host (BERTH_EGRESS_DNS; default `host`: the host's DNS servers) */
  egressDns?: readonly string[] | 'host' | 'any';
  /** the ports of the proxy `berth up` starts beside this control plane (opened to containers on the host) */
  proxyPorts?: number[];
  /** The autoscaler (apps with min_instances 0); defaults are Knative's, env BERTH_AUTOSCALE_* */
  autoscale?: Partial<AutoscaleConfig>;
  /** The workload generator: the proxy it sends through (BERTH_PROXY_URL) and limits (BERTH_WORKLOAD_*) */
  workloads?: Partial<WorkloadConfig>;
}

export interface AutoscaleConfig {
  /** BERTH_AUTOSCALE=off disables it */
  enabled: boolean;
  tickMs: number;
  stableWindowMs: number;
  panicWindowPct: number;
  panicThresholdPct: number;
  scaleToZeroGraceMs: number;
  maxScaleUpRate: number;
  maxScaleDownRate: number;
}

function autoscaleConfig(o: Partial<AutoscaleConfig> | undefined): AutoscaleConfig {
  const off = (process.env.BERTH_AUTOSCALE ?? '').toLowerCase();
  // options given in code pass the same ranges as the environment
  const pick = (given: number | undefined, name: string, dflt: number, min: number, max: number, scale = 1) => {
    if (given === undefined) return envNumber(name, dflt, min, max) * scale;
    if (!Number.isFinite(given) || given < min * scale || given > max * scale) throw new UsageError(`autoscale option for ${name} (${given}) must be between ${min * scale} and ${max * scale}`);
    return given;
  };
  return {
    enabled: o?.enabled ?? !(off === 'off' || off === '0' || off === 'false'),
    tickMs: pick(o?.tickMs, 'BERTH_AUTOSCALE_TICK_MS', 2000, 50, 600_000),
    stableWindowMs: pick(o?.stableWindowMs, 'BERTH_AUTOSCALE_STABLE_WINDOW_S', 60, 0.1, 3600, 1000),
    panicWindowPct: pick(o?.panicWindowPct, 'BERTH_AUTOSCALE_PANIC_WINDOW_PCT', 10, 1, 100),
    panicThresholdPct: pick(o?.panicThresholdPct, 'BERTH_AUTOSCALE_PANIC_THRESHOLD_PCT', 200, 110, 1000),
    scaleToZeroGraceMs: pick(o?.scaleToZeroGraceMs, 'BERTH_SCALE_TO_ZERO_GRACE_S', 30, 0, 3600, 1000),
    maxScaleUpRate: pick(o?.maxScaleUpRate, 'BERTH_AUTOSCALE_MAX_SCALE_UP_RATE', 1000, 1.01, 100_000),
    maxScaleDownRate: pick(o?.maxScaleDownRate, 'BERTH_AUTOSCALE_MAX_SCALE_DOWN_RATE', 2, 1.01, 100_000),
  };
}

export interface ResolvedConfig {
  host: string;
  port: number;
  dataDir: string;
  databaseUrl: string | undefined;
  dockerHost: string | undefined;
  jwtSecret: string | undefined;
  sessionTtlSeconds: number;
  env: string;
  production: boolean;
  secureCookies: boolean;
  maxUploadBytes: number;
  maxArchiveEntries: number;
  maxArchiveBytes: number;
  maxBuildLogBytes: number;
  buildConcurrency: number;
  buildTimeoutMs: number;
  buildMemoryBytes: number | null;
  buildCpus: number | null;
  buildPids: number | null;
  buildDiskBytes: number | null;
  containerDiskBytes: number | null;
  containerDiskPollMs: number;
  containerStoppedDiskBytes: number | null;
  buildMinFreeBytes: number | null;
  instanceMax: { cpus: number | null; memoryBytes: number | null };
  loginRateLimit: { perIpMax: number; perIpWindowMs: number; perAccountMax: number; perAccountWindowMs: number; backoffBaseMs: number; backoffMaxMs: number; maxTracked: number; perAccountUnknownMax: number; perAccountUnknownWindowMs: number; knownForMs: number };
  dbPoolMax: number;
  dbStatementTimeoutMs: number;
  seedDefaultUser: boolean;
  logLevel: string;
  quiet: boolean;
  proxyToken: string | undefined;
  metricsToken: string | undefined;
  publishHost: string;
  endpointHost: string;
  health: { intervalMs: number; timeoutMs: number; healthyThreshold: number; unhealthyThreshold: number; startupGraceMs: number };
  reconcileIntervalMs: number;
  orphanGraceMs: number;
  drainTimeoutMs: number;
  drainGraceMs: number;
  stopTimeoutSec: number;
  routeDebounceMs: number;
  hold: { maxQueue: number; timeoutMs: number };
  kafkaBrokers: string[];
  consulAddr: string | undefined;
  quotas: { images: number; containers: number; builds: number };
  revisionsKept: number | null;
  revisionsGraceMs: number;
  revisionStartDeadlineMs: number;
  appDomains: string[];
  registries: string[];
  reservedHostnames: string[];
  signup: 'open' | 'invite' | 'closed';
  signupInvite: string | undefined;
  trustProxy: string[];
  hostnameHoldDays: number;
  eventRetentionDays: number;
  writesPerMinute: number;
  connectionsPerAddress: number;
  containerPidsLimit: number;
  containerMemoryDefaultBytes: number;
  appNetwork: string;
  buildNetwork: string;
  egressGuard: EgressGuardMode;
  /** the ranges the guard drops first (the metadata services' and the operator's), and those it opens in the private ranges */
  egressPolicy: EgressPolicy;
  autoscale: AutoscaleConfig;
  workloads: WorkloadConfig;
}

export function resolveConfig(o: ControlPlaneOptions): ResolvedConfig {
  if (o.jwtSecret && Buffer.byteLength(o.jwtSecret) < 32) {
    throw new UsageError(`BERTH_JWT_SECRET is ${Buffer.byteLength(o.jwtSecret)} bytes; it must be at least 32 bytes (e.g. \`openssl rand -base64 48\`), or unset to have one generated into the data dir`);
  }
  // the Docker address is checked with the rest, before Postgres starts (a refused one is a usage error)
  dockerOptions(o.dockerHost || undefined);
  const env = o.env ?? process.env.BERTH_ENV ?? 'development';
  const production = env === 'production';
  const workloads = workloadConfig(o.workloads);
  return {
    host: o.host ?? '127.0.0.1',
    port: o.port ?? 3000,
    dataDir: resolve(o.dataDir ?? './.berth'),
    databaseUrl: o.databaseUrl || undefined,
    dockerHost: o.dockerHost || undefined,
    jwtSecret: o.jwtSecret || undefined,
    sessionTtlSeconds: o.sessionTtlSeconds ?? 7 * 24 * 3600,
    env,
    production,
    secureCookies: o.secureCookies ?? production,
    maxUploadBytes: o.maxUploadBytes ?? 200 * 1024 * 1024,
    maxArchiveEntries: o.maxArchiveEntries ?? 20_000,
    maxArchiveBytes: o.maxArchiveBytes ?? 1024 * 1024 * 1024,
    maxBuildLogBytes: o.maxBuildLogBytes ?? 1024 * 1024,
    buildConcurrency: Math.max(1, o.buildConcurrency ?? 2),
    buildTimeoutMs: o.buildTimeoutMs ?? 30 * 60 * 1000,
    buildMemoryBytes: o.buildMemoryBytes !== undefined ? o.buildMemoryBytes : envLimit('BERTH_BUILD_MEMORY', '4g', (v) => parseMemory(v).bytes),
    buildCpus: o.buildCpus !== undefined ? o.buildCpus : envLimit('BERTH_BUILD_CPUS', '2', (v) => parseCpu(v)),
    buildPids: o.buildPids !== undefined ? o.buildPids : envLimit('BERTH_BUILD_PIDS', '1024', parsePids),
    buildDiskBytes: o.buildDiskBytes !== undefined ? o.buildDiskBytes : envLimit('BERTH_BUILD_DISK', '10g', (v) => parseMemory(v).bytes),
    containerDiskBytes: o.containerDiskBytes !== undefined ? o.containerDiskBytes : envLimit('BERTH_CONTAINER_DISK', '10g', (v) => parseMemory(v).bytes),
    containerDiskPollMs: o.containerDiskPollMs ?? envNumber('BERTH_CONTAINER_DISK_POLL_MS', 30_000, 1000, 86_400_000, true),
    containerStoppedDiskBytes: o.containerStoppedDiskBytes !== undefined ? o.containerStoppedDiskBytes : envLimit('BERTH_CONTAINER_STOPPED_DISK', '64m', (v) => parseMemory(v).bytes),
    buildMinFreeBytes: o.buildMinFreeBytes !== undefined ? o.buildMinFreeBytes : envLimit('BERTH_BUILD_MIN_FREE', '1g', (v) => parseMemory(v).bytes),
    instanceMax: o.instanceMax ?? {
      cpus: envLimit('BERTH_MAX_INSTANCE_CPUS', String(Math.max(1, cpus().length)), (v) => parseCpu(v)),
      memoryBytes: envLimit('BERTH_MAX_INSTANCE_MEMORY', `${Math.floor(totalmem() / 1024 ** 2)}m`, (v) => parseMemory(v).bytes),
    },
    loginRateLimit: {
      perIpMax: o.loginRateLimit?.perIpMax ?? 30,
      perIpWindowMs: o.loginRateLimit?.perIpWindowMs ?? 60_000,
      perAccountMax: o.loginRateLimit?.perAccountMax ?? 5,
      perAccountWindowMs: o.loginRateLimit?.perAccountWindowMs ?? 15 * 60_000,
      backoffBaseMs: o.loginRateLimit?.backoffBaseMs ?? 1000,
      backoffMaxMs: o.loginRateLimit?.backoffMaxMs ?? 15 * 60_000,
      maxTracked: o.loginRateLimit?.maxTracked ?? 10_000,
      perAccountUnknownMax: o.loginRateLimit?.perAccountUnknownMax ?? 20,
      perAccountUnknownWindowMs: o.loginRateLimit?.perAccountUnknownWindowMs ?? 15 * 60_000,
      knownForMs: o.loginRateLimit?.knownForMs ?? 30 * 24 * 3600_000,
    },
    dbPoolMax: o.dbPoolMax ?? 10,
    dbStatementTimeoutMs: o.dbStatementTimeoutMs ?? envNumber('BERTH_DB_STATEMENT_TIMEOUT_MS', 60_000, 0, 86_400_000, true),
    seedDefaultUser: o.seedDefaultUser ?? true,
    logLevel: o.logLevel ?? process.env.BERTH_LOG_LEVEL ?? process.env.LOG_LEVEL ?? 'info',
    quiet: o.quiet ?? false,
    proxyToken: o.proxyToken || undefined,
    metricsToken: o.metricsToken || process.env.BERTH_METRICS_TOKEN || undefined,
    publishHost: o.publishHost ?? '127.0.0.1',
    endpointHost: o.endpointHost ?? (!o.publishHost || o.publishHost === '0.0.0.0' ? '127.0.0.1' : o.publishHost),
    health: {
      intervalMs: o.health?.intervalMs ?? 1000,
      timeoutMs: o.health?.timeoutMs ?? 1000,
      healthyThreshold: Math.max(1, o.health?.healthyThreshold ?? 1),
      unhealthyThreshold: Math.max(1, o.health?.unhealthyThreshold ?? 2),
      startupGraceMs: Math.max(0, o.health?.startupGraceMs ?? 30_000),
    },
    reconcileIntervalMs: o.reconcileIntervalMs ?? 3000,
    orphanGraceMs: o.orphanGraceMs ?? 10_000,
    drainTimeoutMs: o.drainTimeoutMs ?? 5000,
    drainGraceMs: o.drainGraceMs ?? 500,
    stopTimeoutSec: o.stopTimeoutSec ?? 10,
    routeDebounceMs: o.routeDebounceMs ?? 50,
    hold: {
      maxQueue: o.hold?.maxQueue ?? envNumber('BERTH_HOLD_QUEUE', 1000, 0, 1_000_000, true),
      timeoutMs: o.hold?.timeoutMs ?? Math.round(envNumber('BERTH_HOLD_TIMEOUT_S', 30, 0.1, 3600) * 1000),
    },
    kafkaBrokers: o.kafkaBrokers ?? (process.env.KAFKA_BROKERS ? process.env.KAFKA_BROKERS.split(',').map((b) => b.trim()).filter(Boolean) : []),
    consulAddr: o.consulAddr ?? (process.env.CONSUL_HTTP_ADDR || undefined),
    quotas: {
      images: Math.max(1, o.quotas?.images ?? 100),
      containers: Math.max(1, o.quotas?.containers ?? 20),
      builds: Math.max(1, o.quotas?.builds ?? 4),
    },
    revisionsKept: revisionsKept(o.revisionsKept),
    revisionsGraceMs: o.revisionsGraceMs ?? Math.round(envNumber('BERTH_REVISIONS_GRACE_H', 15, 0, 87_600) * 3_600_000),
    revisionStartDeadlineMs: Math.max(1000, o.revisionStartDeadlineMs ?? Math.round(envNumber('BERTH_REVISION_START_DEADLINE_S', 600, 10, 86_400) * 1000)),
    appDomains: parseAppDomains(o.appDomains?.join(',')),
    registries: o.registries ?? parseRegistries(process.env.BERTH_REGISTRIES),
    reservedHostnames: (o.reservedHostnames ?? ownNamesOption(process.env.BERTH_APPS_PATH_HOSTS)).map((h) => normalizeHost(h)),
    ...signupPolicy(o.signup, o.signupInvite),
    trustProxy: trustedProxies(o.trustProxy ?? []),
    hostnameHoldDays: o.hostnameHoldDays ?? envNumber('BERTH_HOSTNAME_HOLD_DAYS', 30, 0, 3650, true),
    eventRetentionDays: o.eventRetentionDays ?? envNumber('BERTH_EVENT_RETENTION_DAYS', 90, 0, 36_500, true),
    writesPerMinute: o.writesPerMinute ?? envNumber('BERTH_WRITES_PER_MINUTE', 600, 1, 1_000_000, true),
    connectionsPerAddress: o.connectionsPerAddress ?? envNumber('BERTH_API_CONNECTIONS_PER_ADDRESS', 256, 1, 1_000_000, true),
    containerPidsLimit: Math.max(16, o.containerPidsLimit ?? 512),
    containerMemoryDefaultBytes: Math.max(6 * 1024 * 1024, o.containerMemoryDefaultBytes ?? 512 * 1024 * 1024),
    appNetwork: networkName(o.appNetwork ?? 'berth-apps', 'app network'),
    buildNetwork: networkName(o.buildNetwork ?? 'berth-builds', 'build network'),
    egressGuard: o.egressGuard ?? egressGuardMode(process.env.BERTH_EGRESS_GUARD || 'auto'),
    egressPolicy: {
      deny: deniedRanges(o.egressDeny ?? parseEgressRanges(process.env.BERTH_EGRESS_DENY ?? '', 'deny')),
      // (and the proxy, when its URL names a private address: apps call each other through it)
      allow: [...new Set([...(o.egressAllow ?? parseEgressRanges(process.env.BERTH_EGRESS_ALLOW ?? '', 'allow')), ...proxyAllow([workloads.proxyUrl, process.env.BERTH_PUBLIC_URL])])],
      hostPorts: o.egressHostPorts ?? (process.env.BERTH_EGRESS_HOST_PORTS?.trim()
        ? parseHostPorts(process.env.BERTH_EGRESS_HOST_PORTS)
        // the proxy's ports: the one workloads send through, the public URL's, and those `berth up` starts
        : defaultHostPorts([...proxyUrlPorts([workloads.proxyUrl, process.env.BERTH_PUBLIC_URL]), ...(o.proxyPorts ?? [])])),
      dns: o.egressDns ?? parseDnsServers(process.env.BERTH_EGRESS_DNS ?? ''),
    },
    autoscale: autoscaleConfig(o.autoscale),
    workloads,
  };
}

function revisionsKept(n: number | null | undefined): number | null {
  if (n === null) return null;
  if (n === undefined) return 20;
  if (!Number.isSafeInteger(n) || n < 0) throw new UsageError(`revisions kept (${n}) must be a whole number of at least 0, or "all"`);
  return n;
}

/** Docker network names: letters, digits, `_`, `.`, `-`; never one of Docker's own (bridge, host, none). */
function networkName(name: string, what: string): string {
  if (!/^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$/.test(name) || ['bridge', 'host', 'none', 'default'].includes(name)) {
    throw new UsageError(`${what} "${name}" is not a valid name for a berth-managed Docker network`);
  }
  return name;
}

/** `signup`/`signupInvite` checked together: an invite policy needs a code long enough not to be guessed. */
function signupPolicy(mode: ControlPlaneOptions['signup'], invite: string | undefined): { signup: 'open' | 'invite' | 'closed'; signupInvite: string | undefined } {
  const m = mode ?? 'open';
  if (m !== 'open' && m !== 'invite' && m !== 'closed') throw new UsageError(`signup must be open, invite or closed, not "${String(m)}"`);
  if (m === 'invite' && (invite === undefined || invite.length < 16)) throw new UsageError('signup "invite" needs an invite code of at least 16 characters (BERTH_SIGNUP_INVITE)');
  return { signup: m, signupInvite: m === 'invite' ? invite : undefined };
}

/** Trusted proxies: IP addresses or CIDRs only (never "everyone": any client could then say who it is). */
function trustedProxies(list: string[]): string[] {
  for (const a of list) {
    const [ip, bits, extra] = a.split('/');
    const v = isIP(ip);
    // (a prefix of 0 is everyone)
    // (no IPv6 zone: `fe80::1%eth0` — Fastify's proxy-addr refuses some and a zone names no peer address)
    const ok = v !== 0 && !ip.includes('%') && extra === undefined && (bits === undefined || (/^\d{1,3}$/.test(bits) && Number(bits) >= 1 && Number(bits) <= (v === 4 ? 32 : 128)));
    if (!ok) throw new UsageError(`trust-proxy "${a}" is not an IP address or CIDR (10.0.0.1, 10.0.0.0/8, fd00::/8)`);
  }
  return list;
}
