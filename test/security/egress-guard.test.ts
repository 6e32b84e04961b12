import { execFile, spawn, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { PassThrough } from 'node:stream';
import { promisify } from 'node:util';
import { pino } from 'pino';
import { connect, createServer } from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createRuntime } from '../../control-plane/runtime/docker.js';
import { resolveConfig } from '../../control-plane/config.js';
import { tenantOptions } from '../../control-plane/cli.js';
import { defaultHostPorts, deniedRanges, denyRules, EgressGuard, egressGuardMode, forwardRules, hostDnsServers, inRanges, inputRules, jumpsIn, parseEgressRanges, parseHostPorts, PRIVATE_RANGES, proxyAllow, restoreInput, type EgressPolicy, type EgressRules } from '../../control-plane/runtime/egress.js';
import { mkdir, mkdtemp, readFile, rm, symlink, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { BASE_IMAGE, docker, dockerRequired, dockerStatus } from '../helpers/docker.js';

/**
 * The egress guard (control-plane/runtime/egress.ts): apps and build steps cannot reach the cloud
 * metadata service (169.254.169.254), the private ranges (unless allowed) or other denied ranges
 * through their bridge's NAT; DNS to those ranges still works.
 *
 * The traffic test stands in a "metadata service" the way a cloud puts one beside a VM: a listener
 * on a link-local address in a network namespace behind a veth pair, reached by the host's routing
 * (forwarded traffic, as real metadata traffic is). A container on a guarded berth network must not
 * reach it; the same container on an unguarded bridge must (so the test can fail), and so must
 * port 53 on the same address.
 */

const run = promisify(execFile);

function memoryLog(): { log: pino.Logger; lines: () => Array<{ level: number; msg: string }> } {
  const out: string[] = [];
  const stream = new PassThrough();
  stream.on('data', (c: Buffer) => out.push(...c.toString('utf8').split('\n').filter((l) => l !== '')));
  return { log: pino({ level: 'info' }, stream), lines: () => out.map((l) => JSON.parse(l) as { level: number; msg: string }) };
}

describe('egress guard settings', () => {
  it('deny and allow ranges: IPv4 networks as iptables prints them; the metadata services are always in', () => {
    const parseEgressDeny = (t: string) => parseEgressRanges(t, 'deny');
    expect(parseEgressDeny('169.254.169.254/16, 10.1.2.3/8,192.168.0.1')).toEqual(['169.254.0.0/16', '10.0.0.0/8', '192.168.0.1/32']);
    expect(parseEgressDeny('10.0.0.0/8,10.0.0.0/8')).toEqual(['10.0.0.0/8']);
    expect(parseEgressDeny(' ')).toEqual([]);
    expect(parseEgressRanges('10.1.2.3, Private', 'allow')).toEqual(['10.1.2.3/32', ...PRIVATE_RANGES]);
    expect(() => parseEgressDeny('private')).toThrow(/^egress deny "private" is not an IPv4 address or range such as 10\.0\.0\.0\/8; give/);
    expect(() => parseEgressRanges('lan', 'allow')).toThrow(/^egress allow "lan" is not an IPv4 address or range such as 10\.0\.0\.0\/8 or "private"/);
    expect(deniedRanges(['10.0.0.0/8'])).toEqual(['169.254.0.0/16', '168.63.129.16/32', '100.100.100.200/32', '10.0.0.0/8']);
    expect(deniedRanges([])).toContain('169.254.0.0/16');
    expect(() => parseEgressDeny('fd00:ec2::254/128')).toThrow(/IPv6 ranges are not needed/);
    for (const bad of ['10.0.0.0/33', '0.0.0.0/0', '256.1.1.1', '010.0.0.1', '10.0.0.0/8;reboot', '10.0.0', 'metadata', '10.0.0.0/8,', 'none']) {
      expect(() => parseEgressDeny(bad), bad).toThrow(/not an IPv4 address or range/);
    }
  });

  it('modes: auto, require or off', () => {
    expect(egressGuardMode('Require')).toBe('require');
    expect(() => egressGuardMode('yes')).toThrow(/must be one of auto, require, off/);
  });

  it("a bridge's chain: its own bridge left to Docker, DNS to the DNS servers through, the denied ranges dropped, the allowed let through, then the private ranges dropped", () => {
    expect(denyRules(['169.254.0.0/16']).map((r) => r.join(' '))).toEqual([expect.stringMatching(/^-m conntrack --ctorigdst 169\.254\.0\.0\/16 --ctdir ORIGINAL .*-j DROP$/)]);
    // with BERTH_EGRESS_DNS=any: DNS to the range through first
    const rules = denyRules(['169.254.0.0/16'], false, true).map((r) => r.join(' '));
    expect(rules).toHaveLength(3);
    expect(rules[0]).toMatch(/^-p udp -m conntrack --ctorigdst 169\.254\.0\.0\/16 --ctdir ORIGINAL -m udp --dport 53 .*-j RETURN$/);
    expect(denyRules(['169.254.0.0/16'], true).map((r) => r.join(' '))[1]).toMatch(/^-m conntrack --ctreplsrc 169\.254\.0\.0\/16 --ctdir ORIGINAL .*-j DROP$/);
    expect(rules[1]).toMatch(/^-p tcp .*--dport 53 .*-j RETURN$/);
    expect(rules[2]).toMatch(/^-m conntrack --ctorigdst 169\.254\.0\.0\/16 --ctdir ORIGINAL .*-j DROP$/);
    const bridge = 'br-0123456789ab';
    const fwd = forwardRules(bridge, { deny: ['169.254.0.0/16', '10.1.0.0/16'], allow: ['10.0.0.0/8', '192.168.7.0/24'], hostPorts: 'all', dns: ['10.1.0.2/32'] }).map((r) => r.join(' '));
    const at = (re: RegExp) => fwd.findIndex((r) => re.test(r));
    expect(fwd[0]).toMatch(/^-o br-0123456789ab .*-j RETURN$/);
    expect(fwd[1]).toMatch(/^-m conntrack --ctstate INVALID,UNTRACKED .*-j DROP$/);
    // where a redirect took the connection counts too: a denied or private range, unless allowed
    expect(at(/--ctreplsrc 10\.1\.0\.0\/16 --ctdir ORIGINAL .*DROP$/)).toBe(at(/--ctorigdst 10\.1\.0\.0\/16 .*DROP$/) + 1);
    expect(at(/--ctreplsrc 192\.168\.7\.0\/24 .*RETURN$/)).toBeLessThan(at(/--ctreplsrc 192\.168\.0\.0\/16 .*DROP$/));
    expect(at(/--ctreplsrc 172\.16\.0\.0\/12 .*DROP$/)).toBeGreaterThan(0);
    // the operator's deny comes before the allow that contains it; the metadata before everything
    expect(at(/--ctorigdst 169\.254\.0\.0\/16 .*DROP$/)).toBeLessThan(at(/--ctorigdst 10\.1\.0\.0\/16 .*DROP$/));
    expect(at(/--ctorigdst 10\.1\.0\.0\/16 .*DROP$/)).toBeLessThan(at(/--ctorigdst 10\.0\.0\.0\/8 .*RETURN$/));
    expect(at(/--ctorigdst 192\.168\.7\.0\/24 .*RETURN$/)).toBeLessThan(at(/--ctorigdst 192\.168\.0\.0\/16 .*DROP$/));
    // a private range allowed whole is not dropped at all; the others are, after the allowed ones
    expect(at(/--ctorigdst 10\.0\.0\.0\/8 .*DROP$/)).toBe(-1);
    expect(at(/--ctorigdst 172\.16\.0\.0\/12 .*DROP$/)).toBeGreaterThan(at(/192\.168\.7\.0\/24 .*RETURN$/));
    // DNS: to the DNS server only (in a denied range), before any range is dropped; nowhere else
    // (the address and port the container dialled: a redirect of the server's other ports is not DNS)
    expect(at(/^-p udp -m conntrack --ctproto udp --ctorigdst 10\.1\.0\.2\/32 --ctorigdstport 53 --ctdir ORIGINAL .*RETURN$/)).toBe(2);
    expect(at(/^-p tcp -m conntrack --ctproto tcp --ctorigdst 10\.1\.0\.2\/32 --ctorigdstport 53 --ctdir ORIGINAL .*RETURN$/)).toBe(3);
    expect(fwd.filter((r) => / 53 /.test(r))).toHaveLength(2);
    const none = forwardRules(bridge, { deny: deniedRanges([]), allow: [], hostPorts: 'all', dns: [] }).map((r) => r.join(' '));
    for (const r of PRIVATE_RANGES) expect(none.some((l) => l.includes(`--ctorigdst ${r} `) && l.endsWith('DROP'))).toBe(true);
    expect(none.some((l) => / 53 /.test(l))).toBe(false);
    const any = forwardRules(bridge, { deny: deniedRanges([]), allow: [], hostPorts: 'all', dns: 'any' }).map((r) => r.join(' '));
    expect(any.findIndex((r) => /--ctorigdst 100\.64\.0\.0\/10 .*--dport 53 .*RETURN$/.test(r))).toBeGreaterThan(0);
    const input = restoreInput(bridge, { deny: ['169.254.0.0/16'], allow: [], hostPorts: [80, 443], dns: [] }).split('\n');
    expect(input.slice(0, 2)).toEqual(['*filter', ':BERTH-br-0123456789ab - [0:0]']);
    expect(input[2]).toContain('--comment "berth egress guard"');
    expect(jumpsIn('-N DOCKER-USER\n-A DOCKER-USER -i br-0123456789ab -m comment --comment "berth egress guard" -j BERTH-br-0123456789ab\n-A DOCKER-USER -i br-x -j BERTH-br-y\n-A DOCKER-USER -j RETURN', 'DOCKER-USER'))
      .toEqual(['br-0123456789ab']);
    expect(jumpsIn('-A INPUT -i br-0123456789ab -m comment --comment "berth egress guard" -j BERTH-IN-br-0123456789ab\n-A INPUT -i br-0123456789ab -j BERTH-br-0123456789ab', 'INPUT'))
      .toEqual(['br-0123456789ab']);
    // the host itself is checked against the metadata ranges only: an operator's or a private range stays reachable there
    const both = restoreInput(bridge, { deny: ['169.254.0.0/16', '10.0.0.0/8'], allow: [], hostPorts: [80, 443], dns: [] });
    expect(both).toMatch(/^-A BERTH-br-0123456789ab .*--ctorigdst 10\.0\.0\.0\/8 .*DROP$/m);
    expect(both).not.toMatch(/^-A BERTH-IN-br-0123456789ab .*(10\.0\.0\.0\/8|192\.168)/m);
    expect(both).toMatch(/^-A BERTH-IN-br-0123456789ab .*--ctorigdst 169\.254\.0\.0\/16 .*DROP$/m);
  });

  it("the host's own addresses: DNS to the DNS servers and the host ports open, every other connection a container opens dropped, the metadata ranges first", () => {
    const rules = inputRules({ deny: deniedRanges([]), allow: [], hostPorts: [80, 8080], dns: ['169.254.169.254/32', '10.0.0.2/32'] }).map((r) => r.join(' '));
    const at = (re: RegExp) => rules.findIndex((r) => re.test(r));
    expect(at(/--ctorigdst 169\.254\.0\.0\/16 .*DROP$/)).toBeGreaterThanOrEqual(0);
    // a DNS server at a metadata address (GCP's) the host redirects to itself: before the metadata drop
    expect(at(/^-p udp -m conntrack --ctproto udp --ctorigdst 169\.254\.169\.254\/32 --ctorigdstport 53 .*RETURN$/)).toBeLessThan(at(/--ctorigdst 169\.254\.0\.0\/16 .*DROP$/));
    expect(at(/^-p tcp -m conntrack --ctproto tcp --ctorigdst 10\.0\.0\.2\/32 --ctorigdstport 53 .*RETURN$/)).toBeGreaterThan(0);
    // port 53 of the host's other addresses: closed like any other port
    expect(rules.filter((r) => / 53 /.test(r))).toHaveLength(4);
    const any = inputRules({ deny: deniedRanges([]), allow: [], hostPorts: [80, 8080], dns: 'any' }).map((r) => r.join(' '));
    expect(any.findIndex((r) => /^-p udp -m conntrack --ctdir ORIGINAL -m udp --dport 53 .*RETURN$/.test(r))).toBeGreaterThan(any.findIndex((r) => /--ctorigdst 100\.100\.100\.200\/32 .*DROP$/.test(r)));
    expect(at(/^-p tcp -m conntrack --ctdir ORIGINAL -m tcp --dport 8080 .*RETURN$/)).toBeGreaterThan(0);
    expect(rules[rules.length - 1]).toMatch(/^-m conntrack --ctdir ORIGINAL .*-j DROP$/);
    // (the private ranges and the operator's are for forwarded traffic: the host's LAN address serves the proxy)
    expect(rules.some((r) => /10\.0\.0\.0/.test(r))).toBe(false);
    expect(rules[0]).toMatch(/^-m conntrack --ctstate INVALID,UNTRACKED .*-j DROP$/);
    // all ports: the unplaced packets and the metadata ranges only
    expect(inputRules({ deny: [], allow: [], hostPorts: 'all', dns: [] })).toEqual([inputRules({ deny: [], allow: [], hostPorts: [], dns: [] })[0], ...denyRules(deniedRanges([]))]);
    expect(inputRules({ deny: [], allow: [], hostPorts: 'all', dns: 'any' })).toEqual([inputRules({ deny: [], allow: [], hostPorts: [], dns: [] })[0], ...denyRules(deniedRanges([]), false, true)]);
    expect(inRanges('10.200.3.4', PRIVATE_RANGES)).toBe(true);
    expect(inRanges('172.32.0.1', PRIVATE_RANGES)).toBe(false);
    expect(inRanges('100.127.255.255', PRIVATE_RANGES)).toBe(true);
    expect(inRanges('apps.example.com', PRIVATE_RANGES)).toBe(false);
    expect(proxyAllow(['http://10.0.0.7:8080', 'https://192.168.1.2', 'http://127.0.0.1:8080', 'http://apps.internal:80', 'not a url', undefined, 'http://10.0.0.7:9090']))
      .toEqual(['10.0.0.7/32', '192.168.1.2/32']);
    expect(parseHostPorts(' 80, 8080,80')).toEqual([80, 8080]);
    expect(parseHostPorts('ALL')).toBe('all');
    expect(parseHostPorts('none')).toEqual([]);
    for (const bad of ['0', '65536', '08', '80;', '', 'http', '80,']) expect(() => parseHostPorts(bad), bad).toThrow(/^egress host port ".*" is not a port number 1-65535/);
    expect(defaultHostPorts([8080, 0, 443, 8443])).toEqual([80, 443, 8080, 8443]);
  });

  it('the control plane: private ranges closed unless allowed, host ports from the proxy URLs, flags and variables read', () => {
    const saved = { ...process.env };
    try {
      for (const k of ['BERTH_EGRESS_DENY', 'BERTH_EGRESS_ALLOW', 'BERTH_EGRESS_HOST_PORTS', 'BERTH_EGRESS_DNS', 'BERTH_PROXY_URL', 'BERTH_PUBLIC_URL']) delete process.env[k];
      const plain = resolveConfig({}).egressPolicy;
      expect(plain).toEqual({ deny: deniedRanges([]), allow: [], hostPorts: [80, 443, 8080], dns: 'host' });
      process.env.BERTH_PROXY_URL = 'http://127.0.0.1:9080';
      process.env.BERTH_PUBLIC_URL = 'https://apps.example.com:8443';
      expect(resolveConfig({ proxyPorts: [0, 7443] }).egressPolicy.hostPorts).toEqual([80, 443, 9080, 8443, 7443]);
      // a proxy on another machine of the LAN: apps reach it through the private ranges
      process.env.BERTH_PROXY_URL = 'http://10.0.0.7:8080';
      expect(resolveConfig({ egressAllow: ['192.168.0.0/16'] }).egressPolicy.allow).toEqual(['192.168.0.0/16', '10.0.0.7/32']);
      process.env.BERTH_EGRESS_HOST_PORTS = 'all';
      process.env.BERTH_EGRESS_ALLOW = 'private';
      process.env.BERTH_EGRESS_DENY = '10.9.0.0/16';
      process.env.BERTH_EGRESS_DNS = ' 10.0.0.2, 10.0.0.3/32 ';
      expect(resolveConfig({}).egressPolicy).toEqual({ deny: deniedRanges(['10.9.0.0/16']), allow: [...PRIVATE_RANGES, '10.0.0.7/32'], hostPorts: 'all', dns: ['10.0.0.2/32', '10.0.0.3/32'] });
      process.env.BERTH_EGRESS_DNS = 'ANY';
      expect(resolveConfig({}).egressPolicy.dns).toBe('any');
      process.env.BERTH_EGRESS_DNS = 'resolver.internal';
      expect(() => resolveConfig({})).toThrow(/egress DNS "resolver.internal" must be "host", "any" or IPv4 addresses/);
      delete process.env.BERTH_EGRESS_DNS;
      expect(resolveConfig({ egressHostPorts: [22], egressAllow: [] }).egressPolicy).toMatchObject({ allow: ['10.0.0.7/32'], hostPorts: [22] });
      process.env.BERTH_EGRESS_HOST_PORTS = '80,ssh';
      expect(() => resolveConfig({})).toThrow(/egress host port "ssh"/);
      const flags = tenantOptions({ 'egress-host-ports': 'none', 'egress-allow': '10.1.2.3', 'egress-dns': '10.0.0.2' });
      expect(flags).toMatchObject({ egressHostPorts: [], egressAllow: ['10.1.2.3/32'], egressDns: ['10.0.0.2/32'] });
      expect(tenantOptions({ 'egress-dns': 'host' }).egressDns).toBe('host');
    } finally {
      for (const k of Object.keys(process.env)) if (!(k in saved)) delete process.env[k];
      Object.assign(process.env, saved);
    }
  });

  it("the host's DNS servers: resolv.conf's, systemd-resolved's upstream ones behind its stub, the daemon's flags and configuration file; never loopback", async () => {
    const dir = await mkdtemp(join(tmpdir(), 'berth-eg-dns-'));
    try {
      const f = (name: string) => join(dir, name);
      const from = { resolvConf: f('resolv.conf'), resolvedConf: f('resolved.conf'), daemonJson: f('daemon.json'), proc: f('proc'), pidFile: f('docker.pid') };
      expect(hostDnsServers(from)).toEqual([]);
      await writeFile(from.resolvConf, '# nameserver 10.9.9.9\nsearch corp.example\nnameserver 10.0.0.2\nnameserver fd00::53\n\tnameserver 192.168.1.1  # the router\n');
      await writeFile(from.resolvedConf, 'nameserver 10.8.8.8\n');
      // (the stub's upstream list is read only when resolv.conf names the stub: not NetworkManager's 127.0.1.1)
      expect(hostDnsServers(from)).toEqual(['10.0.0.2/32', '192.168.1.1/32']);
      await writeFile(from.resolvConf, 'nameserver 127.0.1.1\n');
      expect(hostDnsServers(from)).toEqual([]);
      await writeFile(from.resolvConf, 'nameserver 127.0.0.53\noptions edns0\n');
      await writeFile(from.daemonJson, JSON.stringify({ dns: ['10.7.7.7', 'not-an-address', 127, '127.0.0.1'], 'log-driver': 'json-file' }));
      expect(hostDnsServers(from)).toEqual(['10.7.7.7/32', '10.8.8.8/32']);
      await writeFile(from.daemonJson, '{ not json');
      expect(hostDnsServers(from)).toEqual(['10.8.8.8/32']);
      // a daemon started with --dns flags and a configuration file of its own (a systemd drop-in,
      // snap): the process its pid file names, in our pid namespace
      const proc = async (pid: string, comm: string, args: string[], ns: string) => {
        await mkdir(join(from.proc, pid, 'ns'), { recursive: true });
        await writeFile(join(from.proc, pid, 'comm'), `${comm}\n`);
        await writeFile(join(from.proc, pid, 'cmdline'), [...args, ''].join('\0'));
        await symlink(ns, join(from.proc, pid, 'ns', 'pid'));
      };
      await proc('self', 'node', ['node'], 'pid:[4026531836]');
      await proc('4242', 'dockerd', ['/usr/bin/dockerd', '-H', 'fd://', '--dns', '10.5.5.5', '--dns=10.5.5.6', `--config-file=${f('snap.json')}`], 'pid:[4026531836]');
      // a tenant's process named dockerd (in a container's pid namespace), and one not in the pid file
      await proc('5000', 'dockerd', ['dockerd', '--dns', '10.6.6.6'], 'pid:[4026532999]');
      await proc('7', 'dockerd', ['dockerd', '--dns', '10.7.7.8'], 'pid:[4026531836]');
      await writeFile(f('snap.json'), JSON.stringify({ dns: ['10.4.4.4'] }));
      expect(hostDnsServers(from)).toEqual(['10.8.8.8/32']); // no pid file: no daemon flags
      await writeFile(from.pidFile, '4242\n');
      expect(hostDnsServers(from)).toEqual(['10.4.4.4/32', '10.5.5.5/32', '10.5.5.6/32', '10.8.8.8/32']);
      await writeFile(from.pidFile, '5000\n');
      expect(hostDnsServers(from)).toEqual(['10.8.8.8/32']);
      await writeFile(from.pidFile, 'not a pid');
      expect(hostDnsServers(from)).toEqual(['10.8.8.8/32']);
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });

  it("dns 'host': DNS servers another control plane on this host put in the chains are kept, not rebuilt away every minute", async () => {
    const dir = await mkdtemp(join(tmpdir(), 'berth-eg-two-'));
    try {
      const bridge = 'br-0123456789ab';
      const state = join(dir, 'state');
      await mkdir(state);
      await writeFile(join(state, 'bridges'), bridge);
      // an iptables that keeps chains in files, and its restore: enough for install and recheck
      const iptables = join(dir, 'iptables');
      await writeFile(iptables, `#!/bin/bash
shift 2
op=$1; chain=$2
if [ "$op" = -S ]; then
  echo "-N $chain"
  if [ "$chain" = DOCKER-USER ] || [ "$chain" = INPUT ]; then
    pre=BERTH-; [ "$chain" = INPUT ] && pre=BERTH-IN-
    for b in $(cat ${state}/bridges); do echo "-A $chain -i $b -m comment --comment \"berth egress guard\" -j $pre$b"; done
  else cat "${state}/$chain" 2>/dev/null; fi
fi
exit 0
`, { mode: 0o755 });
      const restore = join(dir, 'iptables-restore');
      await writeFile(restore, `#!/bin/bash
input=$(cat); printf '%s\n' "$input" > ${state}/last-restore
printf '%s\n' "$input" | while IFS= read -r line; do
  case "$line" in
    :*) c=\${line#:}; c=\${c%% *}; : > "${state}/$c" ;;
    "-A "*) c=\${line#-A }; c=\${c%% *}; printf '%s\n' "$line" >> "${state}/$c" ;;
  esac
done
`, { mode: 0o755 });
      await writeFile(join(dir, 'resolv.conf'), 'nameserver 10.0.0.2\n');
      const none = join(dir, 'none');
      const guard = new EgressGuard({
        mode: 'require', policy: { deny: deniedRanges([]), allow: [], hostPorts: [80], dns: 'host' }, log: memoryLog().log, iptables, iptablesRestore: restore,
        hasInterface: () => true, dnsSources: { resolvConf: join(dir, 'resolv.conf'), resolvedConf: none, daemonJson: none, proc: none, pidFile: none },
      });
      await guard.apply([bridge]);
      expect(await guard.recheck()).toBe(false);
      // the other control plane saw 10.9.9.9 (a server this one never read) and built its rules so
      const chain = join(state, `BERTH-${bridge}`);
      const theirs = (await readFile(chain, 'utf8')).split('\n').filter((l) => l.includes('10.0.0.2/32')).map((l) => l.replace('10.0.0.2/32', '10.9.9.9/32'));
      expect(theirs).toHaveLength(2);
      await writeFile(chain, (await readFile(chain, 'utf8')) + theirs.join('\n') + '\n');
      expect(await guard.recheck()).toBe(true);
      const rebuilt = await readFile(join(state, 'last-restore'), 'utf8');
      expect(rebuilt).toContain('--ctorigdst 10.9.9.9/32 --ctorigdstport 53');
      expect(rebuilt).toContain('--ctorigdst 10.0.0.2/32 --ctorigdstport 53');
      // and it stays so: no rebuild a minute later
      expect(await guard.recheck()).toBe(false);
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });

  it('auto: a guard that cannot be installed is one warning that says what is exposed; require: an error that names no detail', async () => {
    const m = memoryLog();
    const auto = new EgressGuard({ mode: 'auto', policy: { deny: ['169.254.0.0/16'], allow: [], hostPorts: [80, 443], dns: [] }, log: m.log, iptables: '/nonexistent/iptables', hasInterface: () => true });
    await auto.apply(['br-0123456789ab']);
    await auto.apply(['br-0123456789ab']);
    expect(await auto.recheck()).toBe(false);
    const warnings = m.lines().filter((l) => l.level === 40);
    expect(warnings).toHaveLength(1);
    expect(warnings[0].msg).toMatch(/egress guard not installed: cannot read iptables .*metadata service \(169\.254\.169\.254\).*tried again every minute/);
    const remote = new EgressGuard({ mode: 'require', policy: { deny: ['169.254.0.0/16'], allow: [], hostPorts: [80, 443], dns: [] }, log: m.log, hasInterface: () => false });
    await expect(remote.apply(['br-0123456789ab'])).rejects.toThrow(/^the platform's network guard is not in place/);
    expect(m.lines().some((l) => l.level === 50 && /bridge br-0123456789ab is not on this machine \(a remote or rootless Docker daemon\)/.test(l.msg))).toBe(true);
    const odd = new EgressGuard({ mode: 'require', policy: { deny: ['169.254.0.0/16'], allow: [], hostPorts: [80, 443], dns: [] }, log: m.log, hasInterface: () => true });
    await expect(odd.apply(['br-x y'])).rejects.toThrow(/network guard is not in place/);
    const off = new EgressGuard({ mode: 'off', policy: { deny: ['169.254.0.0/16'], allow: [], hostPorts: [80, 443], dns: [] }, log: m.log, iptables: '/nonexistent/iptables' });
    await off.apply(['br-0123456789ab']);
    expect(await off.recheck()).toBe(false);
    expect(m.lines().filter((l) => l.level === 40)).toHaveLength(1);
  });
});

/** Why the traffic test cannot run here, or null. */
async function trafficUnavailable(): Promise<string | null> {
  const s = await dockerStatus();
  if (!s.ok) return s.reason;
  if (process.getuid?.() !== 0) return 'not root (iptables and network namespaces need it)';
  for (const [cmd, args] of [['iptables', ['-w', '10', '-S', 'DOCKER-USER']], ['ip', ['netns', 'list']]] as const) {
    try {
      await run(cmd, [...args]);
    } catch (e) {
      return `${cmd} ${args.join(' ')} failed: ${(e as Error).message.split('\n')[0]}`;
    }
  }
  return null;
}

const unavailable = await trafficUnavailable();
if (unavailable !== null && !dockerRequired) process.stderr.write(`[skip] egress guard traffic: ${unavailable}\n`);

describe.skipIf(unavailable !== null && !dockerRequired)('egress guard traffic', () => {
  const id = randomBytes(3).toString('hex');
  const ns = `berth-eg-${id}`;
  const vethHost = `beg${id}h`;
  const vethNs = `beg${id}n`;
  const guarded = `berth-egtest-${id}`;
  const open = `berth-egopen-${id}`;
  // a link-local address as the clouds' metadata service is, on a /24 of its own (169.254.200-249.x:
  // never the real metadata and resolver addresses of the machine running the test, 169.254.169.x)
  const octet = 200 + (randomBytes(1)[0] % 50);
  const metadata = `169.254.${octet}.77`;
  // and a private "LAN" (denied by default): the operator allows its lower half, except .77 which
  // they deny; forwarded traffic to .77 and .200 is dropped, to .78 let through, and the host's own
  // address in it is reachable
  const lan = `10.213.${octet}`;
  // a public address (TEST-NET-3) the host redirects to ${lan}.200
  const redirected = `203.0.113.${octet}`;
  // the "metadata" address is the DNS server (as GCP's is); port 53 elsewhere in the denied ranges is closed
  const policy: EgressPolicy = { deny: deniedRanges([`${lan}.77/32`]), allow: [`${lan}.0/25`], hostPorts: [8099], dns: [`${metadata}/32`] };
  let hostServer: ReturnType<typeof createServer> | undefined;
  let closedServer: ReturnType<typeof createServer> | undefined;
  const listeners: ChildProcess[] = [];
  const m = memoryLog();
  const guard = new EgressGuard({ mode: 'require', policy, log: m.log });
  const runtime = createRuntime({ log: m.log, networks: { app: guarded, build: guarded }, egress: guard });
  const bridges = new Set<string>();
  let scratch = '';
  let udpQueries = 0;
  /** DNS queries that reached ${lan}.200:53 (UDP) */
  let lanUdpQueries = 0;

  async function bridgeOf(network: string): Promise<string> {
    const info = await docker.getNetwork(network).inspect();
    const b = `br-${(info.Id as string).slice(0, 12)}`;
    bridges.add(b);
    return b;
  }

  /** What a container on `network` gets from metadata:port (or its error). */
  function probe(network: string, port: number, udp = false, address = metadata): Promise<string> {
    // (busybox nc has no UDP: a DNS query, which the UDP listener counts)
    return inContainer(network, udp ? `busybox nslookup -timeout=2 -retry=1 berth.test ${address}` : `busybox nc -w 3 ${address} ${port} </dev/null`);
  }

  /** What a shell command prints in a container on `network`, and its exit code (`rc=N`). */
  async function inContainer(network: string, command: string): Promise<string> {
    const c = await docker.createContainer({
      Image: BASE_IMAGE,
      Cmd: ['busybox', 'sh', '-c', `${command} 2>&1; echo "rc=$?"`],
      HostConfig: { NetworkMode: network },
      Labels: { 'berth.test': 'egress-guard' },
    });
    try {
      await c.start();
      await Promise.race([c.wait(), new Promise((_, reject) => setTimeout(() => reject(new Error('probe did not end')), 20_000))]);
      const logs = await c.logs({ stdout: true, stderr: true });
      return logs.toString('latin1');
    } finally {
      await c.remove({ force: true }).catch(() => {});
    }
  }

  /** What a build step (RUN) on the guarded build network gets from metadata:80. */
  async function buildProbe(): Promise<string> {
    const dir = await mkdtemp(join(tmpdir(), 'berth-eg-build-'));
    const tag = `berth-egtest-${id}:${randomBytes(4).toString('hex')}`;
    let out = '';
    try {
      await writeFile(join(dir, 'Dockerfile'), `FROM ${BASE_IMAGE}\nRUN echo ${randomBytes(8).toString('hex')} && (busybox nc -w 3 ${metadata} 80 </dev/null 2>&1; echo "rc=$?")\n`);
      await runtime.buildImage({ contextDir: dir, tag, labels: { 'berth.test': 'egress-guard' }, onOutput: (t) => { out += t; } });
      return out;
    } finally {
      await runtime.removeImage(tag).catch(() => {});
      await rm(dir, { recursive: true, force: true });
    }
  }

  async function dropRules(bridge: string): Promise<void> {
    for (const [hook, chain] of [['DOCKER-USER', `BERTH-${bridge}`], ['INPUT', `BERTH-IN-${bridge}`]]) {
      await run('iptables', ['-w', '10', '-D', hook, '-i', bridge, '-m', 'comment', '--comment', 'berth egress guard', '-j', chain]).catch(() => {});
      await run('iptables', ['-w', '10', '-F', chain]).catch(() => {});
    }
  }

  async function rulesOf(bridge: string): Promise<string> {
    const all = (await run('iptables', ['-w', '10', '-S'])).stdout;
    return all.split('\n').filter((l) => l.includes(bridge)).join('\n');
  }

  beforeAll(async () => {
    if (unavailable !== null) throw new Error(`the egress guard traffic test needs root, iptables, ip netns and Docker: ${unavailable}`);
    scratch = await mkdtemp(join(tmpdir(), 'berth-eg-'));
    await run('ip', ['netns', 'add', ns]);
    await run('ip', ['link', 'add', vethHost, 'type', 'veth', 'peer', 'name', vethNs]);
    await run('ip', ['link', 'set', vethNs, 'netns', ns]);
    await run('ip', ['addr', 'add', `169.254.${octet}.1/24`, 'dev', vethHost]);
    await run('ip', ['link', 'set', vethHost, 'up']);
    await run('ip', ['netns', 'exec', ns, 'ip', 'addr', 'add', `${metadata}/24`, 'dev', vethNs]);
    await run('ip', ['netns', 'exec', ns, 'ip', 'link', 'set', vethNs, 'up']);
    await run('ip', ['netns', 'exec', ns, 'ip', 'route', 'add', 'default', 'via', `169.254.${octet}.1`]);
    await run('ip', ['addr', 'add', `${lan}.1/24`, 'dev', vethHost]);
    for (const host of [77, 78, 200]) await run('ip', ['netns', 'exec', ns, 'ip', 'addr', 'add', `${lan}.${host}/24`, 'dev', vethNs]);
    hostServer = createServer((c) => c.end('reached the host\n'));
    await new Promise<void>((resolve) => hostServer!.listen(8099, `${lan}.1`, resolve));
    closedServer = createServer((c) => c.end('reached a closed host port\n'));
    await new Promise<void>((resolve) => closedServer!.listen(8098, `${lan}.1`, resolve));
    const servers = [
      `require('net').createServer((s) => s.end('reached 80\\n')).listen(80, '${metadata}', up)`,
      ...[77, 78, 200].map((host) => `require('net').createServer((s) => s.end('reached lan ${host}\\n')).listen(80, '${lan}.${host}', up)`),
      `require('net').createServer((s) => s.end('reached 53\\n')).listen(53, '${metadata}', up)`,
      `require('dgram').createSocket('udp4').on('message', () => console.log('udp')).bind(53, '${metadata}', up)`,
      `require('net').createServer((s) => s.end('reached 53 at lan 200\\n')).listen(53, '${lan}.200', up)`,
      `require('dgram').createSocket('udp4').on('message', () => console.log('udp200')).bind(53, '${lan}.200', up)`,
    ];
    for (const code of servers) {
      const p = spawn('ip', ['netns', 'exec', ns, process.execPath, '-e', `const up = () => console.log('up'); ${code}`], { stdio: ['ignore', 'pipe', 'inherit'] });
      listeners.push(p);
      p.stdout!.on('data', (c: Buffer) => {
        const lines = c.toString().split('\n');
        udpQueries += lines.filter((l) => l === 'udp').length;
        lanUdpQueries += lines.filter((l) => l === 'udp200').length;
      });
      await new Promise<void>((resolve, reject) => {
        p.stdout!.once('data', () => resolve());
        p.once('exit', (code) => reject(new Error(`listener exited ${code}`)));
      });
    }
    await docker.createNetwork({ Name: open, Driver: 'bridge', Labels: { 'berth.test': 'egress-guard' } });
  }, 60_000);

  afterAll(async () => {
    for (const p of listeners) p.kill();
    hostServer?.close();
    closedServer?.close();
    const left = await docker.listContainers({ all: true, filters: JSON.stringify({ label: ['berth.test=egress-guard'] }) }).catch(() => []);
    for (const c of left) await docker.getContainer(c.Id).remove({ force: true }).catch(() => {});
    for (const b of bridges) {
      await dropRules(b);
      for (const chain of [`BERTH-${b}`, `BERTH-IN-${b}`]) await run('iptables', ['-w', '10', '-X', chain]).catch(() => {});
    }
    for (const n of [guarded, open]) await docker.getNetwork(n).remove().catch(() => {});
    await run('ip', ['link', 'del', vethHost]).catch(() => {});
    await run('ip', ['netns', 'del', ns]).catch(() => {});
    if (scratch) await rm(scratch, { recursive: true, force: true });
  }, 60_000);

  it('apps and build steps on a berth network cannot reach the metadata address; DNS there (TCP, UDP) still works; an unguarded bridge reaches it', async () => {
    await runtime.ensureNetworks();
    const bridge = await bridgeOf(guarded);
    expect(jumpsIn((await run('iptables', ['-w', '10', '-S', 'DOCKER-USER'])).stdout, 'DOCKER-USER')).toContain(bridge);
    expect(jumpsIn((await run('iptables', ['-w', '10', '-S', 'INPUT'])).stdout, 'INPUT')).toContain(bridge);
    // (the probes are independent containers: run together, most of them wait out a drop; all
    // of them end before a failure is reported, so none is left running while the suite tears down)
    const tcp = (network: string, port: number, address?: string) => probe(network, port, false, address);
    const settled = await Promise.allSettled([
      // the control: without the guard the address answers (so the probe can see a leak)
      tcp(open, 80), tcp(guarded, 80), tcp(guarded, 53),
      // a private range: dropped when forwarded unless allowed, and an address the operator denies
      // stays dropped inside an allowed range; the host's own address in it still answers
      tcp(open, 80, `${lan}.77`), tcp(open, 80, `${lan}.78`), tcp(open, 80, `${lan}.200`),
      tcp(guarded, 80, `${lan}.200`), tcp(guarded, 80, `${lan}.77`), tcp(guarded, 80, `${lan}.78`),
      // port 53 is not a way in: only the DNS server answers there
      tcp(open, 53, `${lan}.200`), tcp(guarded, 53, `${lan}.200`),
      tcp(guarded, 8099, `${lan}.1`),
      // the host's other ports: closed to containers on the berth network, open on an unguarded bridge
      tcp(open, 8098, `${lan}.1`), tcp(guarded, 8098, `${lan}.1`),
      // (UDP counts queries per listener: one after the other where two probes share one)
      (async () => {
        const before = udpQueries;
        await probe(guarded, 53, true);
        expect(udpQueries, 'a DNS query from the guarded network').toBeGreaterThan(before);
      })(),
      (async () => {
        // (UDP too: the unguarded bridge's query arrives, the guarded one's does not)
        const lanBefore = lanUdpQueries;
        await probe(open, 53, true, `${lan}.200`);
        expect(lanUdpQueries, 'a query to the LAN from the unguarded bridge').toBeGreaterThan(lanBefore);
        const afterOpen = lanUdpQueries;
        await probe(guarded, 53, true, `${lan}.200`);
        expect(lanUdpQueries, 'a query to the LAN from the guarded network').toBe(afterOpen);
      })(),
    ]);
    for (const s of settled) if (s.status === 'rejected') throw s.reason;
    const [
      control, app, dns, lan77, lan78, lan200, app200, app77, app78, open53, app53, appHost, openClosed, appClosed,
    ] = settled.map((s) => (s.status === 'fulfilled' ? s.value ?? '' : ''));
    expect(control).toContain('reached 80');
    expect(app).not.toContain('reached');
    expect(app).toMatch(/rc=[1-9]/);
    expect(dns).toContain('reached 53');
    expect(lan77).toContain('reached lan 77');
    expect(lan78).toContain('reached lan 78');
    expect(lan200).toContain('reached lan 200');
    expect(app200).not.toContain('reached');
    expect(app77).not.toContain('reached');
    expect(app78).toContain('reached lan 78');
    expect(open53).toContain('reached 53 at lan 200');
    expect(app53).not.toContain('reached');
    expect(appHost).toContain('reached the host');
    expect(openClosed).toContain('reached a closed host port');
    expect(appClosed).not.toContain('reached');
    // a public address the host redirects (DNAT) into the private LAN is dropped like the address behind it
    const dnat = (b: string) => ['PREROUTING', '-i', b, '-d', redirected, '-p', 'tcp', '--dport', '80', '-j', 'DNAT', '--to-destination', `${lan}.200:80`];
    const openBridge = await bridgeOf(open);
    try {
      for (const b of [bridge, openBridge]) await run('iptables', ['-w', '10', '-t', 'nat', '-I', ...dnat(b)]);
      const [viaOpen, viaGuarded] = await Promise.all([probe(open, 80, false, redirected), probe(guarded, 80, false, redirected)]);
      expect(viaOpen).toContain('reached lan 200');
      expect(viaGuarded).not.toContain('reached');
    } finally {
      for (const b of [bridge, openBridge]) await run('iptables', ['-w', '10', '-t', 'nat', '-D', ...dnat(b)]).catch(() => {});
    }
    // the host still opens connections to a container on the berth network (the proxy, health checks): replies pass
    const server = await docker.createContainer({
      Image: BASE_IMAGE,
      Cmd: ['busybox', 'sh', '-c', 'while true; do echo from-the-container | busybox nc -l -p 8080; done'],
      HostConfig: { NetworkMode: guarded },
      Labels: { 'berth.test': 'egress-guard' },
    });
    try {
      await server.start();
      const ip = ((await server.inspect()).NetworkSettings.Networks as Record<string, { IPAddress: string }>)[guarded].IPAddress;
      let got = '';
      for (const until = Date.now() + 10_000; !got.includes('from-the-container') && Date.now() < until;) {
        got = await new Promise<string>((resolve) => {
          const c = connect(8080, ip);
          let text = '';
          c.setTimeout(2000, () => c.destroy());
          c.on('data', (d: Buffer) => { text += d.toString(); });
          c.on('close', () => resolve(text));
          c.on('error', () => {});
        });
        if (!got.includes('from-the-container')) await new Promise((r) => setTimeout(r, 200));
      }
      expect(got).toContain('from-the-container');
    } finally {
      await server.remove({ force: true }).catch(() => {});
    }
    const build = await buildProbe();
    expect(build).toMatch(/rc=[1-9]/);
    expect(build).not.toContain('reached');
  }, 120_000);

  it('rules a firewall reload removed are put back by the recheck (the control plane runs it every minute)', async () => {
    const bridge = await bridgeOf(guarded);
    expect(await guard.recheck()).toBe(false);
    await dropRules(bridge);
    expect(await probe(guarded, 80)).toContain('reached 80');
    expect(await buildProbe()).toContain('reached 80'); // (so the build probe can see a leak)
    expect(await guard.recheck()).toBe(true);
    expect(await probe(guarded, 80)).not.toContain('reached');
    expect(await guard.recheck()).toBe(false);
    // a chain changed by hand (its DROP gone) is rebuilt too
    const metadataDrop = forwardRules(bridge, policy as EgressRules).find((r) => /--ctorigdst 169\.254\.0\.0\/16 .*DROP$/.test(r.join(' ')))!;
    await run('iptables', ['-w', '10', '-D', `BERTH-${bridge}`, ...metadataDrop]);
    expect(await guard.recheck()).toBe(true);
    expect(m.lines().some((l) => l.level === 40 && /egress guard rules were removed or changed/.test(l.msg))).toBe(true);
  }, 120_000);

  it('auto: a guard that could not be installed at first is installed by a later recheck', async () => {
    const bridge = await bridgeOf(guarded);
    await dropRules(bridge);
    // iptables that fails until a flag file exists (an xtables lock held at boot, say)
    const flag = join(scratch, 'ready');
    const wrap = async (name: string) => {
      const f = join(scratch, name);
      await writeFile(f, `#!/bin/sh\n[ -e ${flag} ] || { echo "${name}: not now" >&2; exit 1; }\nexec ${name} "$@"\n`, { mode: 0o755 });
      return f;
    };
    const log = memoryLog();
    const later = new EgressGuard({ mode: 'auto', policy, log: log.log, iptables: await wrap('iptables'), iptablesRestore: await wrap('iptables-restore') });
    await later.apply([bridge]);
    expect(log.lines().some((l) => l.level === 40 && /egress guard not installed/.test(l.msg))).toBe(true);
    expect(await probe(guarded, 80)).toContain('reached 80');
    expect(await later.recheck()).toBe(false);
    await writeFile(flag, '');
    expect(await later.recheck()).toBe(true);
    expect(await probe(guarded, 80)).not.toContain('reached');
  }, 120_000);

  it('applying again changes nothing; a network made again gets a new chain and the old one goes', async () => {
    const oldBridge = await bridgeOf(guarded);
    const before = await rulesOf(oldBridge);
    await guard.apply([oldBridge]);
    expect(await rulesOf(oldBridge)).toBe(before);
    // the network is removed and made again (a new bridge): the old bridge's chain is removed
    await docker.getNetwork(guarded).remove();
    const again = createRuntime({ log: m.log, networks: { app: guarded, build: guarded }, egress: guard });
    await again.ensureNetworks();
    const newBridge = await bridgeOf(guarded);
    expect(newBridge).not.toBe(oldBridge);
    expect(await rulesOf(newBridge)).toContain(`-A DOCKER-USER -i ${newBridge} `);
    expect(await rulesOf(newBridge)).toContain(`-A INPUT -i ${newBridge} `);
    expect(await rulesOf(oldBridge)).toBe('');
    expect(await probe(guarded, 80)).not.toContain('reached');
  }, 120_000);

  it("dns 'host': the host's DNS servers are read at every recheck; a new one is reachable on 53 once the rules are rebuilt, and stays", async () => {
    const bridge = await bridgeOf(guarded);
    const resolvConf = join(scratch, 'resolv.conf');
    const from = { resolvConf, resolvedConf: join(scratch, 'none'), daemonJson: join(scratch, 'none'), proc: join(scratch, 'none'), pidFile: join(scratch, 'none') };
    await writeFile(resolvConf, `nameserver ${metadata}\n`);
    const log = memoryLog();
    const host = new EgressGuard({ mode: 'require', policy: { ...policy, dns: 'host' }, log: log.log, dnsSources: from });
    try {
      await host.apply([bridge]);
      expect(await probe(guarded, 53, false, `${lan}.200`)).not.toContain('reached');
      expect(await host.recheck()).toBe(false);
      // a new lease names the LAN's resolver: reachable once a recheck has read it, not before
      await writeFile(resolvConf, `nameserver ${metadata}\nnameserver ${lan}.200\n`);
      expect(await probe(guarded, 53, false, `${lan}.200`)).not.toContain('reached');
      expect(await host.recheck()).toBe(true);
      expect(log.lines().some((l) => /named a new DNS server/.test(l.msg))).toBe(true);
      const [on53, on80] = await Promise.all([probe(guarded, 53, false, `${lan}.200`), probe(guarded, 80, false, `${lan}.200`)]);
      expect(on53).toContain('reached 53 at lan 200');
      expect(on80).not.toContain('reached');
      expect(await host.recheck()).toBe(false);
      // a server the host stops naming stays open (running containers keep it), and a file read
      // while it is rewritten (empty) cuts nobody off
      await writeFile(resolvConf, '');
      expect(await host.recheck()).toBe(false);
      expect(await probe(guarded, 53, false, `${lan}.200`)).toContain('reached 53 at lan 200');
    } finally {
      // the other tests' guard takes the bridge back
      await guard.apply([bridge]);
    }
  }, 120_000);

  it("dns 'host' on this machine: a name resolves through Docker's DNS on the guarded network as on an unguarded one (and not with no DNS server allowed)", async () => {
    const bridge = await bridgeOf(guarded);
    const name = 'registry.npmjs.org';
    const lookup = (network: string) => inContainer(network, `busybox nslookup -timeout=3 -retry=2 ${name}`);
    const control = await lookup(open);
    if (!/rc=0/.test(control)) {
      // no upstream DNS on this machine: nothing can be seen either way
      console.warn(`egress guard: skipped the real DNS check: ${name} does not resolve from a Docker network here (${control.replace(/\s+/g, ' ').slice(0, 200)})`);
      return;
    }
    const real = new EgressGuard({ mode: 'require', policy: { ...policy, dns: 'host' }, log: memoryLog().log });
    const none = new EgressGuard({ mode: 'require', policy: { ...policy, dns: [] }, log: memoryLog().log });
    try {
      await real.apply([bridge]);
      expect(await lookup(guarded)).toMatch(/rc=0/);
      // the control: the host's servers are in a denied range here, or this proves nothing
      await none.apply([bridge]);
      const servers = hostDnsServers();
      if (servers.some((s) => inRanges(s.split('/')[0], [...PRIVATE_RANGES, ...deniedRanges([])]))) expect(await lookup(guarded)).not.toMatch(/rc=0/);
    } finally {
      await guard.apply([bridge]);
    }
  }, 120_000);
});
