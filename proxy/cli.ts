import type { AcmeOptions } from './acme/manager.js';
import { isAddressName, isLoopbackName, isValidHostPattern } from '../shared/hostname.js';
import { availableParallelism } from 'node:os';
import { ownNamesOption } from '../shared/own-names.js';
import { resolve } from 'node:path';
import { formatHelp, parseArgs, parseListen, resolveOptions, UsageError, type OptionSpec } from '../shared/cli/args.js';
import { createLogger } from '../shared/logging.js';
import { parseAccessLogRate } from './server/access-log.js';
import { startProxy, type ProxyOptions } from './proxy.js';
import { tokenList } from '../shared/token-list.js';

/** HTTPS on the proxy (also `berth up`'s): TLS terminated by uWS, certificates by SNI. */
export const TLS_SPECS: OptionSpec[] = [
  { name: 'tls-listen', env: 'BERTH_PROXY_TLS_LISTEN', help: 'address for HTTPS client traffic (TLS terminated here; needs --tls-cert and --tls-key)' },
  { name: 'tls-cert', env: 'BERTH_TLS_CERT', help: 'default certificate (PEM, chain allowed) for clients without SNI or names --tls-dir does not cover' },
  { name: 'tls-key', env: 'BERTH_TLS_KEY', help: 'the default certificate\'s key (PEM)' },
  { name: 'tls-dir', env: 'BERTH_TLS_DIR', help: 'a certificate per server name by SNI: NAME.crt + NAME.key (shop.example.com.crt, *.example.com.crt)' },
  { name: 'https-redirect', env: 'BERTH_HTTPS_REDIRECT', boolean: true, help: 'the plain listener answers every routed request with 308 to the same URL on the HTTPS listener' },
  { name: 'acme-domains', env: 'BERTH_ACME_DOMAINS', help: 'names (comma separated) to get certificates for from an ACME CA, proven over HTTP-01 on the plain listener (port 80 as the CA reaches it); written into --tls-dir, renewed 30 days before expiry' },
  { name: 'acme-email', env: 'BERTH_ACME_EMAIL', help: 'the ACME account\'s contact (the CA writes about expiry and problems)' },
  { name: 'acme-directory', env: 'BERTH_ACME_DIRECTORY', help: 'the CA\'s ACME directory URL (default: Let\'s Encrypt; ordering accepts the CA\'s terms)' },
];

/** The most names --acme-domains may list (each is its own order and certificate). */
const MAX_ACME_DOMAINS = 100;

/** --acme-*: checked here, so a typo stops the start instead of failing orders later. */
function acmeOptions(o: Record<string, string | undefined>, hasDir: boolean): AcmeOptions | undefined {
  if (o['acme-domains'] === undefined) {
    if (o['acme-email'] !== undefined || o['acme-directory'] !== undefined) throw new UsageError('--acme-email and --acme-directory need --acme-domains');
    return undefined;
  }
  if (!hasDir) throw new UsageError('--acme-domains needs --tls-dir (where the certificates are written)');
  const domains = [...new Set(o['acme-domains'].split(',').map((d) => d.trim().toLowerCase()).filter((d) => d !== ''))];
  if (domains.length === 0) throw new UsageError('--acme-domains lists no name');
  if (domains.length > MAX_ACME_DOMAINS) throw new UsageError(`--acme-domains lists ${domains.length} names; at most ${MAX_ACME_DOMAINS}`);
  for (const d of domains) {
    if (d.startsWith('*.')) throw new UsageError(`--acme-domains: "${d}" is a wildcard; HTTP-01 proves one name at a time (list each name)`);
    // (underscores pass as hostnames here, but CAs refuse them in certificates)
    if (!isValidHostPattern(d) || d.startsWith('[') || d.includes('_') || isAddressName(d) || isLoopbackName(d) || !d.includes('.')) {
      throw new UsageError(`--acme-domains: "${d}" is not a public DNS name a CA can reach`);
    }
  }
  const email = o['acme-email']?.trim();
  // (it goes into a mailto: URL: a plain address only)
  if (!email || !/^[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(\.[A-Za-z0-9-]+)+$/.test(email) || email.length > 254) throw new UsageError('--acme-domains needs --acme-email ADDRESS (the account\'s contact)');
  const directory = o['acme-directory'];
  if (directory === undefined) return { domains, email };
  let url: URL;
  try {
    url = new URL(directory);
  } catch {
    throw new UsageError(`--acme-directory "${directory}" is not a URL`);
  }
  // the account key signs what it sends, but the certificates come back as the answer: https
  // (plain http only to a CA on this machine, as a test CA is)
  if (url.protocol !== 'https:' && !(url.protocol === 'http:' && isLoopbackName(url.hostname))) {
    throw new UsageError('--acme-directory must be an https:// URL (http:// only on loopback)');
  }
  return { domains, email, directory };
}

/** Where `/apps/{host}/` (access without DNS) is served besides IP addresses and localhost (also `berth up`'s). */
export const APPS_PATH_SPEC: OptionSpec = {
  name: 'apps-path-hosts', env: 'BERTH_APPS_PATH_HOSTS',
  help: 'the proxy\'s own names, comma separated, on which /apps/{host}/ reaches an app as on its IP address or localhost (never on other names: an app may claim them later)',
};

/** The TLS flags as ProxyOptions.tls (undefined without --tls-listen); half a configuration is a usage error. */
export function tlsOptions(o: Record<string, string | undefined>): ProxyOptions['tls'] {
  const redirect = o['https-redirect'] === 'true' || o['https-redirect'] === '1';
  if (o['https-redirect'] !== undefined && !redirect && o['https-redirect'] !== 'false' && o['https-redirect'] !== '0') throw new UsageError(`--https-redirect takes no value (got "${o['https-redirect']}")`);
  if (o['tls-listen'] === undefined) {
    if (o['tls-cert'] || o['tls-key'] || o['tls-dir'] || redirect || o['acme-domains']) throw new UsageError('--tls-cert, --tls-key, --tls-dir, --https-redirect and --acme-domains need --tls-listen HOST:PORT');
    return undefined;
  }
  if (!o['tls-cert'] || !o['tls-key']) throw new UsageError('--tls-listen needs --tls-cert and --tls-key (the default certificate)');
  const l = parseListen(o['tls-listen'], 'tls-listen');
  const acmeOpts = acmeOptions(o, o['tls-dir'] !== undefined && o['tls-dir'] !== '');
  return { host: l.host, port: l.port, cert: o['tls-cert'], key: o['tls-key'], ...(o['tls-dir'] ? { dir: o['tls-dir'] } : {}), redirect, ...(acmeOpts ? { acme: acmeOpts } : {}) };
}

const OPTIONS: OptionSpec[] = [
  { name: 'listen', env: 'BERTH_PROXY_LISTEN', default: '0.0.0.0:8080', help: 'address for client traffic' },
  { name: 'admin', env: 'BERTH_PROXY_ADMIN', default: '127.0.0.1:9901', help: 'admin listener (/healthz /readyz /metrics /routes /stats)' },
  { name: 'admin-token', env: 'BERTH_ADMIN_TOKEN', help: 'bearer token for admin writes (and reads, when given); default: generated into <data-dir>/admin-token; required when the admin listener is not loopback' },
  { name: 'routes', env: 'BERTH_ROUTES', help: 'route table JSON file, hot-reloaded when it changes' },
  { name: 'control-plane', env: 'BERTH_CONTROL_PLANE_URL', help: 'control plane URL to subscribe to for route tables' },
  { name: 'token', env: 'BERTH_PROXY_TOKEN', help: 'proxy token for the control plane (of a list "new,old", the first)' },
  { name: 'data-dir', env: 'BERTH_DATA_DIR', default: './.berth', help: 'where the last control-plane table is persisted' },
  { name: 'workers', env: 'BERTH_PROXY_WORKERS', default: '1', help: 'uWS listeners on worker threads sharing the port (1: on the main thread), or auto: one per CPU; a thread that dies is started again' },
  { name: 'access-log', env: 'BERTH_ACCESS_LOG', default: 'on', help: 'on, off, or a sampling rate such as 0.01' },
  { name: 'watch-idle-ms', env: 'BERTH_PROXY_WATCH_IDLE_MS', default: '45000', help: 'reconnect to the control plane after this much silence on its stream' },
  { name: 'upstream-connections', env: 'BERTH_UPSTREAM_CONNECTIONS', default: '256', help: 'max keep-alive connections per upstream endpoint' },
  APPS_PATH_SPEC,
  ...TLS_SPECS,
];

const USAGE = 'berth proxy --listen HOST:PORT --admin HOST:PORT (--routes FILE | --control-plane URL --token T) [--workers N|auto]';

export async function run(argv: string[]): Promise<void> {
  const args = parseArgs(argv);
  if (args.flags.has('help')) {
    process.stdout.write(formatHelp(USAGE, 'The berth edge proxy: routes by hostname to upstream endpoints.', OPTIONS));
    return;
  }
  const o = resolveOptions(args, OPTIONS);
  const listen = parseListen(o.listen!, 'listen');
  const admin = parseListen(o.admin!, 'admin');
  // (auto: one per CPU this process may use, as nginx's worker_processes auto)
  const workers = o.workers === 'auto' ? Math.min(64, availableParallelism()) : Number(o.workers);
  if (!Number.isInteger(workers) || workers < 1 || workers > 64) throw new UsageError('--workers must be an integer 1-64, or auto');
  const conns = Number(o['upstream-connections']);
  if (!Number.isInteger(conns) || conns < 1) throw new UsageError('--upstream-connections must be a positive integer');
  const watchIdleMs = Number(o['watch-idle-ms']);
  if (!Number.isInteger(watchIdleMs) || watchIdleMs < 100) throw new UsageError('--watch-idle-ms must be an integer >= 100');
  let rate: number;
  try {
    rate = parseAccessLogRate(o['access-log']);
  } catch (e) {
    throw new UsageError((e as Error).message);
  }
  if (!o.routes && !o['control-plane']) throw new UsageError('give a route table source: --routes FILE or --control-plane URL --token T');
  const tls = tlsOptions(o);
  const ownNames = ownNamesOption(o['apps-path-hosts']);
  const logger = createLogger('berth-proxy');
  // SIGHUP's default is to end the process: a certificate renewal hook firing while the proxy
  // starts must not stop it (the reload is done once it has started)
  let hupWhileStarting = false;
  const onEarlyHup = () => { hupWhileStarting = true; };
  process.on('SIGHUP', onEarlyHup);
  let handle;
  try {
    handle = await startProxy({
      listenHost: listen.host, listenPort: listen.port, adminHost: admin.host, adminPort: admin.port,
      adminToken: o['admin-token'], routesFile: o.routes, controlPlaneUrl: o['control-plane'], token: o.token === undefined ? undefined : tokenList(o.token)[0],
      dataDir: resolve(o['data-dir']!), workers, accessLogRate: rate, upstreamConnections: conns, watchIdleMs, logger, tls, ownNames,
    });
  } catch (e) {
    logger.fatal({ err: (e as Error).message }, 'proxy failed to start');
    logger.flush();
    process.stderr.write(`berth proxy: ${(e as Error).message}\n`);
    process.exit(1);
  }
  let closing = false;
  const shutdown = (sig: string) => {
    if (closing) return;
    closing = true;
    logger.info({ signal: sig }, 'shutting down: draining in-flight requests');
    void handle.close().then(() => { logger.flush(); process.exit(0); });
    setTimeout(() => process.exit(1), 10_000).unref();
  };
  process.on('SIGTERM', () => shutdown('SIGTERM'));
  process.on('SIGINT', () => shutdown('SIGINT'));
  // as nginx: a renewed certificate is picked up without a restart
  const onHup = () => {
    if (!tls) {
      logger.info('SIGHUP: no TLS listener, nothing to reload');
      return;
    }
    handle.reloadTls().catch((e: Error) => logger.error({ err: e.message }, 'SIGHUP: TLS reload failed'));
  };
  process.off('SIGHUP', onEarlyHup);
  process.on('SIGHUP', onHup);
  if (hupWhileStarting) onHup();
}
