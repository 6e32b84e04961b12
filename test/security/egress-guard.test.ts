import { execFile, spawn, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { PassThrough } from 'node:stream';
import { promisify } from 'node:util';
import { pino } from 'pino';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createRuntime } from '../../control-plane/runtime/docker.js';
import { chainRules, EgressGuard, egressGuardMode, jumpsIn, parseEgressDeny } from '../../control-plane/runtime/egress.js';
import { BASE_IMAGE, docker, dockerRequired, dockerStatus } from '../helpers/docker.js';

/**
 * The egress guard (control-plane/runtime/egress.ts): apps and build steps cannot reach the cloud
 * metadata service (169.254.169.254) or other denied ranges through their bridge's NAT; DNS to
 * those ranges still works.
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
  it('deny ranges: IPv4 networks as iptables prints them, or none; anything else is a clear error', () => {
    expect(parseEgressDeny('169.254.169.254/16, 10.1.2.3/8,192.168.0.1')).toEqual(['169.254.0.0/16', '10.0.0.0/8', '192.168.0.1/32']);
    expect(parseEgressDeny('0.0.0.0/0')).toEqual(['0.0.0.0/0']);
    expect(parseEgressDeny('10.0.0.0/8,10.0.0.0/8')).toEqual(['10.0.0.0/8']);
    expect(parseEgressDeny(' none ')).toEqual([]);
    expect(() => parseEgressDeny('fd00:ec2::254/128')).toThrow(/IPv6 ranges are not needed/);
    for (const bad of ['', '10.0.0.0/33', '256.1.1.1', '010.0.0.1', '10.0.0.0/8;reboot', '10.0.0', 'metadata', '10.0.0.0/8,']) {
      expect(() => parseEgressDeny(bad), bad).toThrow(/not an IPv4 address or range/);
    }
  });

  it('modes: auto, require or off', () => {
    expect(egressGuardMode('Require')).toBe('require');
    expect(() => egressGuardMode('yes')).toThrow(/must be one of auto, require, off/);
  });

  it("a bridge's chain lets DNS through before it drops the range", () => {
    const rules = chainRules('br-0123456789ab', ['169.254.0.0/16']).split('\n');
    expect(rules[1]).toBe(':BERTH-br-0123456789ab - [0:0]');
    expect(rules.findIndex((l) => /-p udp .*--dport 53 .*RETURN$/.test(l))).toBeLessThan(rules.findIndex((l) => /DROP$/.test(l)));
    expect(rules.findIndex((l) => /-p tcp .*--dport 53 .*RETURN$/.test(l))).toBeLessThan(rules.findIndex((l) => /DROP$/.test(l)));
    expect(jumpsIn('-N DOCKER-USER\n-A DOCKER-USER -i br-0123456789ab -m comment --comment "berth egress guard" -j BERTH-br-0123456789ab\n-A DOCKER-USER -i br-x -j BERTH-br-y\n-A DOCKER-USER -j RETURN'))
      .toEqual([{ bridge: 'br-0123456789ab', chain: 'BERTH-br-0123456789ab' }]);
  });

  it('auto: a guard that cannot be installed is one warning that says what is exposed; require: an error', async () => {
    const m = memoryLog();
    const auto = new EgressGuard({ mode: 'auto', deny: ['169.254.0.0/16'], log: m.log, iptables: '/nonexistent/iptables', hasInterface: () => true });
    await auto.apply(['br-0123456789ab']);
    await auto.apply(['br-0123456789ab']);
    const warnings = m.lines().filter((l) => l.level === 40);
    expect(warnings).toHaveLength(1);
    expect(warnings[0].msg).toMatch(/egress guard not installed: cannot read iptables .*metadata service \(169\.254\.169\.254\)/);
    const remote = new EgressGuard({ mode: 'require', deny: ['169.254.0.0/16'], log: m.log, hasInterface: () => false });
    await expect(remote.apply(['br-0123456789ab'])).rejects.toThrow(/bridge br-0123456789ab is not on this machine \(a remote or rootless Docker daemon\)/);
    const odd = new EgressGuard({ mode: 'require', deny: ['169.254.0.0/16'], log: m.log, hasInterface: () => true });
    await expect(odd.apply(['br-x y'])).rejects.toThrow(/not an interface name/);
    const off = new EgressGuard({ mode: 'off', deny: ['169.254.0.0/16'], log: m.log, iptables: '/nonexistent/iptables' });
    await off.apply(['br-0123456789ab']);
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
  // a link-local address as the clouds' metadata service is, with a subnet of its own
  const octet = 100 + (randomBytes(1)[0] % 100);
  const metadata = `169.254.${octet}.77`;
  const listeners: ChildProcess[] = [];
  const m = memoryLog();
  const guard = new EgressGuard({ mode: 'require', deny: [`169.254.${octet}.0/24`], log: m.log });
  const runtime = createRuntime({ log: m.log, networks: { app: guarded, build: guarded }, egress: guard });

  async function bridgeOf(network: string): Promise<string> {
    const info = await docker.getNetwork(network).inspect();
    return `br-${(info.Id as string).slice(0, 12)}`;
  }

  /** What a container on `network` gets from metadata:port (or its error). */
  async function probe(network: string, port: number): Promise<string> {
    const c = await docker.createContainer({
      Image: BASE_IMAGE,
      Cmd: ['busybox', 'sh', '-c', `busybox nc -w 3 ${metadata} ${port} </dev/null 2>&1; echo "rc=$?"`],
      HostConfig: { NetworkMode: network },
      Labels: { 'berth.test': 'egress-guard' },
    });
    try {
      await c.start();
      await c.wait();
      const logs = await c.logs({ stdout: true, stderr: true });
      return logs.toString('latin1');
    } finally {
      await c.remove({ force: true }).catch(() => {});
    }
  }

  async function cleanupRules(bridge: string): Promise<void> {
    await run('iptables', ['-w', '10', '-D', 'DOCKER-USER', '-i', bridge, '-m', 'comment', '--comment', 'berth egress guard', '-j', `BERTH-${bridge}`]).catch(() => {});
    await run('iptables', ['-w', '10', '-F', `BERTH-${bridge}`]).catch(() => {});
    await run('iptables', ['-w', '10', '-X', `BERTH-${bridge}`]).catch(() => {});
  }

  const bridges = new Set<string>();

  beforeAll(async () => {
    if (unavailable !== null) throw new Error(`the egress guard traffic test needs root, iptables, ip netns and Docker: ${unavailable}`);
    await run('ip', ['netns', 'add', ns]);
    await run('ip', ['link', 'add', vethHost, 'type', 'veth', 'peer', 'name', vethNs]);
    await run('ip', ['link', 'set', vethNs, 'netns', ns]);
    await run('ip', ['addr', 'add', `169.254.${octet}.1/24`, 'dev', vethHost]);
    await run('ip', ['link', 'set', vethHost, 'up']);
    await run('ip', ['netns', 'exec', ns, 'ip', 'addr', 'add', `${metadata}/24`, 'dev', vethNs]);
    await run('ip', ['netns', 'exec', ns, 'ip', 'link', 'set', vethNs, 'up']);
    await run('ip', ['netns', 'exec', ns, 'ip', 'route', 'add', 'default', 'via', `169.254.${octet}.1`]);
    for (const port of [80, 53]) {
      const p = spawn('ip', ['netns', 'exec', ns, process.execPath, '-e', `require('net').createServer((s) => s.end('reached ${port}\\n')).listen(${port}, '${metadata}', () => console.log('up'))`], { stdio: ['ignore', 'pipe', 'inherit'] });
      listeners.push(p);
      await new Promise<void>((resolve, reject) => {
        p.stdout!.once('data', () => resolve());
        p.once('exit', (code) => reject(new Error(`listener exited ${code}`)));
      });
    }
    await docker.createNetwork({ Name: open, Driver: 'bridge', Labels: { 'berth.test': 'egress-guard' } });
  }, 60_000);

  afterAll(async () => {
    for (const p of listeners) p.kill();
    for (const b of bridges) await cleanupRules(b);
    for (const n of [guarded, open]) await docker.getNetwork(n).remove().catch(() => {});
    await run('ip', ['link', 'del', vethHost]).catch(() => {});
    await run('ip', ['netns', 'del', ns]).catch(() => {});
  }, 60_000);

  it('a container on a berth network cannot reach the metadata address; DNS there still works; an unguarded bridge reaches both', async () => {
    await runtime.ensureNetworks();
    const bridge = await bridgeOf(guarded);
    bridges.add(bridge);
    const listing = (await run('iptables', ['-w', '10', '-S', 'DOCKER-USER'])).stdout;
    expect(jumpsIn(listing).map((j) => j.bridge)).toContain(bridge);
    // the control: without the guard the address answers (so the probe can see a leak)
    expect(await probe(open, 80)).toContain('reached 80');
    const guardedHttp = await probe(guarded, 80);
    expect(guardedHttp).not.toContain('reached');
    expect(guardedHttp).toMatch(/rc=[1-9]/);
    expect(await probe(guarded, 53)).toContain('reached 53');
  }, 90_000);

  it('applying again changes nothing; a network made again gets a new chain and the old one goes', async () => {
    const before = (await run('iptables', ['-w', '10', '-S', 'DOCKER-USER'])).stdout;
    const oldBridge = await bridgeOf(guarded);
    await guard.apply([oldBridge]);
    expect((await run('iptables', ['-w', '10', '-S', 'DOCKER-USER'])).stdout).toBe(before);
    // the network is removed and made again (a new bridge): the old bridge's chain is removed
    await docker.getNetwork(guarded).remove();
    const again = createRuntime({ log: m.log, networks: { app: guarded, build: guarded }, egress: guard });
    await again.ensureNetworks();
    const newBridge = await bridgeOf(guarded);
    bridges.add(newBridge);
    expect(newBridge).not.toBe(oldBridge);
    const after = (await run('iptables', ['-w', '10', '-S'])).stdout;
    expect(after).toContain(`-A DOCKER-USER -i ${newBridge} `);
    expect(after).not.toContain(oldBridge);
    expect(await probe(guarded, 80)).not.toContain('reached');
  }, 90_000);

  it('rules a firewall reload removed are put back by the recheck (the control plane runs it every minute)', async () => {
    const bridge = await bridgeOf(guarded);
    expect(await guard.recheck()).toBe(false);
    await run('iptables', ['-w', '10', '-D', 'DOCKER-USER', '-i', bridge, '-m', 'comment', '--comment', 'berth egress guard', '-j', `BERTH-${bridge}`]);
    await run('iptables', ['-w', '10', '-F', `BERTH-${bridge}`]);
    expect(await probe(guarded, 80)).toContain('reached 80');
    expect(await guard.recheck()).toBe(true);
    expect(await probe(guarded, 80)).not.toContain('reached');
    expect(await guard.recheck()).toBe(false);
    // a chain changed by hand (its DROP gone) is rebuilt too
    await run('iptables', ['-w', '10', '-D', `BERTH-${bridge}`, '-d', `169.254.${octet}.0/24`, '-m', 'comment', '--comment', 'berth egress guard', '-j', 'DROP']);
    expect(await guard.recheck()).toBe(true);
    expect(m.lines().some((l) => l.level === 40 && /egress guard rules were removed or changed/.test(l.msg))).toBe(true);
  }, 90_000);
});
