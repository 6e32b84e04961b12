/** Micro benchmarks (tinybench): the per-request hot-path pieces in isolation. */
import { Bench } from 'tinybench';
import { fmt, table } from '../lib/format.js';
import { normalizeHost } from '../../shared/hostname.js';
import { validateRouteTable } from '../../shared/routes/validate.js';
import type { RouteTableSpec } from '../../shared/routes/schema.js';
import { compileRouteTable, RouteState } from '../../proxy/routing/table.js';
import { EndpointRegistry } from '../../proxy/upstream/endpoint.js';
import { createBalancer, type Target } from '../../proxy/balancing/index.js';
import { CircuitBreaker } from '../../proxy/resilience/circuit-breaker.js';
import { FallbackCache } from '../../proxy/resilience/fallback-cache.js';
import { RouteStats } from '../../proxy/metrics/route-stats.js';

export interface MicroRow {
  group: string;
  name: string;
  opsPerSec: number;
  nsPerOp: number;
  rme: number;
  samples: number;
}

function bigTable(n: number): object {
  const routes = [];
  for (let i = 0; i < n; i++) {
    routes.push({
      id: `app-${i}`,
      hosts: [`app-${i}.example.com`, `*.app-${i}.example.com`],
      endpoints: [{ id: `c-${i}`, address: `127.0.0.1:${10000 + (i % 50000)}` }],
    });
  }
  return { version: 1, routes };
}

export async function runMicro(): Promise<{ rows: MicroRow[]; text: string }> {
  const time = Number(process.env.BENCH_MICRO_TIME ?? 300);
  const groups: Array<{ group: string; bench: Bench }> = [];

  // ---- the floor: what an empty task measures (timer + call overhead left after correction)
  const base = new Bench({ time, name: 'baseline' });
  base.add('empty function (measurement floor)', () => {});
  groups.push({ group: 'baseline', bench: base });

  // ---- hostname normalisation
  const hn = new Bench({ time, name: 'normalizeHost' });
  hn.add('fast path: "shop.example.com"', () => normalizeHost('shop.example.com'));
  hn.add('port + case: "Shop.Example.COM:8080"', () => normalizeHost('Shop.Example.COM:8080'));
  hn.add('URL: "https://shop.example.com/a?b"', () => normalizeHost('https://shop.example.com/a?b'));
  hn.add('trailing dot: "shop.example.com."', () => normalizeHost('shop.example.com.'));
  hn.add('IDN: "Bücher.example"', () => normalizeHost('Bücher.example'));
  groups.push({ group: 'hostname', bench: hn });

  // ---- route lookup in a compiled 10,000-route table (20,000 hostnames: exact + wildcard)
  const table10k = JSON.stringify(bigTable(10_000));
  const poolOpts = { connections: 64, keepAliveTimeoutMs: 60_000, connectMs: 2000 };
  const registry = new EndpointRegistry(poolOpts); // pools are created lazily: nothing connects here
  const compiled = compileRouteTable(validateRouteTable(JSON.parse(table10k)), registry, new RouteState());
  if (compiled.lookup('app-4321.example.com')?.id !== 'app-4321' || compiled.lookup('x.y.app-4321.example.com')?.id !== 'app-4321') {
    throw new Error('micro: 10k-route table lookup returned the wrong route');
  }
  let sink = 0;
  const lk = new Bench({ time, name: 'lookup' });
  lk.add('exact hit "app-4321.example.com"', () => {
    sink ^= compiled.lookup('app-4321.example.com') ? 1 : 0;
  });
  lk.add('wildcard hit "x.y.app-4321.example.com"', () => {
    sink ^= compiled.lookup('x.y.app-4321.example.com') ? 1 : 0;
  });
  lk.add('miss "nope.unknown.example.org"', () => {
    sink ^= compiled.lookup('nope.unknown.example.org') ? 1 : 0;
  });
  lk.add('normalizeHost + lookup "App-4321.Example.com:8080"', () => {
    sink ^= compiled.lookup(normalizeHost('App-4321.Example.com:8080')) ? 1 : 0;
  });
  groups.push({ group: 'lookup 10k', bench: lk });

  // ---- applying a table (the 10k-route apply target is < 100 ms end to end)
  const vt = new Bench({ time: Math.max(time, 1000), name: 'apply', iterations: 5 });
  vt.add('JSON.parse + validateRouteTable, 10,000 routes', () => validateRouteTable(JSON.parse(table10k)));
  const validated = validateRouteTable(JSON.parse(table10k)) as RouteTableSpec;
  const state = new RouteState();
  vt.add('compileRouteTable, 10,000 routes (validated)', () => compileRouteTable(validated, registry, state));
  vt.add('parse + validate + compile, 10,000 routes', () => compileRouteTable(validateRouteTable(JSON.parse(table10k)), registry, state));
  groups.push({ group: 'apply 10k', bench: vt });

  // ---- pickers over 3 endpoints
  const mkTargets = (weights: number[]): Target[] =>
    weights.map((w, i) => ({ id: `e${i}`, endpoint: registry.get(`127.0.0.1:${20000 + i}`, 3, 15_000, 2000, 1), weight: w, current: 0, cap: 0, key: '' }));
  const rrT = mkTargets([1, 1, 1]);
  const rr = createBalancer('round_robin', rrT);
  const lr = createBalancer('least_request', mkTargets([1, 1, 1]));
  const wt = createBalancer('weighted', mkTargets([5, 1, 1]));
  const openT = [
    { id: 'o0', endpoint: registry.get('127.0.0.1:21000', 1, 1e9, 2000, 1), weight: 1, current: 0, cap: 0, key: '' },
    ...[1, 2].map((i) => ({ id: `o${i}`, endpoint: registry.get(`127.0.0.1:2100${i}`, 1, 1e9, 2000, 1), weight: 1, current: 0, cap: 0, key: '' })),
  ];
  openT[0].endpoint.breaker.onFailure(Date.now()); // threshold 1: now OPEN for a very long time
  const rrOpen = createBalancer('round_robin', openT);
  const lrOpen = createBalancer('least_request', openT);
  const pk = new Bench({ time, name: 'pickers' });
  const now = Date.now();
  pk.add('round_robin pick (3 endpoints)', () => {
    sink ^= rr.pick(now, null) ? 1 : 0;
  });
  pk.add('least_request P2C pick (3 endpoints)', () => {
    sink ^= lr.pick(now, null) ? 1 : 0;
  });
  pk.add('weighted SWRR pick (5,1,1)', () => {
    sink ^= wt.pick(now, null) ? 1 : 0;
  });
  pk.add('round_robin pick, 1 of 3 breakers OPEN', () => {
    sink ^= rrOpen.pick(now, null) ? 1 : 0;
  });
  pk.add('least_request pick, 1 of 3 breakers OPEN', () => {
    sink ^= lrOpen.pick(now, null) ? 1 : 0;
  });
  groups.push({ group: 'picker', bench: pk });

  // ---- breaker + per-request bookkeeping
  const closed = new CircuitBreaker(3, 15_000);
  const flapping = new CircuitBreaker(3, 15_000);
  const probing = new CircuitBreaker(1, 1);
  const stats = new RouteStats('r');
  const cache = new FallbackCache({ enabled: true, ttlMs: 10_000, maxEntries: 1000, maxBytes: 16 << 20 });
  cache.store('bench.local/small', { headers: ['content-type', 'text/plain'], body: Buffer.from('ok'), storedAt: Date.now() });
  const bk = new Bench({ time, name: 'bookkeeping' });
  bk.add('breaker: admits + acquire + onSuccess (CLOSED)', () => {
    if (closed.admits(now)) {
      closed.acquire(now);
      closed.onSuccess();
    }
  });
  bk.add('breaker: onFailure + onSuccess (below threshold)', () => {
    flapping.onFailure(now);
    flapping.onSuccess();
  });
  let t = now;
  bk.add('breaker: OPEN → HALF_OPEN probe → fail → OPEN', () => {
    t += 2;
    probing.onFailure(t); // CLOSED/HALF_OPEN → OPEN
    if (probing.admits(t + 1)) probing.acquire(t + 1); // openMs elapsed → HALF_OPEN, probe reserved
  });
  bk.add('RouteStats.observeLatency', () => stats.observeLatency(0.7));
  bk.add('FallbackCache.wants (young entry)', () => {
    sink ^= cache.wants('bench.local', '/small', false, '', now) ? 1 : 0;
  });
  groups.push({ group: 'bookkeeping', bench: bk });

  const rows: MicroRow[] = [];
  for (const g of groups) {
    await g.bench.run();
    for (const t of g.bench.tasks) {
      const r = t.result;
      if (r.state !== 'completed') {
        rows.push({ group: g.group, name: `${t.name} (${r.state})`, opsPerSec: NaN, nsPerOp: NaN, rme: NaN, samples: 0 });
        continue;
      }
      rows.push({
        group: g.group,
        name: t.name,
        opsPerSec: r.throughput.mean,
        nsPerOp: r.latency.mean * 1e6,
        rme: r.latency.rme,
        samples: r.latency.df + 1,
      });
    }
  }
  const text = table(
    ['group', 'benchmark', 'ops/s', 'ns/op', '±%', 'samples'],
    rows.map((r) => [r.group, r.name, fmt(r.opsPerSec), r.nsPerOp >= 1e6 ? `${fmt(r.nsPerOp / 1e6, 2)} ms` : fmt(r.nsPerOp, 1), fmt(r.rme, 1), String(r.samples)]),
    2,
  );
  if (sink === 42) process.stdout.write(''); // keep results observable so nothing is optimised away
  process.stdout.write(`== micro (tinybench, ${time} ms per task)\n${text}\n\n`);
  return { rows, text };
}
