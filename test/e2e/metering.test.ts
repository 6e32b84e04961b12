import { createHash } from 'node:crypto';
import { createServer, type Server } from 'node:http';
import { WebSocket } from 'undici';
import { once } from 'node:events';
import type { AddressInfo } from 'node:net';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startControlPlane, type ControlPlane } from '../../control-plane/app.js';
import { Api } from '../helpers/api.js';
import { insertReadyImage } from '../helpers/control-plane.js';
import { startTestPostgres, type TestPostgres } from '../helpers/postgres.js';
import { freePort } from '../helpers/ports.js';
import { startProxy, type ProxyProc } from '../proxy/harness.js';
import { METER_BUCKET_COUNT } from '../../shared/metering/schema.js';
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import { BIN, viaProxy, waitFor, sleep } from './support.js';

/**
 * Metering end to end with real processes: a real upstream (node:http standing in for a
 * container: its row points at the upstream's port), a real proxy subscribed to an in-process
 * control plane on embedded Postgres. N requests are N in /api/metrics even when the control
 * plane is away and restarted, and the proxy is SIGKILLed and restarted, in between.
 * (No Docker: the control plane's DOCKER_HOST is a socket that does not exist.)
 */
/** What `berth load --json -` reports (the part used here). */
type WorkloadSummary = { total_requests: number; successful_requests: number; failed_requests: number; status_code_distribution: Record<string, number> };
const TOKEN = 'metering-test-token';
const HOST = 'metered.example.com';
let pg: TestPostgres;
let dbUrl: string;
let cpPort: number;
let cp: ControlPlane | undefined;
let upstream: Server;
let upPort: number;
let dataDir: string;
let cpData: string;
let px: ProxyProc | undefined;
let alice: Api;
let bob: Api;
let aliceId: number;
let imageId: number;
let containerId: number;

const startCp = async () => {
  cp = await startControlPlane({
    port: cpPort, dataDir: cpData, databaseUrl: dbUrl, quiet: true, seedDefaultUser: false, proxyToken: TOKEN,
    dockerHost: 'unix:///nonexistent/docker.sock', autoscale: { enabled: false },
  });
  return cp;
};
const proxyArgs = () => ['--control-plane', `http://127.0.0.1:${cpPort}`, '--token', TOKEN, '--data-dir', dataDir];

async function send(n: number): Promise<void> {
  for (let i = 0; i < n; i += 10) {
    const rs = await Promise.all(Array.from({ length: Math.min(10, n - i) }, () => viaProxy(px!.port, HOST, '/hello')));
    for (const r of rs) expect(r.status).toBe(200);
  }
}
const total = async (api = alice) => (await api.get('/api/metrics')).body.total_requests as number;

beforeAll(async () => {
  pg = await startTestPostgres();
  dbUrl = await pg.createDatabase();
  cpPort = await freePort();
  cpData = mkdtempSync(join(tmpdir(), 'berth-metering-cp-'));
  dataDir = mkdtempSync(join(tmpdir(), 'berth-metering-px-'));
  upstream = createServer((req, res) => { req.resume(); req.on('end', () => res.end('hello metered world\n')); });
  // a minimal WebSocket endpoint: accepts the upgrade, sends "hello", reads what the client sends
  upstream.on('upgrade', (req, socket) => {
    const accept = createHash('sha1').update(`${req.headers['sec-websocket-key']}258EAFA5-E914-47DA-95CA-C5AB0DC85B11`).digest('base64');
    socket.write(`HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: ${accept}\r\n\r\n`);
    socket.write(Buffer.from([0x81, 5, ...Buffer.from('hello')]));
    socket.on('data', () => {});
    socket.on('error', () => {});
  });
  upstream.listen(0, '127.0.0.1');
  await once(upstream, 'listening');
  upPort = (upstream.address() as AddressInfo).port;
  await startCp();
  alice = await new Api(cp!.url).signup('alice-meter@example.com');
  bob = await new Api(cp!.url).signup('bob-meter@example.com');
  aliceId = (await alice.get('/api/auth/me')).body.user.id;
  imageId = await insertReadyImage(cp!, aliceId, HOST, 2);
  await cp!.db.query('UPDATE images SET min_instances = 1, min_instances_provisioned = true WHERE id = $1', [imageId]);
  const { rows: [c] } = await cp!.db.query<{ id: string }>(
    `INSERT INTO containers (user_id, image_id, name, status, health, internal_port, desired, host_port)
     VALUES ($1, $2, 'metered-1', 'running', 'healthy', 8080, 'running', $3) RETURNING id`, [aliceId, imageId, upPort]);
  containerId = Number(c.id);
  await cp!.app.platform.hub.refresh();
}, 60_000);

afterAll(async () => {
  await px?.stop('SIGKILL');
  await cp?.close();
  await pg?.stop();
  upstream?.closeAllConnections();
  upstream?.close();
  for (const d of [dataDir, cpData]) if (d) rmSync(d, { recursive: true, force: true });
});

describe('metering through a real proxy', () => {
  it('counts N requests exactly once across a control plane outage and restart and a proxy SIGKILL and restart', async () => {
    px = await startProxy(null, proxyArgs());
    await waitFor('the route to reach the proxy', async () => (await viaProxy(px!.port, HOST, '/hello')).status === 200, 20_000);
    // that request counts too
    let sent = 1;
    await send(49); sent += 49;
    await waitFor(`${sent} metered requests`, async () => (await total()) === sent, 15_000);

    // the control plane goes away; the proxy keeps serving and keeps its deltas
    await cp!.close();
    cp = undefined;
    await send(30); sent += 30;
    await sleep(2500); // a report tick has put them in a persisted batch
    // the proxy dies hard and comes back with the same data dir: its persisted table and outbox
    await px.stop('SIGKILL');
    px = await startProxy(null, proxyArgs());
    await waitFor('the restarted proxy to serve its persisted table', async () => (await viaProxy(px!.port, HOST, '/hello')).status === 200, 20_000);
    sent += 1;
    await send(19); sent += 19;
    await sleep(1500);
    await startCp();
    alice = new Api(cp!.url, alice.token);
    await waitFor(`${sent} metered requests after the outage`, async () => (await total()) === sent, 30_000);
    await sleep(3000); // resends after the control plane came back must not count twice
    expect(await total()).toBe(sent);

    const m = (await alice.get('/api/metrics')).body;
    expect(m.user_id).toBe(aliceId);
    expect(m.status_codes['2xx']).toBe(sent);
    expect(m.total_errors).toBe(0);
    expect(m.by_app_hostname[HOST].total_requests).toBe(sent);
    expect(m.by_container[String(containerId)].total_requests).toBe(sent);
    expect(m.p50_latency_ms).toBeGreaterThan(0);
    expect(m.p99_latency_ms).toBeGreaterThanOrEqual(m.p50_latency_ms);
    expect(m.bytes_out).toBe(sent * 'hello metered world\n'.length);
    const filtered = (await alice.get(`/api/metrics?app_hostname=${HOST.toUpperCase()}&container_id=${containerId}`)).body;
    expect(filtered.total_requests).toBe(sent);
    const series = (await alice.get(`/api/metrics/series?app_hostname=${HOST}&step=60`)).body;
    expect(series.points.reduce((s: number, p: { requests: number }) => s + p.requests, 0)).toBe(sent);
  }, 120_000);

  it('reconciles: requests a workload sent = requests metered = requests billed', async () => {
    const before = (await alice.get('/api/metrics')).body.total_requests as number;
    const { stdout } = await promisify(execFile)(process.execPath, [BIN, 'load', '--app', HOST, '--proxy-url', px!.url, '--rps', '200', '--duration', '3s', '--path', '/hello', '--json', '-', '--quiet'], { maxBuffer: 64 << 20 });
    const w = (JSON.parse(stdout.slice(stdout.indexOf('\n{') + 1)) as { metrics: WorkloadSummary }).metrics;
    expect(w.failed_requests).toBe(0);
    const sent = w.total_requests;
    expect(sent).toBeGreaterThan(300);
    const metered = await waitFor('the workload metered', async () => { const n = await total(); return n - before === sent && n; }, 20_000);
    const month = new Date().toISOString().slice(0, 7);
    const billing = (await alice.get(`/api/billing/images/${imageId}`)).body;
    const invoice = (await alice.get(`/api/billing/invoices/${month}`)).body;
    const billedLine = invoice.lines.find((l: { app_hostname: string; resource: string }) => l.app_hostname === HOST && l.resource === 'requests');
    // every request so far was answered by the container: all of them are billed
    expect(billing.requests).toBe(metered);
    expect(billedLine.quantity).toBe(metered);
    expect(billedLine.amount).toBe(Math.round((metered * 400_000) / 1_000_000));
    process.stdout.write(`[metering reconciliation] workload sent ${sent} (ok ${w.successful_requests}, failed ${w.failed_requests}); metered ${metered - before} of them (${metered} in all); billed ${billing.requests} requests = ${billedLine.amount} micro-USD\n`);
  }, 60_000);

  it('meters a WebSocket: the upgrade once (1xx), message bytes both ways', async () => {
    px ??= await startProxy(null, proxyArgs());
    await waitFor('the route to reach the proxy', async () => (await viaProxy(px!.port, HOST, '/hello')).status === 200, 20_000);
    await sleep(1200);
    const before = (await alice.get('/api/metrics')).body;
    // undici's WebSocket client ignores a Host header: address the app by /apps/{host}/
    const ws = new WebSocket(`ws://127.0.0.1:${px!.port}/apps/${HOST}/ws`);
    const got = await new Promise<string>((resolve, reject) => {
      ws.onmessage = (e) => resolve(String(e.data));
      ws.onerror = () => reject(new Error('the WebSocket through the proxy failed'));
    });
    expect(got).toBe('hello');
    ws.send('ping!!');
    await sleep(300);
    ws.close();
    const after = await waitFor('the upgrade metered', async () => {
      const m = (await alice.get('/api/metrics')).body;
      return m.total_requests === before.total_requests + 1 && m.bytes_in >= before.bytes_in + 6 && m;
    }, 15_000);
    expect(after.status_codes['1xx']).toBe(before.status_codes['1xx'] + 1);
    expect(after.bytes_out).toBe(before.bytes_out + 5);
    expect(after.bytes_in).toBe(before.bytes_in + 6);
  });

  it('applies a batch once: a resent seq, and a seq below the last applied, are ignored', async () => {
    const proxy = new Api(cp!.url, TOKEN);
    const entry = (n: number) => ({
      route: `img-${imageId}`, endpoint: `c-${containerId}`, requests: n, status: [0, n, 0, 0, 0], proxyErrors: 0,
      buckets: [n, ...new Array(METER_BUCKET_COUNT - 1).fill(0)], latencyMsSum: n * 0.2, bytesIn: 0, bytesOut: 0,
    });
    const before = await total();
    const now = Date.now();
    const up = (seq: number, n: number) => ({ seq, from: now - 1000, to: now, entries: [entry(n)] });
    let r = await proxy.post('/v1/proxy/metering', { stream: 'test-stream-1', batches: [up(1, 7)] });
    expect(r.status).toBe(200);
    expect(r.body).toMatchObject({ acked: 1, applied: 1, duplicates: 0 });
    r = await proxy.post('/v1/proxy/metering', { stream: 'test-stream-1', batches: [up(1, 7), up(2, 5)] });
    expect(r.body).toMatchObject({ acked: 2, applied: 1, duplicates: 1 });
    // the same body twice at once: the stream row lock applies it once
    const same = { stream: 'test-stream-1', batches: [up(3, 11)] };
    const both = await Promise.all([proxy.post('/v1/proxy/metering', same), proxy.post('/v1/proxy/metering', same)]);
    expect(both.map((x) => x.body.applied).sort()).toEqual([0, 1]);
    r = await proxy.post('/v1/proxy/metering', { stream: 'test-stream-1', batches: [up(2, 5)] });
    expect(r.body).toMatchObject({ acked: 3, applied: 0, duplicates: 1 });
    expect(await total()).toBe(before + 7 + 5 + 11);
    // several proxies at once on the same rows (both orders): every batch applied, none lost to a deadlock
    const mid = await total();
    const two = (seq: number, flip: boolean) => {
      const es = [entry(1), { ...entry(2), endpoint: '' }];
      return { seq, from: now - 1000, to: now, entries: flip ? es.reverse() : es };
    };
    // (one stream's batches always arrive in order: a proxy has one upload in flight)
    const ups = Array.from({ length: 12 }, (_, i) => proxy.post('/v1/proxy/metering', { stream: `par-${i}`, batches: [two(1, i % 2 === 0)] }));
    for (const r of await Promise.all(ups)) expect(r.status, r.text).toBe(200);
    expect(await total()).toBe(mid + 12 * 3);
    // refused without the proxy token; malformed bodies are 400
    expect((await new Api(cp!.url).post('/v1/proxy/metering', same)).status).toBe(401);
    expect((await alice.post('/v1/proxy/metering', same)).status).toBe(401);
    expect((await proxy.post('/v1/proxy/metering', { stream: 'x', batches: [{ seq: 0, from: 1, to: 2, entries: [] }] })).status).toBe(400);
    expect((await proxy.post('/v1/proxy/metering', { stream: 'x', batches: [{ ...up(1, 1), entries: [{ ...entry(1), status: [1] }] }] })).status).toBe(400);
  });

  it('a proxy with worker threads stopped by SIGTERM right after its requests hands over their counts', async () => {
    await px?.stop('SIGKILL');
    px = await startProxy(null, [...proxyArgs(), '--workers', '2']);
    await waitFor('the route to reach the workers', async () => (await viaProxy(px!.port, HOST, '/hello')).status === 200, 20_000);
    await sleep(1500); // the probing requests above are reported
    const before = await total();
    await send(40);
    const stopping = px;
    px = undefined;
    expect(await stopping.stop('SIGTERM'), stopping.logs().slice(-3000)).toBe(0);
    await waitFor('the last counts delivered', async () => (await total()) >= before + 40, 10_000);
    await sleep(1500);
    expect((await total()) - before).toBe(40);
  }, 60_000);

  it('isolation and hostile filters: another user\'s app or container is 404, bad times and params are 400', async () => {
    expect((await bob.get(`/api/metrics?app_hostname=${HOST}`)).status).toBe(404);
    expect((await bob.get(`/api/metrics?container_id=${containerId}`)).status).toBe(404);
    expect((await bob.get(`/api/metrics/series?app_hostname=${HOST}`)).status).toBe(404);
    const mine = (await bob.get('/api/metrics')).body;
    expect(mine.total_requests).toBe(0);
    expect(mine.by_app_hostname).toEqual({});
    for (const q of ['since=yesterday', 'until=2026-13-45T99:00:00Z', 'container_id=abc', 'container_id=1e400', 'nope=1', 'since=2030-01-01&until=2029-01-01']) {
      const r = await alice.get(`/api/metrics?${q}`);
      expect(r.status, q).toBe(400);
      expect(r.body.error.message, q).toBeTruthy();
    }
    for (const q of ['step=61', 'step=0', 'step=60&since=1970-01-01']) expect((await alice.get(`/api/metrics/series?${q}`)).status, q).toBe(400);
    expect((await new Api(cp!.url).get('/api/metrics')).status).toBe(401);
    // dashboards join the proxies' route ids to app hostnames
    const prom = await (await fetch(`${cp!.url}/metrics`, { headers: { authorization: `Bearer ${cp!.metricsToken}` } })).text();
    expect(prom).toContain(`berth_cp_route_info{route="img-${imageId}",app_hostname="${HOST}",image_id="${imageId}"} 1`);
    expect(prom).toMatch(new RegExp(`berth_cp_app_instances\\{app_hostname="${HOST.replace(/\./g, '\\.')}",status="running"\\} 1`));
  });
});
