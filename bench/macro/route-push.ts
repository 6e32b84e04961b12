/**
 * Scenario push10k: a control plane pushes a 10,000-route table to a berth proxy, then changes
 * one route at a time (an app's instance moves, an app is added), while wrk runs on the proxy.
 * Each change goes once as the whole table (`event: routes`, what every change cost before
 * deltas, and what older proxies still read) and once as a delta (`event: delta`), on the same
 * proxy, alternating. The events are the control plane's own (control-plane/discovery/
 * route-events.ts) from a watch server here that speaks `/v1/routes/watch` and
 * `/v1/proxy/report`: a real control plane would need 10,000 apps in its database for the same.
 *
 * Measured per change: the round trip (event written → the proxy's report of the new version,
 * which it sends right after applying) and that the new host serves; the load's failed requests.
 */
import { readFileSync } from 'node:fs';
import { createServer, type ServerResponse } from 'node:http';
import { once } from 'node:events';
import type { AddressInfo } from 'node:net';
import { RouteEvents } from '../../control-plane/discovery/route-events.js';
import type { RouteSpec, RouteTableSpec } from '../../shared/routes/schema.js';
import { validateRouteTable } from '../../shared/routes/validate.js';
import { fmt, median, table } from '../lib/format.js';
import { httpRequest, sleep } from '../lib/net.js';
import { stop } from '../lib/proc.js';
import { runLoad, type LoadgenKind } from './loadgen.js';
import { HOST_SINGLE, buildBigTable, startBerth } from './targets.js';

const TOKEN = 'bench-push-token';

/** A /v1/routes/watch server: `send` writes each stream the next table, whole or as a delta from the last. */
async function watchServer() {
  const events = new RouteEvents((t) => t);
  const streams = new Map<ServerResponse, RouteTableSpec | null>();
  /** when each version was first reported applied (hrtime ns) */
  const reported = new Map<number, bigint>();
  let current: RouteTableSpec | null = null;
  const server = createServer((req, res) => {
    if (req.headers.authorization !== `Bearer ${TOKEN}`) {
      res.writeHead(401).end();
      return;
    }
    if (req.url?.startsWith('/v1/routes/watch')) {
      res.writeHead(200, { 'content-type': 'text/event-stream' });
      res.socket?.setNoDelay(true);
      streams.set(res, current);
      if (current) res.write(events.table(current, 0));
      res.on('close', () => streams.delete(res));
      return;
    }
    if (req.url === '/v1/proxy/report') {
      const chunks: Buffer[] = [];
      req.on('data', (c: Buffer) => chunks.push(c));
      req.on('end', () => {
        const at = process.hrtime.bigint();
        try {
          const v = (JSON.parse(Buffer.concat(chunks).toString('utf8')) as { tableVersion: number | null }).tableVersion;
          if (v !== null && !reported.has(v)) reported.set(v, at);
        } catch { /* not ours to judge */ }
        res.writeHead(204).end();
      });
      return;
    }
    res.writeHead(404).end();
  });
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  return {
    url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`,
    reported,
    /** the table streams get from now on; `delta`: as a delta from the stream's last one (else whole). Answers the bytes written per stream. */
    send(t: RouteTableSpec, delta: boolean): number {
      current = t;
      let bytes = 0;
      for (const [res, sent] of streams) {
        const text = (delta && sent !== null ? events.delta(sent, t, 0) : null) ?? events.table(t, 0);
        streams.set(res, t);
        res.write(text);
        bytes = Buffer.byteLength(text);
      }
      return bytes;
    },
    get streams() { return streams.size; },
    close: () => { for (const r of streams.keys()) r.destroy(); server.closeAllConnections(); return new Promise((r) => server.close(r)); },
  };
}

export async function routePush(
  ports: number[],
  lg: LoadgenKind,
  o: { proxyCpu?: string; loadCpu?: string; workDir: string; connections: number },
  say: (s?: string) => void,
): Promise<Record<string, unknown>> {
  const N = 10_000;
  const changes = 6;
  const cp = await watchServer();
  let spec: RouteTableSpec = validateRouteTable(buildBigTable(ports, N, 1, 'push'));
  cp.send(spec, false);
  const berth = await startBerth(o.workDir, ports, o.proxyCpu, false, { url: cp.url, token: TOKEN });
  try {
    if (berth.unavailable) throw new Error(berth.unavailable);
    // applied once whole and reported: the changes start from here
    const t1 = Date.now();
    while (!cp.reported.has(1) && Date.now() - t1 < 20_000) await sleep(20);
    if (!cp.reported.has(1)) throw new Error('the proxy never reported the first table');
    const loadS = Math.ceil(changes * 1.3 + 3);
    const load = runLoad(lg, { port: berth.port, host: HOST_SINGLE, path: '/small', connections: o.connections, durationS: loadS, cpu: o.loadCpu, workDir: o.workDir }).then(
      (r) => ({ ok: true as const, r }),
      (e: Error) => ({ ok: false as const, e }),
    );
    await sleep(1000);
    const rows: Array<{ how: 'whole' | 'delta'; version: number; servedMs: number; ms: number; bytes: number; served: number }> = [];
    for (let i = 0; i < changes; i++) {
      const how = i % 2 === 0 ? 'whole' : 'delta';
      const version = spec.version + 1;
      // one app's instance moves to another port, and one app is added
      const moved = i % N;
      const routes: RouteSpec[] = spec.routes.map((r) => r.id === `app-${moved}`
        ? { ...r, endpoints: [{ id: `c-${moved}-${version}`, address: `127.0.0.1:${ports[(moved + 1 + i) % ports.length]}` }] }
        : r);
      routes.push({ id: `new-${version}`, hosts: [`new-${version}.push.bench.local`], endpoints: [{ id: `n-${version}`, address: `127.0.0.1:${ports[0]}` }] });
      spec = { version, routes };
      const t0 = process.hrtime.bigint();
      const bytes = cp.send(spec, how === 'delta');
      // the new host asked for until it serves (each probe waits its turn behind the load)
      const until = Date.now() + 10_000;
      let served = 0;
      let servedMs = NaN;
      while (Date.now() < until) {
        try {
          served = (await httpRequest({ port: berth.port, path: '/small', host: `new-${version}.push.bench.local` })).status;
        } catch {
          served = -1;
        }
        if (served === 200) {
          servedMs = Number(process.hrtime.bigint() - t0) / 1e6;
          break;
        }
        await sleep(1);
      }
      while (!cp.reported.has(version) && Date.now() < until) await sleep(1);
      const at = cp.reported.get(version);
      const ms = at === undefined ? NaN : Number(at - t0) / 1e6;
      rows.push({ how, version, servedMs, ms, bytes, served });
      await sleep(1000);
    }
    const settled = await load;
    if (!settled.ok) throw new Error(`load generator failed during push10k: ${settled.e.message}`);
    const r = settled.r;
    // what the proxy says each apply took on its serving thread (its "route table applied" lines)
    const applyMs = new Map<number, number>();
    const parseMs = new Map<number, number>();
    try {
      for (const line of readFileSync(berth.proc!.logFile!, 'utf8').split('\n')) {
        if (!line.includes('route table applied')) continue;
        const j = JSON.parse(line) as { version?: number; applyMs?: number; parseMs?: number };
        if (typeof j.version !== 'number') continue;
        if (typeof j.applyMs === 'number') applyMs.set(j.version, j.applyMs);
        if (typeof j.parseMs === 'number') parseMs.set(j.version, j.parseMs);
      }
    } catch { /* no log: the columns stay empty */ }
    say(table(['change', 'sent as', 'event KiB', 'proxy read+check ms', 'proxy apply ms', 'sent → new host served ms', 'sent → proxy reports it ms', 'HTTP'],
      rows.map((x, i) => [`#${i + 1}`, x.how === 'whole' ? 'whole table' : 'delta', fmt(x.bytes / 1024, 1), fmt(parseMs.get(x.version), 1), fmt(applyMs.get(x.version), 1), fmt(x.servedMs, 1), fmt(x.ms, 1), String(x.served)]), 2));
    const med = (how: string, f: (x: (typeof rows)[number]) => number) => median(rows.filter((x) => x.how === how).map(f));
    const apply = (x: (typeof rows)[number]) => applyMs.get(x.version) ?? NaN;
    const parse = (x: (typeof rows)[number]) => parseMs.get(x.version) ?? NaN;
    say(`   medians, whole table / delta: on the proxy's serving thread ${fmt(med('whole', parse) + med('whole', apply), 1)} / ${fmt(med('delta', parse) + med('delta', apply), 1)} ms (read+check ${fmt(med('whole', parse), 1)} / ${fmt(med('delta', parse), 1)}, apply ${fmt(med('whole', apply), 1)} / ${fmt(med('delta', apply), 1)}); new host served after ${fmt(med('whole', (x) => x.servedMs), 1)} / ${fmt(med('delta', (x) => x.servedMs), 1)} ms; load ${fmt(r.rps)} req/s, errors ${r.errors}${r.errors ? ` (${r.errorDetail})` : ''}`);
    say('   (the round trips are timed from this process, on the load generator\'s saturated core; the report comes after the proxy gathered the counters of its 10,002 routes)');
    return {
      routes: spec.routes.length,
      changes: rows.map((x) => ({ ...x, applyMs: applyMs.get(x.version), parseMs: parseMs.get(x.version) })),
      medianParseMs: { whole: med('whole', parse), delta: med('delta', parse) },
      medianApplyMs: { whole: med('whole', apply), delta: med('delta', apply) },
      medianServedMs: { whole: med('whole', (x) => x.servedMs), delta: med('delta', (x) => x.servedMs) },
      load: r,
    };
  } finally {
    if (berth.proc) await stop(berth.proc);
    await cp.close();
  }
}
