import { execFile } from 'node:child_process';
import { existsSync, readFileSync, readlinkSync } from 'node:fs';
import { join } from 'node:path';
import type { Logger } from '../../shared/logging.js';
import { UsageError } from '../../shared/cli/args.js';

/**
 * The egress guard: what apps and build steps may not reach from their bridge.
 *
 * Always the cloud metadata services, which hand the host's own cloud credentials to anyone who
 * asks: link-local 169.254.0.0/16 (AWS, GCP, Azure IMDS, Oracle, DigitalOcean, OpenStack, ECS task
 * credentials), Azure's WireServer 168.63.129.16, Alibaba's 100.100.100.200. The operator adds
 * ranges with BERTH_EGRESS_DENY.
 *
 * By default also the private ranges (RFC 1918 and carrier-grade NAT): the LAN or VPC the host
 * sits in, with the platform's own database, brokers and admin ports. Apps get the internet, not
 * the operator's network, as on Cloud Run without a VPC connector. BERTH_EGRESS_ALLOW opens ranges
 * in them (a package mirror, a database the apps are meant to use; `private` opens them all); it
 * never opens the metadata services or a range the operator denied, whose rules come first.
 * Traffic between containers of one bridge is left to Docker's own rules (berth networks disable
 * it).
 *
 * The host itself, reached through its own addresses (the bridge's gateway, its LAN address), is
 * not the internet either: it runs the operator's services (a Consul agent, an exporter, sshd, a
 * published port's docker-proxy when ports are published on 0.0.0.0). Containers may reach the
 * host's TCP ports in BERTH_EGRESS_HOST_PORTS only — by default 80, 443 and the proxy's own ports,
 * so apps can call each other through the proxy — and DNS; `all` opens every port (the metadata
 * ranges excepted).
 *
 * DNS (port 53, UDP and TCP) is let through to the host's DNS servers, wherever they are:
 * Docker's embedded DNS forwards a container's queries to them from inside the container's network
 * namespace (a build step on the default bridge asks them itself), and they are often in a denied
 * range — a resolver on the LAN, the VPC's (AWS 10.x.0.2, 169.254.169.253), GCP's 169.254.169.254,
 * Azure's 168.63.129.16: dropping them would break name resolution for every app and build. Only
 * them: port 53 is not a way into the rest of the denied ranges and the host (a DNS tunnel through
 * an internal resolver, a TCP service on 53). By default (BERTH_EGRESS_DNS=host) they are the
 * nameservers Docker uses — the host's /etc/resolv.conf, systemd-resolved's upstream servers
 * when that names its stub, the daemon's `--dns` and the `dns` of its daemon.json — read again at
 * every recheck (a DHCP lease may add one) and never forgotten while the control plane runs (a
 * container keeps the servers it started with; a file read while it is being rewritten must not
 * cut everyone off); the operator may name them, or say `any` (port 53 open to every address).
 * Matched by the address and port the container dialled, before a redirect.
 *
 * Rules match the connection's original destination (conntrack), and for forwarded traffic also
 * where a redirect (DNAT) really took it: two iptables chains per bridge, rebuilt whole in one
 * `iptables-restore --noflush` transaction. `BERTH-<bridge>` is jumped to from DOCKER-USER
 * (forwarded traffic; the chain Docker consults before its own rules and never flushes) and drops
 * every denied range and the private ones; `BERTH-IN-<bridge>` from INPUT (traffic to the host
 * itself) drops the metadata ranges, so a metadata address the host redirects to itself (the ECS
 * agent does, to 127.0.0.1) is caught, and every port but DNS and the host ports, while the host's
 * own LAN address, where the proxy answers, stays reachable on them. Packets conntrack cannot place
 * in a connection (INVALID, UNTRACKED: crafted with a build step's raw sockets) are dropped in
 * both. Chains of bridges that are gone (a
 * network removed and made again) are removed; rules removed by someone else (a firewall reload)
 * are put back by recheck(), which the control plane runs every minute, and which also retries a
 * guard that could not be installed.
 *
 * This needs root, iptables, and the daemon's bridges on this machine (not a remote or rootless
 * daemon). Without them: a warning (`auto`, the default), or nothing is built or run (`require`);
 * `off` skips it all.
 */

export type EgressGuardMode = 'auto' | 'require' | 'off';
const EGRESS_GUARD_MODES: readonly EgressGuardMode[] = ['auto', 'require', 'off'];

/** Cloud metadata services: always denied while the guard is on. */
const METADATA_RANGES: readonly string[] = ['169.254.0.0/16', '168.63.129.16/32', '100.100.100.200/32'];
/** Private ranges (RFC 1918, RFC 6598 carrier-grade NAT): denied unless BERTH_EGRESS_ALLOW opens them. */
export const PRIVATE_RANGES: readonly string[] = ['10.0.0.0/8', '172.16.0.0/12', '192.168.0.0/16', '100.64.0.0/10'];

const COMMENT = 'berth egress guard';
/** What a tenant's build log or container error says while a required guard is missing: the operator's details stay in the log. */
const NOT_IN_PLACE = 'the platform\'s network guard is not in place; its operator has been told (the control plane log says why)';
/** How often the control plane checks its rules are still there. */
export const EGRESS_RECHECK_MS = 60_000;
/** What the guard drops and opens (config.ts: BERTH_EGRESS_DENY, BERTH_EGRESS_ALLOW). */
export interface EgressPolicy {
  /** dropped first, whatever `allow` says: the metadata services and the operator's ranges (deniedRanges()) */
  deny: readonly string[];
  /** opened in the private ranges (parseEgressRanges(…, 'allow')) */
  allow: readonly string[];
  /** TCP ports containers may open on the host's own addresses (parseHostPorts()), or all of them */
  hostPorts: readonly number[] | 'all';
  /**
   * where containers may send DNS queries in the denied ranges and on the host (parseDnsServers()):
   * these ranges, `host` (the host's DNS servers, hostDnsServers(), read at every install and
   * recheck) or `any` (every address)
   */
  dns: readonly string[] | 'host' | 'any';
}
/** A policy whose DNS servers are known: what the rules are written from. */
export type EgressRules = EgressPolicy & { dns: readonly string[] | 'any' };

/**
 * Where a bridge's traffic is checked, each hook by a chain of its own: forwarded traffic
 * (DOCKER-USER) against every denied range and the private ones; traffic to the host itself
 * (INPUT) against the metadata ranges and the host ports, since the host's own LAN address serves
 * the proxy, which apps may call (a private or operator's range must not cut them off from it).
 */
const HOOKS = [
  { hook: 'DOCKER-USER', prefix: 'BERTH-', rules: (bridge: string, p: EgressRules) => forwardRules(bridge, p) },
  { hook: 'INPUT', prefix: 'BERTH-IN-', rules: (_bridge: string, p: EgressRules) => inputRules(p) },
] as const;
type Hook = (typeof HOOKS)[number];
/** Linux interface names: at most 15 bytes; berth's bridges are `br-` and 12 hex digits */
const BRIDGE_NAME = /^[A-Za-z0-9_.-]{1,15}$/;

/**
 * Ranges to deny besides the metadata services (`deny`), or to open in the private ranges
 * (`allow`, where `private` names them all): `a.b.c.d/n` or `a.b.c.d` (a /32), comma separated,
 * as network addresses (`10.1.2.3/8` is `10.0.0.0/8`); empty for none. IPv4 only: berth's
 * networks have no IPv6.
 */
export function parseEgressRanges(text: string, what: 'deny' | 'allow'): string[] {
  const out: string[] = [];
  if (text.trim() === '') return out;
  for (const raw of text.split(',')) {
    const item = raw.trim();
    if (what === 'allow' && item.toLowerCase() === 'private') {
      for (const r of PRIVATE_RANGES) if (!out.includes(r)) out.push(r);
      continue;
    }
    const m = /^([\d.]{7,15})(?:\/(\d{1,2}))?$/.exec(item);
    if (m === null) {
      const why = item.includes(':') ? ' (IPv6 ranges are not needed: berth networks have no IPv6)' : what === 'allow' ? ' or "private"' : '';
      throw new UsageError(`egress ${what} "${item}" is not an IPv4 address or range such as 10.0.0.0/8${why}; give a comma-separated list`);
    }
    const value = ipv4Value(m[1]);
    const bits = m[2] === undefined ? 32 : Number(m[2]);
    if (value === null || bits > 32 || bits < 1) {
      throw new UsageError(`egress ${what} "${item}" is not an IPv4 address or range (octets 0-255 without leading zeros, prefix 1-32)`);
    }
    const net = (value & ((0xffffffff << (32 - bits)) >>> 0)) >>> 0;
    const cidr = `${net >>> 24}.${(net >>> 16) & 255}.${(net >>> 8) & 255}.${net & 255}/${bits}`;
    if (!out.includes(cidr)) out.push(cidr);
  }
  return out;
}

/** The ranges the guard drops: the metadata services and the operator's. */
export function deniedRanges(extra: readonly string[]): string[] {
  return [...new Set([...METADATA_RANGES, ...extra])];
}

export function egressGuardMode(text: string): EgressGuardMode {
  const t = text.trim().toLowerCase();
  if (!(EGRESS_GUARD_MODES as readonly string[]).includes(t)) throw new UsageError(`egress guard "${text}" must be one of ${EGRESS_GUARD_MODES.join(', ')}`);
  return t as EgressGuardMode;
}

/** A bridge's chain for one hook. */
function chainOf(bridge: string, h: Hook): string {
  return h.prefix + bridge;
}

const COMMENT_ARGS = ['-m', 'comment', '--comment', COMMENT];
/** Packets that belong to no connection conntrack knows: nothing a container needs sends them. */
const UNPLACED_DROP = ['-m', 'conntrack', '--ctstate', 'INVALID,UNTRACKED', ...COMMENT_ARGS, '-j', 'DROP'];

/**
 * A bridge's forwarded-traffic rules (arguments after `-A <chain>`), in order: traffic to the same
 * bridge left to Docker; DNS to the DNS servers let through; the denied ranges dropped; the allowed
 * ranges let through; the private ranges dropped, those allowed whole left out.
 */
export function forwardRules(bridge: string, p: EgressRules): string[][] {
  const out: string[][] = [['-o', bridge, ...COMMENT_ARGS, '-j', 'RETURN'], UNPLACED_DROP, ...dnsRules(p.dns)];
  const anyDns = p.dns === 'any';
  out.push(...denyRules(p.deny, true, anyDns));
  for (const cidr of p.allow) {
    for (const match of ['--ctorigdst', '--ctreplsrc']) out.push(['-m', 'conntrack', match, cidr, '--ctdir', 'ORIGINAL', ...COMMENT_ARGS, '-j', 'RETURN']);
  }
  out.push(...denyRules(PRIVATE_RANGES.filter((r) => !p.allow.includes(r)), true, anyDns));
  return out;
}

/**
 * DNS (UDP and TCP port 53) to these servers let through; none with `any` (denyRules() lets DNS
 * through then). The port is the one the container dialled (a server's other port the host
 * redirects to some `:53` is not DNS to it).
 */
function dnsRules(dns: readonly string[] | 'any'): string[][] {
  const out: string[][] = [];
  if (dns === 'any') return out;
  for (const cidr of dns) {
    for (const proto of ['udp', 'tcp']) {
      out.push(['-p', proto, '-m', 'conntrack', '--ctproto', proto, '--ctorigdst', cidr, '--ctorigdstport', '53', '--ctdir', 'ORIGINAL', ...COMMENT_ARGS, '-j', 'RETURN']);
    }
  }
  return out;
}

/**
 * A bridge's rules for traffic to the host itself (arguments after `-A <chain>`), in order: DNS to
 * the DNS servers let through (a resolver on the host's address; a metadata address the host
 * redirects to itself may be one); the metadata ranges dropped; the host ports let through; every
 * other connection a container opens to the host dropped. Replies to the host's own connections
 * (the proxy's, health checks) are the other direction.
 */
export function inputRules(p: EgressRules): string[][] {
  const anyDns = p.dns === 'any';
  const out = [UNPLACED_DROP, ...dnsRules(p.dns), ...denyRules(METADATA_RANGES, false, anyDns)];
  if (p.hostPorts === 'all') return out;
  const opened = ['-m', 'conntrack', '--ctdir', 'ORIGINAL'];
  if (anyDns) for (const proto of ['udp', 'tcp']) out.push(['-p', proto, ...opened, '-m', proto, '--dport', '53', ...COMMENT_ARGS, '-j', 'RETURN']);
  for (const port of p.hostPorts) out.push(['-p', 'tcp', ...opened, '-m', 'tcp', '--dport', String(port), ...COMMENT_ARGS, '-j', 'RETURN']);
  out.push([...opened, ...COMMENT_ARGS, '-j', 'DROP']);
  return out;
}

/**
 * TCP ports apps and builds may open on the host's own addresses: comma-separated port numbers,
 * `all`, or `none`.
 */
export function parseHostPorts(text: string): number[] | 'all' {
  const t = text.trim().toLowerCase();
  if (t === 'all') return 'all';
  if (t === 'none') return [];
  const out: number[] = [];
  for (const raw of t.split(',')) {
    const item = raw.trim();
    const port = /^[1-9][0-9]{0,4}$/.test(item) ? Number(item) : 0;
    if (port < 1 || port > 65535) throw new UsageError(`egress host port "${item}" is not a port number 1-65535; give a comma-separated list, "all" or "none"`);
    if (!out.includes(port)) out.push(port);
  }
  return out;
}

/** The host ports open when the operator names none: HTTP, HTTPS and the proxy's own (0: not known). */
export function defaultHostPorts(proxyPorts: readonly number[]): number[] {
  return [...new Set([80, 443, ...proxyPorts.filter((p) => p > 0 && p < 65536)])];
}

/**
 * Rules that drop these ranges (arguments after `-A <chain>`), in order: DNS through (`anyDns`:
 * with BERTH_EGRESS_DNS=any), each range dropped — and, for forwarded traffic (`redirected`),
 * connections a redirect (DNAT) took into the range from an address outside it (a port the host
 * forwards from its public address to the LAN, an operator's container published on 0.0.0.0).
 */
export function denyRules(ranges: readonly string[], redirected = false, anyDns = false): string[][] {
  const out: string[][] = [];
  for (const cidr of ranges) {
    // (ORIGINAL: packets of connections the container opened; the replies to connections the host
    // opened to it, the proxy's and the health checker's, travel the other way and pass)
    const dst = ['-m', 'conntrack', '--ctorigdst', cidr, '--ctdir', 'ORIGINAL'];
    if (anyDns) for (const proto of ['udp', 'tcp']) out.push(['-p', proto, ...dst, '-m', proto, '--dport', '53', ...COMMENT_ARGS, '-j', 'RETURN']);
    out.push([...dst, ...COMMENT_ARGS, '-j', 'DROP']);
    if (redirected) out.push(['-m', 'conntrack', '--ctreplsrc', cidr, '--ctdir', 'ORIGINAL', ...COMMENT_ARGS, '-j', 'DROP']);
  }
  return out;
}

/** Is this IPv4 address (dotted) in one of these ranges (network/bits)? */
export function inRanges(address: string, ranges: readonly string[]): boolean {
  const v = ipv4Value(address);
  if (v === null) return false;
  return ranges.some((r) => {
    const [net, bits] = r.split('/');
    const n = ipv4Value(net);
    const mask = Number(bits) === 0 ? 0 : (0xffffffff << (32 - Number(bits))) >>> 0;
    return n !== null && ((v & mask) >>> 0) === n;
  });
}

/** A dotted IPv4 address as a number (octets 0-255, no leading zeros), or null. */
function ipv4Value(a: string): number | null {
  const m = /^(\d{1,3})\.(\d{1,3})\.(\d{1,3})\.(\d{1,3})$/.exec(a);
  if (m === null) return null;
  const parts = [m[1], m[2], m[3], m[4]];
  if (parts.some((p) => Number(p) > 255 || (p.length > 1 && p.startsWith('0')))) return null;
  const o = parts.map(Number);
  return ((o[0] << 24) | (o[1] << 16) | (o[2] << 8) | o[3]) >>> 0;
}

/** An http(s) URL's host and port (the scheme's when it names none), or null when it is not one. */
function hostPort(url: string | undefined): { host: string; port: number } | null {
  if (!url) return null;
  try {
    const u = new URL(url.trim());
    if (u.protocol !== 'http:' && u.protocol !== 'https:') return null;
    return { host: u.hostname, port: u.port !== '' ? Number(u.port) : u.protocol === 'https:' ? 443 : 80 };
  } catch {
    return null;
  }
}

/**
 * The proxy's address as a range to allow, when its URL names a private IPv4 address (a proxy on
 * another machine of the LAN): apps call each other through it. Names are not resolved.
 */
export function proxyAllow(urls: readonly (string | undefined)[]): string[] {
  const out: string[] = [];
  for (const url of urls) {
    const host = hostPort(url)?.host ?? '';
    if (inRanges(host, PRIVATE_RANGES) && !out.includes(`${host}/32`)) out.push(`${host}/32`);
  }
  return out;
}

/** The ports of the proxy's URLs (0 for one that is not a URL: config checks those elsewhere). */
export function proxyUrlPorts(urls: readonly (string | undefined)[]): number[] {
  return urls.map((u) => hostPort(u)?.port ?? 0);
}

/**
 * Where containers may send DNS queries (BERTH_EGRESS_DNS): `host` (the default, empty too), `any`,
 * or IPv4 addresses and ranges, comma separated.
 */
export function parseDnsServers(text: string): readonly string[] | 'host' | 'any' {
  const t = text.trim().toLowerCase();
  if (t === '' || t === 'host') return 'host';
  if (t === 'any') return 'any';
  try {
    return parseEgressRanges(t, 'deny');
  } catch {
    throw new UsageError(`egress DNS "${text.trim()}" must be "host", "any" or IPv4 addresses of DNS servers, comma separated`);
  }
}

/** Where Docker and the host keep DNS servers (tests give their own). */
export interface DnsSources {
  resolvConf: string;
  /** systemd-resolved's list of upstream servers, which Docker reads when resolv.conf names its stub 127.0.0.53 */
  resolvedConf: string;
  /** the daemon's configuration file, unless its command line names another */
  daemonJson: string;
  /** where the Docker daemon's command line is found: `<proc>/<pid>/cmdline` */
  proc: string;
  /** the daemon's pid file (dockerd's `--pidfile` default) */
  pidFile: string;
}
const DNS_SOURCES: DnsSources = { resolvConf: '/etc/resolv.conf', resolvedConf: '/run/systemd/resolve/resolv.conf', daemonJson: '/etc/docker/daemon.json', proc: '/proc', pidFile: '/var/run/docker.pid' };

/** A file's text, or '' when it cannot be read. */
function readText(file: string): string {
  try {
    return readFileSync(file, 'utf8');
  } catch {
    return '';
  }
}

/**
 * The command line of the Docker daemon, or []: the process its pid file names, when that is a
 * `dockerd` in this process's own pid namespace. Never found by name alone: a tenant's container
 * can run a process called `dockerd` with `--dns` flags of its choosing, and its processes are in
 * the host's /proc too (in a pid namespace of their own).
 */
function dockerdArgs(from: DnsSources): string[] {
  const pid = readText(from.pidFile).trim();
  if (!/^[1-9][0-9]{0,9}$/.test(pid)) return [];
  if (readText(join(from.proc, pid, 'comm')).trim() !== 'dockerd') return [];
  const ns = (of: string): string | null => {
    try {
      return readlinkSync(join(from.proc, of, 'ns', 'pid'));
    } catch {
      return null;
    }
  };
  const mine = ns('self');
  if (mine === null || ns(pid) !== mine) return [];
  return readText(join(from.proc, pid, 'cmdline')).split('\0').filter((a) => a !== '');
}

/**
 * The host's DNS servers, as /32s: those Docker hands containers or forwards their queries to —
 * the IPv4 nameservers of resolv.conf, of systemd-resolved's upstream list when resolv.conf names
 * its stub 127.0.0.53, the daemon's `--dns` flags (of the process its pid file names, see
 * dockerdArgs) and the `dns` of its configuration file (the `--config-file` it was started with,
 * else daemon.json). Loopback addresses are left out (Docker
 * asks them from the host's namespace, past these rules). What cannot be read adds nothing.
 */
export function hostDnsServers(from: DnsSources = DNS_SOURCES): string[] {
  const out = new Set<string>();
  const add = (a: unknown) => {
    if (typeof a === 'string' && ipv4Value(a) !== null && !a.startsWith('127.')) out.add(`${a}/32`);
  };
  const nameservers = (file: string): string[] => [...readText(file).matchAll(/^[ \t]*nameserver[ \t]+([^\s#;]+)/gm)].map((m) => m[1]);
  const listed = nameservers(from.resolvConf);
  for (const a of listed) add(a);
  if (listed.includes('127.0.0.53')) for (const a of nameservers(from.resolvedConf)) add(a);
  const args = dockerdArgs(from);
  let config = from.daemonJson;
  for (let i = 0; i < args.length; i++) {
    const [flag, inline] = args[i].startsWith('--') && args[i].includes('=') ? [args[i].slice(0, args[i].indexOf('=')), args[i].slice(args[i].indexOf('=') + 1)] : [args[i], undefined];
    if (flag !== '--dns' && flag !== '--config-file') continue;
    const value = inline ?? args[++i];
    if (flag === '--dns') add(value);
    else if (value) config = value;
  }
  try {
    const dns = (JSON.parse(readText(config)) as { dns?: unknown }).dns;
    if (Array.isArray(dns)) for (const a of dns) add(a);
  } catch {
    /* no configuration file, or not JSON: Docker's defaults */
  }
  return [...out].sort();
}

/** iptables-restore input that (re)builds a bridge's chains in one transaction. */
export function restoreInput(bridge: string, p: EgressRules): string {
  const quote = (a: string) => (/\s/.test(a) ? `"${a}"` : a);
  const lines = ['*filter'];
  for (const h of HOOKS) {
    const chain = chainOf(bridge, h);
    lines.push(`:${chain} - [0:0]`, ...h.rules(bridge, p).map((r) => `-A ${chain} ${r.map(quote).join(' ')}`));
  }
  lines.push('COMMIT', '');
  return lines.join('\n');
}

/** A hook's jump to a bridge's chain (arguments after `-I/-C/-D <hook>`). */
function jumpRule(bridge: string, h: Hook): string[] {
  return ['-i', bridge, ...COMMENT_ARGS, '-j', chainOf(bridge, h)];
}

/** The bridges whose berth chain a hook jumps to, in `iptables -S <hook>` output. */
export function jumpsIn(listing: string, hook: string): string[] {
  const h = HOOKS.find((x) => x.hook === hook);
  const out: string[] = [];
  if (h === undefined) return out;
  const re = new RegExp(`^-A ${hook} -i (\\S+) .*-j (BERTH-\\S+)\\s*$`);
  for (const line of listing.split('\n')) {
    const m = re.exec(line.trim());
    if (m !== null && m[2] === chainOf(m[1], h)) out.push(m[1]);
  }
  return out;
}

export interface EgressGuardOptions {
  mode: EgressGuardMode;
  /** what to drop and open */
  policy: EgressPolicy;
  log: Logger;
  /** the iptables programs (tests) */
  iptables?: string;
  iptablesRestore?: string;
  /** does this interface exist on this machine (tests) */
  hasInterface?: (name: string) => boolean;
  /** how `auto` says it could not install the guard: warn (production), or info (a laptop, where no metadata service is) */
  failLevel?: 'warn' | 'info';
  /** where `dns: 'host'` reads the host's DNS servers (tests) */
  dnsSources?: DnsSources;
}

export class EgressGuard {
  /** the bridges to guard (the berth networks'), from the last apply() */
  private bridges: readonly string[] = [];
  private state: 'none' | 'installed' | 'failed' = 'none';
  /** each bridge chain's `iptables -S` listing right after it was built */
  private built = new Map<string, string>();
  /** installs and checks one at a time (the recheck timer and a network setup may meet) */
  private turn: Promise<unknown> = Promise.resolve();
  /** the DNS servers of the rules last installed */
  private dns: readonly string[] | 'any' | null = null;
  /** with `dns: 'host'`: every DNS server the host has named since start (a running container keeps the ones it started with) */
  private readonly seenDns = new Set<string>();

  constructor(private readonly o: EgressGuardOptions) {}

  private serial<T>(fn: () => Promise<T>): Promise<T> {
    const p = this.turn.then(fn);
    this.turn = p.catch(() => {});
    return p;
  }

  /**
   * Install the guard for these bridges (those of the berth networks). With `auto`, a guard that
   * cannot be installed is a warning (recheck() tries again); with `require` it is an error.
   */
  apply(bridges: readonly string[]): Promise<void> {
    if (this.o.mode === 'off') return Promise.resolve();
    return this.serial(async () => {
      this.bridges = [...bridges];
      await this.attempt();
    });
  }

  /**
   * With `require`: throws unless the guard is in place now. Builds and container creates and
   * starts ask each time (runtime/docker.ts ensureNetworks), so rules lost later and not put back
   * by recheck() hold them too.
   */
  assertInPlace(): void {
    if (this.o.mode === 'require' && this.state !== 'installed') throw new Error(NOT_IN_PLACE);
  }

  /** The policy with its DNS servers known (`host`: those named now and before). */
  private rules(): EgressRules {
    const p = this.o.policy;
    if (p.dns !== 'host') return p as EgressRules;
    for (const s of hostDnsServers(this.o.dnsSources)) this.seenDns.add(s);
    return { ...p, dns: [...this.seenDns].sort() };
  }

  private async attempt(): Promise<boolean> {
    const { log, mode } = this.o;
    const rules = this.rules();
    const why = await this.install(this.bridges, rules).then(() => null, (e: Error) => e.message);
    if (why === null) {
      if (this.state !== 'installed') {
        log.info({ bridges: this.bridges, deny: [...rules.deny, ...PRIVATE_RANGES.filter((r) => !rules.allow.includes(r))], allow: rules.allow, hostPorts: rules.hostPorts, dns: rules.dns },
          'egress guard in place: apps and builds cannot reach the deny ranges (DNS to the DNS servers excepted)');
      }
      this.dns = rules.dns;
      this.state = 'installed';
      return true;
    }
    if (this.state !== 'failed') {
      const message = `egress guard not installed: ${why}. Apps and builds can reach the cloud metadata service (169.254.169.254) and the private network the host is in; run the control plane as root beside the Docker daemon with iptables, or add the rules of docs/security.md "Networks" yourself (BERTH_EGRESS_GUARD=off says you have)`;
      if (mode === 'require') log.error(`${message}; nothing is built or run until it is in place (tried again every minute)`);
      else log[this.o.failLevel ?? 'warn'](`${message}; tried again every minute`);
    }
    this.state = 'failed';
    // (the operator's reason as the cause: a caller that shows only the message tells a tenant nothing more)
    if (mode === 'require') throw new Error(NOT_IN_PLACE, { cause: new Error(why) });
    return false;
  }

  /**
   * Put the rules back when something removed or changed them (a firewall reload, an operator's
   * `iptables -F`), or install them when that failed before. True when it (re)installed them.
   */
  recheck(): Promise<boolean> {
    if (this.o.mode === 'off') return Promise.resolve(false);
    return this.serial(async () => {
      if (this.bridges.length === 0) return false;
      if (this.state !== 'installed') return this.attempt().catch(() => false);
      if (this.o.policy.dns === 'host') await this.adoptDns();
      const rules = this.rules();
      if (String(rules.dns) !== String(this.dns)) {
        // a new DNS server (a DHCP lease, a VPN): the rules in place still guard if this fails
        this.o.log.info({ bridges: this.bridges, dns: rules.dns, was: this.dns }, 'the host named a new DNS server; rebuilding the egress guard rules');
        try {
          await this.install(this.bridges, rules);
          this.dns = rules.dns;
          return true;
        } catch (e) {
          this.o.log.warn({ err: (e as Error).message }, 'could not rebuild the egress guard rules for the new DNS server; the rules in place stay (tried again in a minute)');
          return false;
        }
      }
      if (await this.intact()) return false;
      this.o.log.warn({ bridges: this.bridges }, 'the egress guard rules were removed or changed (a firewall reload?); putting them back');
      this.state = 'none';
      return this.attempt().catch(() => false);
    });
  }

  /**
   * The DNS servers the bridges' chains let through now join ours: another control plane on this
   * host (one chain per bridge for both) may have seen a server this one never did, and each would
   * take the other's rebuild for tampering and rebuild it back, every minute.
   */
  private async adoptDns(): Promise<void> {
    const iptables = this.o.iptables ?? 'iptables';
    const forward = HOOKS[0];
    for (const b of this.bridges) {
      const listing = await run(iptables, ['-w', '10', '-S', chainOf(b, forward)]).catch(() => '');
      for (const m of listing.matchAll(/--ctorigdst (\d{1,3}(?:\.\d{1,3}){3}\/32) --ctorigdstport 53 /g)) this.seenDns.add(m[1]);
    }
  }

  /** Is every bridge's chain as it was built, and jumped to from its hook? (a few runs of iptables: one per hook and chain) */
  private async intact(): Promise<boolean> {
    const iptables = this.o.iptables ?? 'iptables';
    for (const h of HOOKS) {
      const jumps = jumpsIn(await run(iptables, ['-w', '10', '-S', h.hook]).catch(() => ''), h.hook);
      if (this.bridges.some((b) => !jumps.includes(b))) return false;
    }
    for (const [chain, listing] of this.built) {
      if ((await run(iptables, ['-w', '10', '-S', chain]).catch(() => null)) !== listing) return false;
    }
    return true;
  }

  private async install(bridges: readonly string[], rules: EgressRules): Promise<void> {
    const hasInterface = this.o.hasInterface ?? ((n: string) => existsSync(`/sys/class/net/${n}`));
    for (const b of bridges) {
      if (!BRIDGE_NAME.test(b)) throw new Error(`bridge "${b}" is not an interface name berth can write rules for`);
      if (!hasInterface(b)) throw new Error(`the berth bridge ${b} is not on this machine (a remote or rootless Docker daemon)`);
    }
    const iptables = this.o.iptables ?? 'iptables';
    const listings = new Map<Hook, string>();
    for (const h of HOOKS) {
      listings.set(h, await run(iptables, ['-w', '10', '-S', h.hook]).catch((e: Error) => {
        throw new Error(/No chain|does not exist/i.test(e.message)
          ? `iptables has no ${h.hook} chain${h.hook === 'DOCKER-USER' ? ' (is dockerd running with --iptables=false?)' : ''}`
          : `cannot read iptables (${e.message.split('\n')[0]})`);
      }));
    }
    const built = new Map<string, string>();
    for (const b of bridges) {
      await run(this.o.iptablesRestore ?? 'iptables-restore', ['--wait=10', '--noflush'], restoreInput(b, rules));
      for (const h of HOOKS) {
        // checked just before inserting: another control plane on this host may have put it there
        if (!(await exists(iptables, h.hook, jumpRule(b, h)))) await run(iptables, ['-w', '10', '-I', h.hook, '1', ...jumpRule(b, h)]);
        // each chain as iptables lists it now: what recheck() compares against
        built.set(chainOf(b, h), await run(iptables, ['-w', '10', '-S', chainOf(b, h)]));
      }
    }
    this.built = built;
    // chains of bridges that are gone (their network was removed)
    const gone = new Set<string>();
    for (const [h, listing] of listings) {
      for (const b of jumpsIn(listing, h.hook)) {
        if (bridges.includes(b) || hasInterface(b)) continue;
        while (await exists(iptables, h.hook, jumpRule(b, h))) await run(iptables, ['-w', '10', '-D', h.hook, ...jumpRule(b, h)]);
        gone.add(b);
      }
    }
    for (const b of gone) {
      for (const h of HOOKS) {
        await run(iptables, ['-w', '10', '-F', chainOf(b, h)]).catch(() => {});
        await run(iptables, ['-w', '10', '-X', chainOf(b, h)]).catch(() => {});
      }
      this.o.log.info({ bridge: b }, 'removed the egress guard of a bridge that is gone');
    }
  }
}

/** Does this rule exist in this chain (`iptables -C`)? */
function exists(iptables: string, chain: string, rule: string[]): Promise<boolean> {
  return run(iptables, ['-w', '10', '-C', chain, ...rule]).then(() => true, () => false);
}

/** Run a program; its stderr is the error's message when it fails. */
function run(file: string, args: string[], input?: string): Promise<string> {
  return new Promise((resolve, reject) => {
    const child = execFile(file, args, { timeout: 20_000, maxBuffer: 4 * 1024 * 1024 }, (err, stdout, stderr) => {
      if (err) reject(new Error(`${file} ${args.join(' ')}: ${(stderr || err.message).trim()}`));
      else resolve(stdout);
    });
    if (input !== undefined) child.stdin?.end(input);
  });
}
