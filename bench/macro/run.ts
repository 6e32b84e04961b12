/**
 * Macro benchmark: direct-to-upstream vs berth vs nginx vs Node peers, in ONE run,
 * interleaved round by round (A B C D, B C D A, …) so that machine drift hits all alike.
 *
 * Environment:
 *   BENCH_DURATION=10      seconds per measured run
 *   BENCH_ROUNDS=4         rounds per scenario (medians are reported)
 *   BENCH_WARMUP=2         seconds of unmeasured warm-up per target and scenario (0 = none)
 *   BENCH_CONNECTIONS=50   concurrent connections
 *   BENCH_SCENARIOS=small,64k,rr3,post,conn1k,routes10k,push10k
 *   BENCH_TARGETS=direct,berth,berth-pipeline,uws-floor,nginx,fastify-http-proxy,http-proxy
 *                  (berth-pipeline: berth with RouteSpec.pipeline = 8 on the bench routes;
 *                  uws-floor: not a proxy, the least uWS + Node can do to relay a request:
 *                  the ceiling of berth's runtime on this machine, see peers/uws-floor.ts)
 *   BENCH_LOADGEN=wrk|autocannon   (default: wrk when installed)
 *   BENCH_UPSTREAM=nginx|uws       (default: nginx when installed)
 *   BENCH_PIN=0                    do not pin with taskset
 *   BENCH_CONN1K_DURATION=5, BENCH_CONN1K_CONNECTIONS=1000
 *   BENCH_BERTH_ARGS="…"           extra args for `berth proxy`
 */
import { execFileSync, spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, readdirSync, rmSync } from 'node:fs';
import { cpus, loadavg, tmpdir } from 'node:os';
import { join } from 'node:path';
import { fmt, median, ratio, table } from '../lib/format.js';
import { httpRequest, sleep } from '../lib/net.js';
import { choosePinning, cpuJiffies, onExit, pinSelf, rssSampler, stopAll, treeCpuSplit, which, type Pinning, type Tracked } from '../lib/proc.js';
import { summariseProfile, type ProfileSummary } from './profile.js';
import { chooseLoadgen, runLoad, type LoadResult, type LoadgenKind } from './loadgen.js';
import { routePush } from './route-push.js';
import {
  HOST_RR,
  HOST_SINGLE,
  buildBigTable,
  startBerth,
  startNginxProxy,
  startNodePeer,
  startUpstream,
  type ProxyTarget,
  type Upstream,
} from './targets.js';

const num = (name: string, def: number): number => {
  const v = process.env[name];
  if (v === undefined || v === '') return def;
  const n = Number(v);
  if (!Number.isFinite(n) || n < 0) throw new Error(`${name}=${v} is not a number`);
  return n;
};
const list = (name: string, def: string[]): string[] => {
  const v = process.env[name];
  return v ? v.split(',').map((s) => s.trim()).filter(Boolean) : def;
};

interface Scenario {
  id: 'small' | '64k' | 'rr3' | 'post';
  title: string;
  host: string;
  path: string;
  /** a JSON body: the scenario POSTs it (else GET) */
  body?: string;
}
/** The `post` scenario's body: a small JSON document, as an API client sends. */
const POST_BODY = JSON.stringify({ id: 'order-1042', items: [{ sku: 'A-17', qty: 2 }, { sku: 'B-3', qty: 1 }], note: 'leave at door..' });
const SCENARIOS: Scenario[] = [
  { id: 'small', title: 'small response (2-byte body), 1 upstream', host: HOST_SINGLE, path: '/small' },
  { id: '64k', title: '64 KiB response, 1 upstream', host: HOST_SINGLE, path: '/64k' },
  { id: 'rr3', title: 'round robin over 3 upstream endpoints (2-byte body)', host: HOST_RR, path: '/small' },
  { id: 'post', title: `small POST (${POST_BODY.length}-byte JSON body, 2-byte answer), 1 upstream`, host: HOST_SINGLE, path: '/small', body: POST_BODY },
];

/** A row in a scenario: "direct" or a proxy. */
interface Entry {
  id: string;
  label: string;
  port: number;
  /** process whose CPU / RSS we read: the proxy, or for direct the origin server */
  proc?: Tracked;
  unavailable?: string;
}

export interface RunSample extends LoadResult {
  round: number;
  cpuS: number;
  cpuUsPerReq: number;
  /** of which user time (the rest is the kernel's: syscalls, loopback TCP) */
  userUsPerReq: number;
  cpuUtil: number;
  peakRssMb: number;
  /** fraction of the proxy's core busy with other processes during the run (NaN unpinned) */
  otherLoad: number;
}

export interface EntrySummary {
  id: string;
  label: string;
  unavailable?: string;
  rps?: number;
  rpsMin?: number;
  rpsMax?: number;
  p50Ms?: number;
  p99Ms?: number;
  cpuUsPerReq?: number;
  userUsPerReq?: number;
  cpuUtil?: number;
  peakRssMb?: number;
  otherLoad?: number;
  errors?: number;
  errorDetail?: string;
  samples: RunSample[];
}

export interface ScenarioReport {
  id: string;
  title: string;
  entries: EntrySummary[];
}

export interface MacroReport {
  config: Record<string, unknown>;
  environment: Record<string, unknown>;
  scenarios: ScenarioReport[];
  conn1k?: { connections: number; durationS: number; entries: Array<EntrySummary & { idleRssMb?: number }> } | { skipped: string };
  routes10k?: Record<string, unknown>;
  push10k?: Record<string, unknown>;
  targets?: Array<{ target: string; status: 'PASS' | 'FAIL' | 'n/a'; measured: string }>;
  profile?: Array<Omit<ProfileSummary, 'text'>>;
  text: string;
}

async function measure(
  e: Entry,
  lg: LoadgenKind,
  o: { host: string; path: string; body?: string; connections: number; durationS: number; cpu?: string; workDir: string; proxyCore?: string },
  round: number,
): Promise<RunSample> {
  const pid = e.proc?.pid;
  const core = o.proxyCore;
  const j0 = core !== undefined && e.id !== 'direct' ? cpuJiffies(core) : null;
  const cpu0 = pid ? treeCpuSplit(pid) : { user: 0, sys: 0 };
  const sampler = pid ? rssSampler(pid) : undefined;
  const r = await runLoad(lg, { port: e.port, host: o.host, path: o.path, body: o.body, connections: o.connections, durationS: o.durationS, cpu: o.cpu, workDir: o.workDir });
  const cpu1 = pid ? treeCpuSplit(pid) : { user: NaN, sys: NaN };
  const userS = cpu1.user - cpu0.user;
  const cpuS = userS + cpu1.sys - cpu0.sys;
  const peak = sampler ? sampler.stop() : NaN;
  const j1 = j0 && core !== undefined ? cpuJiffies(core) : null;
  // share of the proxy's core used by anything but the proxy: other jobs on a shared machine
  const coreBusy = j0 && j1 && j1.total > j0.total ? (j1.busy - j0.busy) / (j1.total - j0.total) : NaN;
  if (e.proc?.dead) throw new Error(`${e.label} died during the run`);
  return {
    ...r,
    round,
    cpuS,
    cpuUsPerReq: r.requests > 0 ? (cpuS * 1e6) / r.requests : NaN,
    userUsPerReq: r.requests > 0 ? (userS * 1e6) / r.requests : NaN,
    cpuUtil: cpuS / r.durationS,
    peakRssMb: peak / 1024,
    otherLoad: Number.isFinite(coreBusy) ? Math.max(0, coreBusy - cpuS / r.durationS) : NaN,
  };
}

function summarise(e: Entry, samples: RunSample[]): EntrySummary {
  if (e.unavailable) return { id: e.id, label: e.label, unavailable: e.unavailable, samples };
  const rps = samples.map((s) => s.rps);
  const details = samples.map((s) => s.errorDetail).filter(Boolean);
  return {
    id: e.id,
    label: e.label,
    rps: median(rps),
    rpsMin: Math.min(...rps),
    rpsMax: Math.max(...rps),
    p50Ms: median(samples.map((s) => s.p50Ms)),
    p99Ms: median(samples.map((s) => s.p99Ms)),
    cpuUsPerReq: median(samples.map((s) => s.cpuUsPerReq)),
    userUsPerReq: median(samples.map((s) => s.userUsPerReq)),
    cpuUtil: median(samples.map((s) => s.cpuUtil)),
    peakRssMb: Math.max(...samples.map((s) => s.peakRssMb)),
    otherLoad: median(samples.map((s) => s.otherLoad)),
    errors: samples.reduce((a, s) => a + s.errors, 0),
    errorDetail: details.join('; '),
    samples,
  };
}

function scenarioTable(sc: ScenarioReport): string {
  const direct = sc.entries.find((x) => x.id === 'direct');
  const ngx = sc.entries.find((x) => x.id === 'nginx' && !x.unavailable);
  const rows: Array<string[] | string> = [];
  for (const x of sc.entries) {
    if (x.unavailable) {
      rows.push(`${x.label.padEnd(20)}  n/a (${x.unavailable.length > 160 ? x.unavailable.slice(0, 160) + '…' : x.unavailable})`);
      continue;
    }
    const spread = x.rps && x.rpsMax !== undefined && x.rpsMin !== undefined && x.samples.length > 1 ? `±${fmt(((x.rpsMax - x.rpsMin) / 2 / x.rps) * 100)}%` : '';
    const isNgx = x.id === 'nginx';
    rows.push([
      x.id === 'direct' ? 'direct (no proxy)' : x.label,
      fmt(x.rps),
      spread,
      ratio(x.rps, direct?.rps),
      isNgx ? '' : ratio(x.rps, ngx?.rps),
      fmt(x.p50Ms, 2),
      ratio(x.p50Ms, direct?.p50Ms),
      isNgx ? '' : ratio(x.p50Ms, ngx?.p50Ms),
      fmt(x.p99Ms, 2),
      ratio(x.p99Ms, direct?.p99Ms),
      isNgx ? '' : ratio(x.p99Ms, ngx?.p99Ms),
      fmt(x.cpuUsPerReq, 1),
      fmt(x.userUsPerReq, 1),
      x.id === 'direct' ? '' : ratio(x.cpuUsPerReq, direct?.cpuUsPerReq),
      isNgx ? '' : ratio(x.cpuUsPerReq, ngx?.cpuUsPerReq),
      `${fmt((x.cpuUtil ?? NaN) * 100)}%`,
      fmt(x.peakRssMb, 1),
      x.id === 'direct' ? '' : ratio(x.peakRssMb, direct?.peakRssMb),
      isNgx ? '' : ratio(x.peakRssMb, ngx?.peakRssMb),
      x.id === 'direct' || x.otherLoad === undefined || !Number.isFinite(x.otherLoad) ? '' : `${fmt(x.otherLoad * 100)}%`,
      x.errors ? `${x.errors} (${x.errorDetail})` : '0',
    ]);
  }
  return table(
    ['target', 'req/s', 'spread', '×direct', '×nginx', 'p50 ms', '×direct', '×nginx', 'p99 ms', '×direct', '×nginx', 'CPU µs/req', 'of it user', '×direct', '×nginx', 'CPU', 'RSS MB', '×direct', '×nginx', 'noise', 'errors'],
    rows,
  );
}

function tailOf(file: string, n = 400): string {
  try {
    const t = readFileSync(file, 'utf8').trim().replace(/\s+/g, ' ');
    return t.length > n ? '…' + t.slice(-n) : t || '(empty)';
  } catch {
    return '(no log)';
  }
}

function versionOf(cmd: string, args: string[]): string {
  const r = spawnSync(cmd, args, { encoding: 'utf8' });
  return `${r.stdout ?? ''}${r.stderr ?? ''}`.trim().split('\n')[0] ?? '';
}

export async function runMacro(): Promise<MacroReport> {
  const durationS = num('BENCH_DURATION', 10);
  const rounds = Math.max(1, Math.floor(num('BENCH_ROUNDS', 4)));
  const warmupS = num('BENCH_WARMUP', Math.min(2, durationS));
  const connections = Math.max(1, Math.floor(num('BENCH_CONNECTIONS', 50)));
  const scenarioIds = list('BENCH_SCENARIOS', ['small', '64k', 'rr3', 'post', 'conn1k', 'routes10k', 'push10k']);
  const targetIds = list('BENCH_TARGETS', ['direct', 'berth', 'berth-pipeline', 'uws-floor', 'nginx', 'fastify-http-proxy', 'http-proxy']);
  const conn1kS = num('BENCH_CONN1K_DURATION', 5);
  const conn1kC = Math.floor(num('BENCH_CONN1K_CONNECTIONS', 1000));
  const pin: Pinning = choosePinning();
  const lg = chooseLoadgen();
  const proxyCpu = pin.enabled ? pin.proxyCpu : undefined;
  const loadCpu = pin.enabled ? pin.loadCpu : undefined;
  if (pin.enabled) pinSelf(pin.loadCpu);

  const out: string[] = [];
  const say = (s = '') => {
    out.push(s);
    process.stdout.write(s + '\n');
  };
  const dir = mkdtempSync(join(tmpdir(), 'berth-bench-'));
  onExit(() => {
    if (!process.env.BENCH_KEEP_TMP) rmSync(dir, { recursive: true, force: true });
  });

  const environment: Record<string, unknown> = {
    node: process.version,
    cpus: cpus().length,
    cpuModel: cpus()[0]?.model,
    loadavgStart: loadavg(),
    loadgen: lg.kind,
    loadgenVersion: lg.kind === 'wrk' ? versionOf('wrk', ['--version']) : 'autocannon (npm)',
    nginx: which('nginx') ? versionOf('nginx', ['-v']) : 'not installed',
    pinning: pin.reason,
    workDir: dir,
  };
  try {
    environment.gitCommit = execFileSync('git', ['rev-parse', '--short', 'HEAD'], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] }).trim();
  } catch {
    /* not a checkout */
  }
  const config = { durationS, rounds, warmupS, connections, scenarios: scenarioIds, targets: targetIds, conn1kS, conn1kC };

  say(`== macro: ${lg.kind} (${lg.reason}), c=${connections}, ${durationS}s × ${rounds} round(s), warm-up ${warmupS}s; ${pin.enabled ? 'pinned: ' : 'NOT pinned: '}${pin.reason}`);
  if (lg.kind === 'autocannon') {
    say('   WARNING: autocannon saturates near 25k req/s on one core and reports latency in whole ms: fast rows (direct, nginx) are capped by the tool; install wrk for ratios');
  }
  say(`   load average at start: ${loadavg().map((x) => x.toFixed(2)).join(' ')} (${cpus().length} CPUs) — other work on this machine adds noise`);

  const report: MacroReport = { config, environment, scenarios: [], text: '' };
  let berthProfileDir: string | undefined;
  try {
    const upstream: Upstream = await startUpstream(dir, loadCpu);
    environment.upstream = upstream.kind === 'nginx' ? 'nginx static (1 worker)' : 'bare uWebSockets.js';
    say(`   upstream: ${environment.upstream} on ports ${upstream.ports.join(', ')}`);

    const proxies: ProxyTarget[] = [];
    const recordProfileDir = (p: ProxyTarget) => {
      berthProfileDir = p.profileDir;
      return p;
    };
    const want = (id: string) => targetIds.includes(id);
    if (want('berth')) proxies.push(recordProfileDir(await startBerth(dir, upstream.ports, proxyCpu)));
    if (want('berth-pipeline')) proxies.push(await startBerth(dir, upstream.ports, proxyCpu, true));
    if (want('nginx')) proxies.push(await startNginxProxy(dir, upstream.ports, proxyCpu));
    if (want('fastify-http-proxy')) proxies.push(await startNodePeer(dir, 'fastify-http-proxy', upstream.ports, proxyCpu));
    if (want('http-proxy')) proxies.push(await startNodePeer(dir, 'http-proxy', upstream.ports, proxyCpu));
    if (want('uws-floor')) proxies.push(await startNodePeer(dir, 'uws-floor', upstream.ports, proxyCpu));
    for (const p of proxies) say(`   ${p.label.padEnd(20)} ${p.unavailable ? `n/a (${p.unavailable})` : `:${p.port}  ${p.notes ?? ''}`}`);
    environment.targets = proxies.map((p) => ({ id: p.id, port: p.port, notes: p.notes, unavailable: p.unavailable }));

    const entries: Entry[] = [];
    if (want('direct')) entries.push({ id: 'direct', label: 'direct', port: upstream.ports[0], proc: upstream.proc });
    for (const p of proxies) entries.push({ id: p.id, label: p.label, port: p.port, proc: p.proc, unavailable: p.unavailable });
    const live = entries.filter((e) => !e.unavailable);

    for (const sc of SCENARIOS.filter((s) => scenarioIds.includes(s.id))) {
      say();
      say(`-- scenario ${sc.id}: ${sc.title}; Host: ${sc.host}, ${sc.body === undefined ? 'GET' : 'POST'} ${sc.path}`);
      const base = { host: sc.host, path: sc.path, body: sc.body, connections, cpu: loadCpu, workDir: dir, proxyCore: proxyCpu };
      if (warmupS > 0) {
        for (const e of live) {
          if (e.unavailable) continue;
          try {
            await runLoad(lg.kind, { port: e.port, ...base, durationS: warmupS });
          } catch (err) {
            e.unavailable = `failed during warm-up of ${sc.id}: ${(err as Error).message}${e.proc?.logFile ? ` — log: ${tailOf(e.proc.logFile)}` : ''}`;
          }
        }
      }
      const samples = new Map<string, RunSample[]>(live.map((e) => [e.id, []]));
      for (let r = 0; r < rounds; r++) {
        // rotate the order every round: A B C D, B C D A, … so no target always goes first
        const order = live.map((_, i) => live[(i + r) % live.length]);
        for (const e of order) {
          if (e.unavailable) continue;
          let s: RunSample;
          try {
            s = await measure(e, lg.kind, { ...base, durationS }, r + 1);
          } catch (err) {
            // one broken target must not sink the others: report it as n/a with the reason
            e.unavailable = `failed in ${sc.id} round ${r + 1}: ${(err as Error).message}${e.proc?.logFile ? ` — log: ${tailOf(e.proc.logFile)}` : ''}`;
            process.stderr.write(`   round ${r + 1}/${rounds} ${e.label.padEnd(20)} FAILED: ${e.unavailable}\n`);
            continue;
          }
          samples.get(e.id)!.push(s);
          process.stderr.write(
            `   round ${r + 1}/${rounds} ${e.label.padEnd(20)} ${fmt(s.rps).padStart(8)} req/s  p99 ${fmt(s.p99Ms, 2)} ms  cpu ${fmt(s.cpuUsPerReq, 1)} µs/req${s.errors ? `  errors ${s.errors} (${s.errorDetail})` : ''}\n`,
          );
        }
      }
      const rep: ScenarioReport = { id: sc.id, title: sc.title, entries: entries.map((e) => summarise(e, samples.get(e.id) ?? [])) };
      // a target that failed here stays failed for later scenarios, but only if its process is gone
      for (const e of live) if (e.unavailable && e.proc && !e.proc.dead) e.unavailable = undefined;
      report.scenarios.push(rep);
      say(scenarioTable(rep));
    }
    if (report.scenarios.length) {
      say('   spread = half the min–max range of req/s across rounds; CPU = proxy CPU time ÷ wall time (100% = one core saturated);');
      say('   of it user = the part of CPU µs/req in the proxy\'s own code (the rest is the kernel\'s: its syscalls and the loopback TCP work they do);');
      say('   noise = share of the proxy\'s core used by OTHER processes during the run (shared machine); rows with high noise are not comparable;');
      say('   the direct row\'s CPU µs/req and RSS are the origin server\'s own, so ×direct there reads "proxy cost vs origin cost".');
    }

    // ---- 1,000 concurrent keep-alive connections: proxy RSS
    if (scenarioIds.includes('conn1k')) {
      say();
      say(`-- scenario conn1k: ${conn1kC} concurrent keep-alive connections, ${conn1kS}s, GET /small (target: berth RSS < 120 MB)`);
      const rows: Array<string[] | string> = [];
      const res: Array<EntrySummary & { idleRssMb?: number }> = [];
      for (const e of entries.filter((x) => x.id !== 'direct')) {
        if (e.unavailable) {
          rows.push(`${e.label.padEnd(20)}  n/a (${e.unavailable.slice(0, 160)})`);
          res.push({ id: e.id, label: e.label, unavailable: e.unavailable, samples: [] });
          continue;
        }
        const idle = rssSampler(e.proc!.pid).stop() / 1024;
        let s: RunSample;
        try {
          s = await measure(e, lg.kind, { host: HOST_SINGLE, path: '/small', connections: conn1kC, durationS: conn1kS, cpu: loadCpu, workDir: dir }, 1);
        } catch (err) {
          const why = `${(err as Error).message}${e.proc?.logFile ? ` — log: ${tailOf(e.proc.logFile)}` : ''}`;
          rows.push(`${e.label.padEnd(20)}  n/a (failed: ${why.slice(0, 200)})`);
          res.push({ id: e.id, label: e.label, unavailable: why, samples: [] });
          continue;
        }
        const sum = { ...summarise(e, [s]), idleRssMb: idle };
        res.push(sum);
        rows.push([e.label, fmt(idle, 1), fmt(s.peakRssMb, 1), fmt(s.rps), fmt(s.p99Ms, 2), s.errors ? `${s.errors} (${s.errorDetail})` : '0']);
      }
      say(table(['target', 'RSS before MB', 'peak RSS MB', 'req/s', 'p99 ms', 'errors'], rows));
      report.conn1k = { connections: conn1kC, durationS: conn1kS, entries: res };
    }

    // ---- 10,000-route table applied through the admin API while requests flow
    const berth = proxies.find((p) => p.id === 'berth');
    if (scenarioIds.includes('routes10k')) {
      say();
      say('-- scenario routes10k: PUT /routes with 10,002 routes (20,004 hostnames), then PATCH /routes with one-route deltas, while wrk runs c=50 on bench.local (target: < 100 ms, no failed request)');
      if (!berth || berth.unavailable) {
        say(`   n/a (berth not running${berth?.unavailable ? `: ${berth.unavailable.slice(0, 160)}` : ''})`);
        report.routes10k = { skipped: 'berth not running' };
      } else {
        try {
          report.routes10k = await routes10k(berth, upstream.ports, lg.kind, { cpu: loadCpu, workDir: dir, connections }, say);
        } catch (err) {
          const why = `${(err as Error).message}${berth.proc?.logFile ? ` — log: ${tailOf(berth.proc.logFile)}` : ''}`;
          say(`   n/a (failed: ${why})`);
          report.routes10k = { skipped: `failed: ${why}` };
        }
      }
    }

    if (scenarioIds.includes('push10k')) {
      say();
      say('-- scenario push10k: a control plane pushes 10,002 routes, then one-route changes, each sent whole or as a delta (alternating, same proxy), while wrk runs c=50');
      try {
        report.push10k = await routePush(upstream.ports, lg.kind, { proxyCpu, loadCpu, workDir: dir, connections }, say);
      } catch (err) {
        say(`   n/a (failed: ${(err as Error).message})`);
        report.push10k = { skipped: `failed: ${(err as Error).message}` };
      }
    }

    report.targets = checkTargets(report, say);
  } finally {
    await stopAll();
  }
  const prof = berthProfileDir;
  if (prof) {
    // berth wrote its profile when it exited on SIGTERM (stopAll above)
    const files = existsSync(prof) ? readdirSync(prof).filter((f) => f.endsWith('.cpuprofile')) : [];
    say();
    if (files.length === 0) say(`-- profile: no .cpuprofile in ${prof} (did berth exit cleanly on SIGTERM?)`);
    else {
      const measured = report.scenarios.filter((s) => s.entries.some((e) => e.id === 'berth' && !e.unavailable));
      const perReq = measured.length === 1 && !scenarioIds.includes('conn1k') && !scenarioIds.includes('routes10k')
        ? measured[0].entries.find((e) => e.id === 'berth')?.cpuUsPerReq
        : undefined;
      say(`-- profile of berth (${perReq === undefined ? 'all scenarios mixed; run one scenario, e.g. BENCH_SCENARIOS=small, for µs/req' : `scenario ${measured[0].id}`})`);
      const summaries = files.map((f) => summariseProfile(join(prof, f), perReq));
      for (const sm of summaries) say(sm.text);
      report.profile = summaries.map(({ text: _t, ...rest }) => rest);
    }
  }
  environment.loadavgEnd = loadavg();
  say();
  say(`   load average at end: ${loadavg().map((x) => x.toFixed(2)).join(' ')}`);
  report.text = out.join('\n');
  return report;
}

async function routes10k(
  berth: ProxyTarget,
  ports: number[],
  lg: LoadgenKind,
  o: { cpu?: string; workDir: string; connections: number },
  say: (s?: string) => void,
): Promise<Record<string, unknown>> {
  const N = 10_000;
  const puts = 3;
  const bodies = Array.from({ length: puts }, (_, i) => JSON.stringify(buildBigTable(ports, N, 100 + i, `v${i}`)));
  // then as many deltas to the last table (PATCH /routes): one route added (and the one before removed)
  const last = 100 + puts - 1;
  const patches = Array.from({ length: puts }, (_, i) => JSON.stringify({
    base: last + i,
    version: last + i + 1,
    upsert: [{ id: `patch-${i}`, hosts: [`p${i}.patch.bench.local`], endpoints: [{ id: 'e0', address: `127.0.0.1:${ports[0]}` }] }],
    remove: i === 0 ? [] : [`patch-${i - 1}`],
  }));
  const steps = [
    ...bodies.map((body, i) => ({ name: `PUT #${i + 1}`, method: 'PUT', body, probe: `x.app-${4321 + i}.v${i}.bench.local` })),
    ...patches.map((body, i) => ({ name: `PATCH #${i + 1}`, method: 'PATCH', body, probe: `p${i}.patch.bench.local` })),
  ];
  const loadS = Math.ceil(Math.max(4, steps.length * 1.5 + 1));
  const loadP = runLoad(lg, { port: berth.port, host: HOST_SINGLE, path: '/small', connections: o.connections, durationS: loadS, cpu: o.cpu, workDir: o.workDir });
  // settle now so a failing load generator is reported, not an unhandled rejection
  const load = loadP.then(
    (r) => ({ ok: true as const, r }),
    (e: Error) => ({ ok: false as const, e }),
  );
  await sleep(1000);
  const applies: Array<{ name: string; ms: number; serverMs?: number; parseMs?: number; status: number; body: string; probe: number }> = [];
  for (const step of steps) {
    const t0 = process.hrtime.bigint();
    let status = 0;
    let body = '';
    try {
      const r = await httpRequest({
        port: berth.adminPort!,
        path: '/routes',
        method: step.method,
        body: step.body,
        headers: { 'content-type': 'application/json', ...(berth.adminToken ? { authorization: `Bearer ${berth.adminToken}` } : {}) },
        timeoutMs: 30_000,
      });
      status = r.status;
      body = r.body.toString('utf8').slice(0, 300);
    } catch (e) {
      body = (e as Error).message;
    }
    const ms = Number(process.hrtime.bigint() - t0) / 1e6;
    // the new table must serve: a host that only exists in it
    let probe = 0;
    try {
      probe = (await httpRequest({ port: berth.port, path: '/small', host: step.probe })).status;
    } catch {
      probe = -1;
    }
    let serverMs: number | undefined;
    let parseMs: number | undefined;
    try {
      const j = JSON.parse(body) as { applyMs?: unknown; parseMs?: unknown };
      if (typeof j.applyMs === 'number') serverMs = j.applyMs;
      if (typeof j.parseMs === 'number') parseMs = j.parseMs;
    } catch {
      /* not JSON */
    }
    applies.push({ name: step.name, ms, serverMs, parseMs, status, body, probe });
    await sleep(1000);
  }
  const settled = await load;
  if (!settled.ok) throw new Error(`load generator failed during routes10k: ${settled.e.message}`);
  const r = settled.r;
  const okAll = applies.every((a) => a.status >= 200 && a.status < 300);
  const rows = applies.map((a) => [
    a.name,
    fmt(a.ms, 1),
    a.parseMs === undefined ? '—' : fmt(a.parseMs, 1),
    a.serverMs === undefined ? '—' : fmt(a.serverMs, 1),
    String(a.status || 'error'),
    String(a.probe),
    a.status >= 200 && a.status < 300 ? '' : a.body.replace(/\s+/g, ' ').slice(0, 100),
  ]);
  say(table(['apply', 'client round trip ms', 'proxy parse+validate ms', 'proxy-reported applyMs', 'HTTP', 'new host served', 'note'], rows, 1));
  say(`   load during the applies: ${fmt(r.rps)} req/s over ${r.durationS.toFixed(1)} s, ${r.requests} requests, errors ${r.errors}${r.errors ? ` (${r.errorDetail})` : ''}`);
  say(`   PUT body ${(Buffer.byteLength(bodies[0]) / 1024).toFixed(0)} KiB (the whole table), PATCH body ${Buffer.byteLength(patches[1])} B (a delta: one route added, one removed); time includes upload, JSON parse, validation and table build (or patch) on the proxy's (busy) core`);
  const whole = applies.filter((a) => a.name.startsWith('PUT'));
  const delta = applies.filter((a) => a.name.startsWith('PATCH'));
  return {
    routes: N + 2,
    applies,
    medianMs: median(whole.map((a) => a.ms)),
    medianServerMs: median(whole.map((a) => a.serverMs ?? NaN)),
    medianParseMs: median(whole.map((a) => a.parseMs ?? NaN)),
    maxMs: Math.max(...whole.map((a) => a.ms)),
    patch: { medianMs: median(delta.map((a) => a.ms)), medianServerMs: median(delta.map((a) => a.serverMs ?? NaN)), maxMs: Math.max(...delta.map((a) => a.ms)) },
    allAccepted: okAll,
    load: r,
  };
}

function checkTargets(report: MacroReport, say: (s?: string) => void): MacroReport['targets'] {
  const rows: NonNullable<MacroReport['targets']> = [];
  const get = (sc: string, id: string) => report.scenarios.find((s) => s.id === sc)?.entries.find((e) => e.id === id && !e.unavailable);
  // issue #8 (the proxy at nginx speed): ≥ 0.7× nginx on small and round robin, ≥ 0.5× on 64 KiB,
  // p99 ≤ 2× nginx, ≥ 5× the Node peers, RSS < 120 MB at 1,000 connections
  for (const [sc, min] of [
    ['small', 0.7],
    ['64k', 0.5],
    ['rr3', 0.7],
  ] as const) {
    if (!report.scenarios.find((s) => s.id === sc)) continue;
    const b = get(sc, 'berth');
    const n = get(sc, 'nginx');
    if (!b || !n) {
      rows.push({ target: `${sc}: berth ≥ ${min}× nginx req/s`, status: 'n/a', measured: !b ? 'berth not measured' : 'nginx not measured' });
    } else {
      const r = b.rps! / n.rps!;
      rows.push({ target: `${sc}: berth ≥ ${min}× nginx req/s`, status: r >= min ? 'PASS' : 'FAIL', measured: `${r.toFixed(2)}× (${fmt(b.rps)} vs ${fmt(n.rps)})` });
      const p = b.p99Ms! / n.p99Ms!;
      rows.push({ target: `${sc}: berth p99 ≤ 2× nginx`, status: p <= 2 ? 'PASS' : 'FAIL', measured: `${p.toFixed(2)}× (${fmt(b.p99Ms, 2)} vs ${fmt(n.p99Ms, 2)} ms)` });
    }
    // the same goal met with pipelining on (opt-in per route): a row of its own, never instead of berth's
    const bp = get(sc, 'berth-pipeline');
    if (bp && n) {
      const r = bp.rps! / n.rps!;
      rows.push({ target: `${sc}: berth pipeline=8 ≥ ${min}× nginx req/s (opt-in)`, status: r >= min ? 'PASS' : 'FAIL', measured: `${r.toFixed(2)}× (${fmt(bp.rps)} vs ${fmt(n.rps)})` });
      const p = bp.p99Ms! / n.p99Ms!;
      rows.push({ target: `${sc}: berth pipeline=8 p99 ≤ 2× nginx (opt-in)`, status: p <= 2 ? 'PASS' : 'FAIL', measured: `${p.toFixed(2)}× (${fmt(bp.p99Ms, 2)} vs ${fmt(n.p99Ms, 2)} ms)` });
    }
    for (const peer of ['fastify-http-proxy', 'http-proxy']) {
      const q = get(sc, peer);
      if (!b || !q) rows.push({ target: `${sc}: berth ≥ 5× ${peer}`, status: 'n/a', measured: !b ? 'berth not measured' : `${peer} not measured` });
      else {
        const r = b.rps! / q.rps!;
        // what the goal asks of anyone on this machine: nginx's own multiple of the peer, and the
        // most a proxy on berth's runtime reaches (the uWS floor, which does none of a proxy's work)
        const f = get(sc, 'uws-floor');
        const ref = (n ? `; nginx itself ${(n.rps! / q.rps!).toFixed(2)}×` : '') + (f ? `; the uWS floor ${(f.rps! / q.rps!).toFixed(2)}×` : '');
        rows.push({ target: `${sc}: berth ≥ 5× ${peer}`, status: r >= 5 ? 'PASS' : 'FAIL', measured: `${r.toFixed(2)}× (${fmt(b.rps)} vs ${fmt(q.rps)}${ref})` });
      }
    }
  }
  if (report.conn1k && 'entries' in report.conn1k) {
    const b = report.conn1k.entries.find((e) => e.id === 'berth' && !e.unavailable);
    if (!b) rows.push({ target: 'berth RSS < 120 MB at 1,000 keep-alive connections', status: 'n/a', measured: 'berth not measured' });
    else
      rows.push({
        target: `berth RSS < 120 MB at ${report.conn1k.connections} keep-alive connections`,
        status: b.peakRssMb! < 120 && !b.errors ? 'PASS' : 'FAIL',
        measured: `${fmt(b.peakRssMb, 1)} MB peak, ${b.errors} errors`,
      });
  }
  if (report.routes10k) {
    const r = report.routes10k as { medianMs?: number; medianServerMs?: number; maxMs?: number; patch?: { medianMs: number; maxMs: number }; allAccepted?: boolean; load?: LoadResult; skipped?: string };
    if (r.skipped) rows.push({ target: '10,000-route table applied < 100 ms, no failed request', status: 'n/a', measured: r.skipped });
    else {
      const base = !!r.allAccepted && r.load!.errors === 0;
      const tail = `${r.allAccepted ? 'all accepted' : 'REJECTED'}, ${r.load!.errors} failed requests`;
      rows.push({
        target: '10k routes: proxy-reported applyMs < 100 ms (median), no failed request',
        status: r.medianServerMs === undefined || !Number.isFinite(r.medianServerMs) ? 'n/a' : base && r.medianServerMs < 100 ? 'PASS' : 'FAIL',
        measured: `median ${fmt(r.medianServerMs, 1)} ms, ${tail}`,
      });
      rows.push({
        target: '10k routes: PUT round trip < 100 ms (median), no failed request',
        status: base && r.medianMs! < 100 ? 'PASS' : 'FAIL',
        measured: `median ${fmt(r.medianMs, 1)} ms, max ${fmt(r.maxMs, 1)} ms, ${tail}`,
      });
      if (r.patch && Number.isFinite(r.patch.medianMs)) {
        rows.push({
          target: '10k routes: PATCH (one-route delta) round trip < 100 ms (median), no failed request',
          status: base && r.patch.medianMs < 100 ? 'PASS' : 'FAIL',
          measured: `median ${fmt(r.patch.medianMs, 1)} ms, max ${fmt(r.patch.maxMs, 1)} ms, ${tail}`,
        });
      }
    }
  }
  if (rows.length) {
    say();
    say('-- targets from issue #8 (single run on a shared machine; differences < 15 % are noise)');
    const noise = report.scenarios.flatMap((s) => s.entries.filter((e) => e.id !== 'direct' && e.otherLoad !== undefined && Number.isFinite(e.otherLoad)).map((e) => e.otherLoad!));
    const worst = noise.length ? Math.max(...noise) : NaN;
    if (worst > 0.1) {
      say(`   WARNING: other processes used up to ${fmt(worst * 100)}% of the proxy's core during these runs (column "noise"): PASS/FAIL below is not reliable; rerun on a quiet machine`);
    }
    say(table(['target', 'status', 'measured'], rows.map((r) => [r.target, r.status, r.measured]), 3));
  }
  return rows;
}
