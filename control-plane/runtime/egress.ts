import { execFile } from 'node:child_process';
import { existsSync } from 'node:fs';
import type { Logger } from '../../shared/logging.js';
import { UsageError } from '../../shared/cli/args.js';

/**
 * The egress guard: what apps and build steps may not reach through their bridge's NAT.
 *
 * By default that is link-local 169.254.0.0/16, where every major cloud serves its metadata
 * service (169.254.169.254: the host's own cloud credentials, to anyone who asks), and Alibaba's
 * 100.100.100.200. The operator adds ranges (the LAN, a VPC) with BERTH_EGRESS_DENY.
 *
 * DNS (port 53, UDP and TCP) to a denied range is let through: Docker's embedded DNS forwards a
 * container's queries from inside the container's network namespace, and GCP's resolver is
 * 169.254.169.254 itself (AWS's 169.254.169.253, or a VPC address): dropping it would break name
 * resolution for every app and build on those clouds.
 *
 * How: one iptables chain per berth bridge, `BERTH-<bridge>`, rebuilt whole in one
 * `iptables-restore --noflush` transaction, and one jump to it from DOCKER-USER, the chain Docker
 * consults before its own forwarding rules and never flushes. Chains of bridges that are gone
 * (a network removed and made again) are removed. This needs root, iptables, and the daemon's
 * bridges on this machine (not a remote or rootless daemon). Without them the guard is skipped
 * with a warning (`auto`, the default) or nothing is built or run (`require`); `off` skips it.
 */

export type EgressGuardMode = 'auto' | 'require' | 'off';
export const EGRESS_GUARD_MODES: readonly EgressGuardMode[] = ['auto', 'require', 'off'];

/** Cloud metadata services: link-local (AWS, GCP, Azure, Oracle, DigitalOcean, OpenStack) and Alibaba's. */
export const DEFAULT_EGRESS_DENY: readonly string[] = ['169.254.0.0/16', '100.100.100.200/32'];

const COMMENT = 'berth egress guard';
/** How often the control plane checks its rules are still there. */
export const EGRESS_RECHECK_MS = 60_000;
const CHAIN_PREFIX = 'BERTH-';
/** Linux interface names: at most 15 bytes; berth's bridges are `br-` and 12 hex digits */
const BRIDGE_NAME = /^[A-Za-z0-9_.-]{1,15}$/;

/**
 * `a.b.c.d/n` or `a.b.c.d` (a /32), comma separated, as network addresses (`169.254.1.1/16` is
 * `169.254.0.0/16`, as iptables prints it); `none` for no range. IPv4 only: berth's networks have
 * no IPv6.
 */
export function parseEgressDeny(text: string): string[] {
  const t = text.trim();
  if (t === 'none') return [];
  const out: string[] = [];
  for (const raw of t.split(',')) {
    const item = raw.trim();
    const m = /^(\d{1,3})\.(\d{1,3})\.(\d{1,3})\.(\d{1,3})(?:\/(\d{1,2}))?$/.exec(item);
    if (m === null) {
      const why = item.includes(':') ? ' (IPv6 ranges are not needed: berth networks have no IPv6)' : '';
      throw new UsageError(`egress deny "${item}" is not an IPv4 address or range such as 169.254.0.0/16${why}; give a comma-separated list, or none`);
    }
    const octets = [m[1], m[2], m[3], m[4]].map(Number);
    const bits = m[5] === undefined ? 32 : Number(m[5]);
    if (octets.some((o, i) => o > 255 || m[i + 1].length > 1 && m[i + 1].startsWith('0')) || bits > 32) {
      throw new UsageError(`egress deny "${item}" is not an IPv4 address or range (octets 0-255 without leading zeros, prefix 0-32)`);
    }
    const value = ((octets[0] << 24) | (octets[1] << 16) | (octets[2] << 8) | octets[3]) >>> 0;
    const mask = bits === 0 ? 0 : (0xffffffff << (32 - bits)) >>> 0;
    const net = (value & mask) >>> 0;
    const cidr = `${net >>> 24}.${(net >>> 16) & 255}.${(net >>> 8) & 255}.${net & 255}/${bits}`;
    if (!out.includes(cidr)) out.push(cidr);
  }
  return out;
}

export function egressGuardMode(text: string): EgressGuardMode {
  const t = text.trim().toLowerCase();
  if (!(EGRESS_GUARD_MODES as readonly string[]).includes(t)) throw new UsageError(`egress guard "${text}" must be one of ${EGRESS_GUARD_MODES.join(', ')}`);
  return t as EgressGuardMode;
}

/** The chain of one bridge. */
export function chainOf(bridge: string): string {
  return CHAIN_PREFIX + bridge;
}

/** iptables-restore input that (re)builds a bridge's chain: DNS through, the rest of each range dropped. */
export function chainRules(bridge: string, deny: readonly string[]): string {
  const chain = chainOf(bridge);
  const lines = ['*filter', `:${chain} - [0:0]`];
  for (const cidr of deny) {
    for (const proto of ['udp', 'tcp']) lines.push(`-A ${chain} -d ${cidr} -p ${proto} -m ${proto} --dport 53 -m comment --comment "${COMMENT}" -j RETURN`);
    lines.push(`-A ${chain} -d ${cidr} -m comment --comment "${COMMENT}" -j DROP`);
  }
  lines.push('COMMIT', '');
  return lines.join('\n');
}

/** The jumps from DOCKER-USER to berth chains in `iptables -S DOCKER-USER` output: bridge → chain. */
export function jumpsIn(listing: string): Array<{ bridge: string; chain: string }> {
  const out: Array<{ bridge: string; chain: string }> = [];
  for (const line of listing.split('\n')) {
    const m = /^-A DOCKER-USER -i (\S+) .*-j (BERTH-\S+)\s*$/.exec(line.trim());
    if (m !== null && m[2] === chainOf(m[1])) out.push({ bridge: m[1], chain: m[2] });
  }
  return out;
}

export interface EgressGuardOptions {
  mode: EgressGuardMode;
  deny: readonly string[];
  log: Logger;
  /** the iptables programs (tests) */
  iptables?: string;
  iptablesRestore?: string;
  /** does this interface exist on this machine (tests) */
  hasInterface?: (name: string) => boolean;
}

export class EgressGuard {
  private warned = false;
  /** the bridges of the last install that worked (what recheck() keeps in place) */
  private installed: readonly string[] = [];

  constructor(private readonly o: EgressGuardOptions) {}

  /**
   * Install the guard for these bridges (those of the berth networks). With `auto`, a guard that
   * cannot be installed is a warning, once; with `require` it is an error naming why.
   */
  async apply(bridges: readonly string[]): Promise<void> {
    const { mode, deny, log } = this.o;
    if (mode === 'off') return;
    const why = await this.install(bridges).then(() => null, (e: Error) => e.message);
    if (why === null) {
      this.installed = [...bridges];
      if (deny.length > 0) log.info({ bridges, deny }, 'egress guard in place: apps and builds cannot reach these ranges (DNS excepted)');
      return;
    }
    const message = `egress guard not installed: ${why}. Apps and builds can reach the cloud metadata service (169.254.169.254) and the LAN; run the control plane as root beside the Docker daemon with iptables, or add the rules of docs/security.md "Networks" yourself (BERTH_EGRESS_GUARD=off says you have)`;
    if (mode === 'require') throw new Error(message);
    if (!this.warned) log.warn(message);
    this.warned = true;
  }

  /**
   * Put the rules back when something removed or changed them (a firewall reload, an operator's
   * `iptables -F`). True when they had to be.
   */
  async recheck(): Promise<boolean> {
    if (this.installed.length === 0) return false;
    const iptables = this.o.iptables ?? 'iptables';
    const listing = await run(iptables, ['-w', '10', '-S', 'DOCKER-USER']).catch(() => '');
    let intact = true;
    for (const b of this.installed) {
      const want = chainRules(b, this.o.deny).split('\n').filter((l) => l.startsWith('-A '));
      const have = (await run(iptables, ['-w', '10', '-S', chainOf(b)]).catch(() => '')).split('\n').filter((l) => l.startsWith('-A '));
      if (!jumpsIn(listing).some((j) => j.bridge === b) || want.join('\n') !== have.join('\n')) intact = false;
    }
    if (intact) return false;
    await this.install(this.installed);
    this.o.log.warn({ bridges: this.installed }, 'the egress guard rules were removed or changed (a firewall reload?); put back');
    return true;
  }

  private async install(bridges: readonly string[]): Promise<void> {
    const hasInterface = this.o.hasInterface ?? ((n: string) => existsSync(`/sys/class/net/${n}`));
    for (const b of bridges) {
      if (!BRIDGE_NAME.test(b)) throw new Error(`bridge "${b}" is not an interface name berth can write rules for`);
      if (!hasInterface(b)) throw new Error(`the berth bridge ${b} is not on this machine (a remote or rootless Docker daemon)`);
    }
    const iptables = this.o.iptables ?? 'iptables';
    const listing = await run(iptables, ['-w', '10', '-S', 'DOCKER-USER']).catch((e: Error) => {
      throw new Error(/No chain|does not exist/i.test(e.message)
        ? 'iptables has no DOCKER-USER chain (is dockerd running with --iptables=false?)'
        : `cannot read iptables (${e.message.split('\n')[0]})`);
    });
    for (const b of bridges) {
      await run(this.o.iptablesRestore ?? 'iptables-restore', ['-w', '10', '--noflush'], chainRules(b, this.o.deny));
      const jump = ['DOCKER-USER', '-i', b, '-m', 'comment', '--comment', COMMENT, '-j', chainOf(b)];
      if (!jumpsIn(listing).some((j) => j.bridge === b)) await run(iptables, ['-w', '10', '-I', ...jump.slice(0, 1), '1', ...jump.slice(1)]);
    }
    // chains of bridges that are gone (their network was removed)
    for (const j of jumpsIn(listing)) {
      if (bridges.includes(j.bridge) || hasInterface(j.bridge)) continue;
      await run(iptables, ['-w', '10', '-D', 'DOCKER-USER', '-i', j.bridge, '-m', 'comment', '--comment', COMMENT, '-j', j.chain]).catch(() => {});
      await run(iptables, ['-w', '10', '-F', j.chain]).catch(() => {});
      await run(iptables, ['-w', '10', '-X', j.chain]).catch(() => {});
      this.o.log.info({ bridge: j.bridge }, 'removed the egress guard of a bridge that is gone');
    }
  }
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
