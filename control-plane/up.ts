import { randomBytes } from 'node:crypto';
import { join } from 'node:path';
import { formatHelp, parseArgs, parseListen, resolveOptions, type OptionSpec } from '../shared/cli/args.js';
import { createLogger } from '../shared/logging.js';
import { startProxy, type ProxyHandle, type ProxyOptions } from '../proxy/proxy.js';
import { APPS_PATH_SPEC, TLS_SPECS, tlsOptions } from '../proxy/cli.js';
import { ownNamesOption } from '../shared/own-names.js';
import { DEFAULT_USER } from './auth/users.js';
import { startControlPlane, type ControlPlane } from './app.js';
import { TENANT_SPECS, tenantOptions } from './cli.js';
import type { ControlPlaneOptions } from './config.js';
import { appUrls } from '../shared/client/urls.js';
import { tokenList } from '../shared/token-list.js';
import { isAddressName, normalizeHost } from '../shared/hostname.js';

const appUrl = (host: string, proxyUrl: string) => appUrls(host, proxyUrl)[0];

const SPECS: OptionSpec[] = [
  { name: 'api-listen', env: 'BERTH_API_LISTEN', default: '127.0.0.1:3000', help: 'HOST:PORT of the control-plane API' },
  { name: 'proxy-listen', env: 'BERTH_PROXY_LISTEN', default: '0.0.0.0:8080', help: 'HOST:PORT the proxy serves apps on' },
  { name: 'admin-listen', env: 'BERTH_ADMIN_LISTEN', default: '127.0.0.1:9901', help: 'HOST:PORT of the proxy admin listener' },
  { name: 'data-dir', env: 'BERTH_DATA_DIR', default: './.berth', help: 'data directory (embedded Postgres, build contexts, proxy table)' },
  { name: 'database-url', env: 'DATABASE_URL', help: 'external Postgres; unset → embedded PostgreSQL in DATA_DIR/pg' },
  { name: 'docker-host', env: 'DOCKER_HOST', help: 'Docker daemon (unix:///var/run/docker.sock; tcp://host:2376 with DOCKER_TLS_VERIFY=1 and DOCKER_CERT_PATH; plain tcp:// only on loopback)' },
  { name: 'proxy-token', env: 'BERTH_PROXY_TOKEN', help: 'proxy ↔ control-plane token (default: generated for this run)' },
  APPS_PATH_SPEC,
  ...TLS_SPECS,
  ...TENANT_SPECS,
];

const DESCRIPTION = `Runs the control plane and one proxy together, wired with a generated proxy token: sign in,
upload an archive with a Dockerfile, start containers, and reach the app through the proxy by hostname.
Kafka (KAFKA_BROKERS) and Consul (CONSUL_HTTP_ADDR) are used when set.`;

export interface UpHandle {
  cp: ControlPlane;
  proxy: ProxyHandle;
  proxyUrl: string;
  adminUrl: string;
  close(): Promise<void>;
}

/** A listen host as clients reach it: the wildcard as loopback, IPv6 in brackets. */
const shownHost = (h: string) => (h === '0.0.0.0' || h === '::' ? '127.0.0.1' : h.includes(':') ? `[${h}]` : h);

/** Start both in this process; used by `run` and by tests. */
export async function up(o: {
  apiListen: string; proxyListen: string; adminListen: string; dataDir: string;
  databaseUrl?: string; dockerHost?: string; proxyToken?: string; quiet?: boolean;
  /** an HTTPS listener on the proxy too */
  tls?: ProxyOptions['tls'];
  /** the proxy's own names (`--apps-path-hosts`); the host of BERTH_PUBLIC_URL is added */
  ownNames?: string[];
  /** quotas, container limits, networks (TENANT_SPECS) */
  tenant?: Partial<ControlPlaneOptions>;
}): Promise<UpHandle> {
  const api = parseListen(o.apiListen, 'api-listen');
  const px = parseListen(o.proxyListen, 'proxy-listen');
  const admin = parseListen(o.adminListen, 'admin-listen');
  // a list ("new,old", for rotation) is accepted whole by the control plane; its proxy presents the first
  const token = tokenList(o.proxyToken ?? '')[0] ?? `bpt_${randomBytes(24).toString('base64url')}`;
  // the listen address, when it is a name, is one of the proxy's own (reserved for apps, path form served)
  const listenName = px.host !== '' && !isAddressName(px.host) ? [normalizeHost(px.host)] : [];
  const cp = await startControlPlane({
    host: api.host, port: api.port, dataDir: o.dataDir, databaseUrl: o.databaseUrl, dockerHost: o.dockerHost,
    proxyToken: o.proxyToken?.trim() ? o.proxyToken : token, jwtSecret: process.env.BERTH_JWT_SECRET, quiet: o.quiet, ...o.tenant,
    // apps may call each other through this proxy on the host's addresses (runtime/egress.ts)
    proxyPorts: [px.port, o.tls?.port ?? 0],
    // (the proxy workloads send through is this one: BERTH_PROXY_URL's port is not opened besides)
    ...(px.port !== 0 ? { workloads: { ...o.tenant?.workloads, proxyUrl: `http://${shownHost(px.host)}:${px.port}` } } : {}),
    // no app may take a name of the proxy's own: the listen name too (the public URL's host the control plane adds)
    reservedHostnames: [...(o.ownNames ?? []), ...listenName],
  });
  // /apps/{host}/ works on the address clients are told (GET /api/info), when that is a name
  const ownNames = [...(o.ownNames ?? []), ...listenName];
  // (and the public URL's host, when it is a name)
  const publicHost = cp.app.publicInfo.proxyUrl ? new URL(cp.app.publicInfo.proxyUrl).hostname : '';
  if (publicHost !== '' && !isAddressName(publicHost)) ownNames.push(normalizeHost(publicHost));
  let proxy: ProxyHandle;
  try {
    proxy = await startProxy({
      listenHost: px.host, listenPort: px.port, adminHost: admin.host, adminPort: admin.port,
      adminToken: process.env.BERTH_ADMIN_TOKEN, controlPlaneUrl: cp.url, token,
      dataDir: join(cp.config.dataDir, 'proxy'), workers: 1, threaded: true, accessLogRate: 1, upstreamConnections: 256, tls: o.tls, ownNames,
      logger: o.quiet ? cp.log : createLogger('berth-proxy'),
    });
  } catch (e) {
    await cp.close().catch(() => {});
    throw e;
  }
  cp.config.workloads.proxyUrl = `http://${shownHost(px.host)}:${proxy.port}`; // workloads (/api/workloads) send their load through this proxy
  cp.app.publicInfo.proxyUrl ??= `http://${shownHost(px.host)}:${proxy.port}`; // clients print app URLs from it (GET /api/info)
  return {
    cp, proxy,
    proxyUrl: `http://${shownHost(px.host)}:${proxy.port}`,
    adminUrl: `http://${shownHost(admin.host)}:${proxy.adminPort}`,
    async close() {
      await proxy.close().catch(() => {});
      await cp.close();
    },
  };
}

export async function run(argv: string[]): Promise<void> {
  const args = parseArgs(argv);
  if (args.flags.has('help')) {
    process.stdout.write(formatHelp('berth up [--api-listen A] [--proxy-listen P] [--admin-listen M] [--data-dir DIR]', DESCRIPTION, SPECS));
    return;
  }
  const o = resolveOptions(args, SPECS);
  const h = await up({
    apiListen: o['api-listen']!, proxyListen: o['proxy-listen']!, adminListen: o['admin-listen']!, dataDir: o['data-dir']!,
    databaseUrl: o['database-url'], dockerHost: o['docker-host'], proxyToken: o['proxy-token'], tenant: tenantOptions(o), tls: tlsOptions(o), ownNames: ownNamesOption(o['apps-path-hosts']),
  });
  const dockerOk = await h.cp.runtime.ping().then(() => 'ok', (e: Error) => `NOT REACHABLE (${e.message}) — builds and containers will fail until it is`);
  const creds = h.cp.config.production ? '(production mode: no default user; sign up with POST /api/auth/signup)' : `${DEFAULT_USER.email} / ${DEFAULT_USER.password} (created on first start when there are no users)`;
  process.stdout.write([
    '',
    'berth is up',
    `  control plane API  ${h.cp.url}`,
    `  proxy (apps)       ${h.proxyUrl}   ← send requests with Host: <app_hostname>`,
    ...(h.proxy.tlsPort ? [`  proxy (https)      port ${h.proxy.tlsPort}   (TLS terminated by the proxy; certificates by SNI)`] : []),
    `  proxy admin        ${h.adminUrl}   (/healthz /metrics /routes /stats)`,
    `  admin token        ${process.env.BERTH_ADMIN_TOKEN ? '(from BERTH_ADMIN_TOKEN)' : join(h.cp.config.dataDir, 'proxy', 'admin-token')}   (PUT /routes needs Authorization: Bearer <it>)`,
    `  metrics token      ${h.cp.metricsTokenFile ?? '(from BERTH_METRICS_TOKEN)'}   (GET ${h.cp.url}/metrics needs Authorization: Bearer <it>)`,
    `  default login      ${creds}`,
    `  data directory     ${h.cp.config.dataDir}`,
    `  docker             ${h.cp.runtime.endpoint}: ${dockerOk}`,
    '',
    'Try it (in another terminal, from this checkout):',
    `  ./bin/berth.js login${h.cp.url === 'http://127.0.0.1:3000' ? '' : ` --api ${h.cp.url}`}      # ${h.cp.config.production ? 'your account' : `${DEFAULT_USER.email} / ${DEFAULT_USER.password}`}`,
    '  ./bin/berth.js deploy ./app --host hello.localhost    # a folder with a Dockerfile whose app listens on $PORT',
    `  curl ${appUrl('hello.localhost', h.proxyUrl)}`,
    '  ./bin/berth.js logs hello.localhost --follow',
    `(API docs: ${h.cp.url}/docs · the curl walkthrough: docs/containers.md)`,
    '',
  ].join('\n'));
  for (const sig of ['SIGTERM', 'SIGINT'] as const) process.removeAllListeners(sig);
  let stopping = false;
  const stop = (sig: string) => {
    if (stopping) process.exit(1);
    stopping = true;
    h.cp.log.info({ sig }, 'signal received; shutting down');
    const force = setTimeout(() => process.exit(1), 30_000);
    force.unref();
    h.close().then(() => process.exit(0), () => process.exit(1));
  };
  process.on('SIGTERM', () => stop('SIGTERM'));
  process.on('SIGINT', () => stop('SIGINT'));
  // renewed certificates without a restart, as `berth proxy`
  process.on('SIGHUP', () => {
    if (!h.proxy.tlsPort) {
      h.cp.log.info('SIGHUP: no TLS listener, nothing to reload');
      return;
    }
    h.proxy.reloadTls().catch((e: Error) => h.cp.log.error({ err: e.message }, 'SIGHUP: TLS reload failed'));
  });
}
