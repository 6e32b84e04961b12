/** Micro benchmarks (tinybench): the per-request hot-path pieces in isolation. */
import { Bench } from 'tinybench';
import { fmt, table } from '../lib/format.js';
import { normalizeHost } from '../../shared/hostname.js';
import { validateRouteTable } from '../../shared/routes/validate.js';

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

  // ---- hostname normalisation
  const hn = new Bench({ time, name: 'normalizeHost' });
  hn.add('fast path: "shop.example.com"', () => normalizeHost('shop.example.com'));
  hn.add('port + case: "Shop.Example.COM:8080"', () => normalizeHost('Shop.Example.COM:8080'));
  hn.add('URL: "https://shop.example.com/a?b"', () => normalizeHost('https://shop.example.com/a?b'));
  hn.add('trailing dot: "shop.example.com."', () => normalizeHost('shop.example.com.'));
  hn.add('IDN: "Bücher.example"', () => normalizeHost('Bücher.example'));
  groups.push({ group: 'hostname', bench: hn });

  // ---- route-table validation (part of every apply; the 10k-route apply target is < 100 ms)
  const table10k = JSON.stringify(bigTable(10_000));
  const vt = new Bench({ time: Math.max(time, 1000), name: 'validate', iterations: 5 });
  vt.add('JSON.parse + validateRouteTable, 10,000 routes', () => validateRouteTable(JSON.parse(table10k)));
  groups.push({ group: 'route table', bench: vt });

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
  process.stdout.write(`== micro (tinybench, ${time} ms per task)\n${text}\n\n`);
  return { rows, text };
}
