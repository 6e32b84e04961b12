/**
 * `/api/workloads` and the original platform's `/workload/*` paths on a real control plane (embedded
 * Postgres). The "proxy" the runs send through is a loopback server that records the Host of every
 * request, so the tests see exactly what a berth proxy would be asked for.
 */
import { readFile } from 'node:fs/promises';
import { createServer, type IncomingHttpHeaders, type Server } from 'node:http';
import { connect, type AddressInfo } from 'node:net';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startControlPlane } from '../../control-plane/app.js';
import { isSensitiveHeader } from '../../bench/workload/redact.js';
import { migrate } from '../../control-plane/db/migrate.js';
import { migrations } from '../../control-plane/db/migrations/index.js';
import { createPool } from '../../control-plane/db/pool.js';
import { streamLimits } from '../../control-plane/http/stream-limits.js';
import { workloadConfig } from '../../control-plane/workloads/config.js';
import { HEARTBEAT_S } from '../../control-plane/workloads/plugin.js';
import { INTERRUPTED_REASON, STALE_AFTER_S } from '../../control-plane/workloads/repo.js';
import { Api } from '../helpers/api.js';
import { insertReadyImage, startTestControlPlane, type TestControlPlane } from '../helpers/control-plane.js';
import { spawnBerth } from '../helpers/process.js';
import { tempDir } from '../helpers/tmp.js';

let t: TestControlPlane;
let proxy: Server;
let proxyUrl: string;
const seen: string[] = [];
/** the headers of requests that carried x-trace (the redaction test's) */
const withHeaders: IncomingHttpHeaders[] = [];
let a: Api;
let b: Api;
let anon: Api;

async function userId(api: Api): Promise<number> {
  const r = await api.get('/api/auth/me');
  return Number(r.body.user.id);
}

const waitDone = (api: Api, id: number, timeoutMs = 20_000): Promise<any> => api.waitWhile(`/api/workloads/${id}`, 'running', timeoutMs);

beforeAll(async () => {
  proxy = createServer((req, res) => {
    seen.push(req.headers.host ?? '');
    if (req.headers['x-trace'] !== undefined) withHeaders.push(req.headers);
    res.end('ok');
  });
  proxy.keepAliveTimeout = 60_000;
  await new Promise<void>((r) => proxy.listen(0, '127.0.0.1', r));
  proxyUrl = `http://127.0.0.1:${(proxy.address() as AddressInfo).port}`;
  // (heartbeats every 0.5 s instead of 5: the tests that wait for one are quicker; the bounds below stay HEARTBEAT_S)
  // (one user may take 1,500 of the 2,000 here: the total's test below needs one user's run past half of it)
  t = await startTestControlPlane({ workloads: { proxyUrl, maxRps: 2000, maxRpsPerUser: 1500, maxDurationSeconds: 120, maxRunningPerUser: 1, heartbeatMs: 500 } });
  anon = new Api(t.cp.url);
  a = await anon.signup('wl-a@example.com');
  b = await anon.signup('wl-b@example.com');
  await insertReadyImage(t.cp, await userId(a), 'shop.localhost');
  await insertReadyImage(t.cp, await userId(a), 'api.localhost');
  await insertReadyImage(t.cp, await userId(b), 'other.localhost');
});

afterAll(async () => {
  await t?.close();
  proxy?.closeAllConnections();
  await new Promise((r) => proxy?.close(r));
});

describe('/api/workloads', () => {
  it('runs 200 req/s for 3 s on an own app through the proxy: live metrics, SSE, final metrics, reports', async () => {
    const before = seen.length;
    const r = await a.post('/api/workloads', { app_hostname: 'Shop.Localhost', rps: 200, duration_seconds: 3 });
    expect(r.status, r.text).toBe(201);
    expect(r.body).toMatchObject({ status: 'running', config: { app_hostnames: ['shop.localhost'], pattern: 'constant', rps: 200, duration_seconds: 3, path: '/', method: 'GET', timeout_ms: 10_000 } });
    const id = r.body.id;

    // live: SSE progress once per second, then end
    const events: { event: string; data: any }[] = [];
    const res = await fetch(`${t.cp.url}/api/workloads/${id}/live`, { headers: { authorization: `Bearer ${a.token}` } });
    expect(res.headers.get('content-type')).toMatch(/text\/event-stream/);
    const text = await res.text();
    for (const block of text.split('\n\n')) {
      const ev = /^event: (.+)$/m.exec(block)?.[1];
      const data = /^data: (.+)$/m.exec(block)?.[1];
      if (ev && data) events.push({ event: ev, data: JSON.parse(data) });
    }
    const progress = events.filter((e) => e.event === 'progress');
    expect(progress.length).toBeGreaterThanOrEqual(2);
    expect(progress[0].data.point).toMatchObject({ t: expect.any(Number), target_rps: 200, achieved_rps: expect.any(Number) });
    expect(events.at(-1)).toMatchObject({ event: 'end', data: { status: 'completed' } });

    const done = await waitDone(a, id);
    expect(done.status).toBe('completed');
    const m = done.metrics;
    for (const k of ['total_requests', 'successful_requests', 'failed_requests', 'error_rate', 'requests_per_second', 'target_rps', 'avg_latency_ms',
      'min_latency_ms', 'max_latency_ms', 'p50_latency_ms', 'p90_latency_ms', 'p95_latency_ms', 'p99_latency_ms', 'p999_latency_ms',
      'status_code_distribution', 'errors', 'late_requests', 'dropped_requests', 'start_time', 'end_time', 'duration_seconds', 'app_hostnames', 'series']) {
      expect(m, k).toHaveProperty(k);
    }
    expect(Math.abs(m.total_requests - 600)).toBeLessThanOrEqual(18);
    expect(m.successful_requests).toBe(m.total_requests);
    expect(m.app_hostnames).toEqual(['shop.localhost']);
    expect(m.series[0]).toMatchObject({ t: 0, target_rps: 200, achieved_rps: expect.any(Number), p50_ms: expect.any(Number), p99_ms: expect.any(Number), errors: 0 });
    const hosts = seen.slice(before);
    expect(hosts.length).toBe(m.total_requests);
    expect(new Set(hosts)).toEqual(new Set(['shop.localhost']));

    const json = await a.get(`/api/workloads/${id}/report.json`);
    expect(json.status).toBe(200);
    expect(json.body.metrics.series.length).toBe(m.series.length);
    const html = await a.req('GET', `/api/workloads/${id}/report`);
    expect(html.status).toBe(200);
    expect(html.headers.get('content-type')).toMatch(/text\/html/);
    expect(html.headers.get('content-security-policy')).toContain("default-src 'none'");
    expect(html.text).toContain('data-chart="rate"');
    expect(html.text).toContain('shop.localhost');

    const list = await a.get('/api/workloads');
    expect(list.body.workloads[0]).toMatchObject({ id, status: 'completed' });
    expect(list.body.workloads[0].metrics.series).toBeUndefined();
  });

  it('sensitive request headers are sent as given but never stored or shown: "[redacted]" in every answer and report', async () => {
    const secrets = { Authorization: 'Bearer tenant-s3cret-1', Cookie: 'sid=tenant-s3cret-2', 'Proxy-Authorization': 'Basic tenant-s3cret-3', 'X-Api-Key': 'tenant-s3cret-4', 'x-session-token': 'tenant-s3cret-5' };
    const headers = { ...secrets, 'X-Trace': 'visible-1', Accept: 'text/plain' };
    const redacted = { Authorization: '[redacted]', Cookie: '[redacted]', 'Proxy-Authorization': '[redacted]', 'X-Api-Key': '[redacted]', 'x-session-token': '[redacted]', 'X-Trace': 'visible-1', Accept: 'text/plain' };
    const before = withHeaders.length;
    const r = await a.post('/api/workloads', { app_hostname: 'shop.localhost', rps: 20, duration_seconds: 2, headers });
    expect(r.status, r.text).toBe(201);
    expect(r.body.config.headers).toEqual(redacted);
    const id = r.body.id;
    // the live stream's start event
    const live = await fetch(`${t.cp.url}/api/workloads/${id}/live`, { headers: { authorization: `Bearer ${a.token}` } });
    const liveText = await live.text();
    expect(liveText).toContain('[redacted]');
    const done = await waitDone(a, id);
    expect(done.status).toBe('completed');
    // the app got the real values
    const got = withHeaders.slice(before);
    expect(got.length).toBeGreaterThan(20);
    expect(got[0]).toMatchObject({ authorization: secrets.Authorization, cookie: secrets.Cookie, 'proxy-authorization': secrets['Proxy-Authorization'], 'x-api-key': secrets['X-Api-Key'], 'x-session-token': secrets['x-session-token'], 'x-trace': 'visible-1' });
    // every answer that carries the config
    expect(done.config.headers).toEqual(redacted);
    // the list leaves the headers (and body) out: GET /api/workloads/:id has them
    const listed = (await a.get('/api/workloads')).body.workloads.find((w: { id: number }) => w.id === id);
    expect(listed.config).toMatchObject({ app_hostnames: ['shop.localhost'], rps: 20 });
    expect(listed.config.headers).toBeUndefined();
    expect((await a.get(`/api/workloads/${id}/report.json`)).body.config.headers).toEqual(redacted);
    expect((await a.get(`/workload/status/${id}`)).body.config.headers).toEqual(redacted);
    const texts = [liveText, (await a.get(`/api/workloads/${id}/report`)).text, JSON.stringify(done), (await a.get('/api/workloads')).text, (await a.get(`/workload/metrics/${id}`)).text];
    // and the database never had them
    const { rows: [row] } = await t.cp.db.query('SELECT config::text AS config FROM workloads WHERE id = $1', [id]);
    texts.push(row.config);
    for (const text of texts) expect(text).not.toMatch(/tenant-s3cret/);
    expect(JSON.parse(row.config).headers).toEqual(redacted);
  });

  it('several apps take turns; step stages are followed', async () => {
    const before = seen.length;
    const r = await a.post('/api/workloads', { app_hostnames: ['shop.localhost', 'api.localhost'], pattern: 'step', rps: 50, duration_seconds: 2,
      stages: [{ duration_seconds: 1, rps: 50 }, { duration_seconds: 1, rps: 150 }], path: '/x?y=1', method: 'post', body: 'hi', headers: { 'x-test': '1' } });
    expect(r.status, r.text).toBe(201);
    const done = await waitDone(a, r.body.id);
    expect(done.status).toBe('completed');
    expect(Math.abs(done.metrics.total_requests - 200)).toBeLessThanOrEqual(6);
    const hosts = seen.slice(before);
    expect(hosts.filter((h) => h === 'shop.localhost').length).toBeGreaterThan(90);
    expect(hosts.filter((h) => h === 'api.localhost').length).toBeGreaterThan(90);
    expect(done.metrics.series.slice(0, 2).map((p: any) => p.target_rps)).toEqual([50, 150]);
  });

  it('stop: 200 with the run stopped and its metrics so far; again 409', async () => {
    const r = await a.post('/api/workloads', { app_hostname: 'shop.localhost', rps: 100, duration_seconds: 60 });
    expect(r.status).toBe(201);
    // (its live metrics past 100 requests first: a worker thread takes a while to start on a busy machine)
    const deadline = Date.now() + 15_000;
    while (((await a.get(`/api/workloads/${r.body.id}`)).body.metrics?.total_requests ?? 0) <= 100 && Date.now() < deadline) {
      await new Promise((res) => setTimeout(res, 100));
    }
    const s = await a.post(`/api/workloads/${r.body.id}/stop`);
    expect(s.status, s.text).toBe(200);
    expect(s.body.status).toBe('stopped');
    expect(s.body.metrics.total_requests).toBeGreaterThan(100);
    expect(s.body.metrics.total_requests).toBeLessThan(400);
    const again = await a.post(`/api/workloads/${r.body.id}/stop`);
    expect(again.status).toBe(409);
    expect(again.body.error.code).toBe('not_running');
  });

  it('a user keeps their last 100 finished runs: older ones go as new ones start', async () => {
    const { KEEP_RUNS } = await import('../../control-plane/workloads/repo.js');
    const uid = await userId(b);
    const first = await b.post('/api/workloads', { app_hostname: 'other.localhost', rps: 20, duration_seconds: 1 });
    expect(first.status, first.text).toBe(201);
    await waitDone(b, first.body.id);
    await t.cp.db.query(
      `INSERT INTO workloads (user_id, status, config, metrics) SELECT user_id, 'completed', config, metrics FROM workloads, generate_series(1, $2) WHERE id = $1`,
      [first.body.id, KEEP_RUNS + 5]);
    const r = await b.post('/api/workloads', { app_hostname: 'other.localhost', rps: 20, duration_seconds: 1 });
    expect(r.status, r.text).toBe(201);
    await waitDone(b, r.body.id);
    const { rows: [{ n }] } = await t.cp.db.query<{ n: number }>(`SELECT count(*)::int AS n FROM workloads WHERE user_id = $1 AND status <> 'running'`, [uid]);
    expect(n).toBeLessThanOrEqual(KEEP_RUNS + 1);
    expect((await b.get(`/api/workloads/${r.body.id}`)).status).toBe(200);
  });

  it('limits: one running run per user (429), max rate and duration (400), with messages', async () => {
    const r = await a.post('/api/workloads', { app_hostname: 'shop.localhost', rps: 20, duration_seconds: 30 });
    expect(r.status).toBe(201);
    try {
      const second = await a.post('/api/workloads', { app_hostname: 'api.localhost', rps: 20, duration_seconds: 5 });
      expect(second.status).toBe(429);
      expect(second.body.error).toMatchObject({ code: 'too_many_workloads', message: expect.stringMatching(/running/) });
      expect(second.headers.get('retry-after')).toBeTruthy();
      // another user is not affected by a's run
      const other = await b.post('/api/workloads', { app_hostname: 'other.localhost', rps: 10, duration_seconds: 1 });
      expect(other.status, other.text).toBe(201);
      await waitDone(b, other.body.id);
    } finally {
      await a.post(`/api/workloads/${r.body.id}/stop`);
    }
    const fast = await a.post('/api/workloads', { app_hostname: 'shop.localhost', rps: 5000, duration_seconds: 5 });
    expect(fast.status).toBe(400);
    expect(fast.body.error).toMatchObject({ code: 'workload_limit', message: expect.stringMatching(/2000 req\/s/) });
    const spike = await a.post('/api/workloads', { app_hostname: 'shop.localhost', pattern: 'spike', rps: 1000, duration_seconds: 5 });
    expect(spike.status).toBe(400);
    expect(spike.body.error.message).toMatch(/peaks at 5000/);
    const long = await a.post('/api/workloads', { app_hostname: 'shop.localhost', rps: 10, duration_seconds: 600 });
    expect(long.status).toBe(400);
    expect(long.body.error.message).toMatch(/120 s/);
  });

  it('all runs together send at most BERTH_WORKLOAD_MAX_RPS_TOTAL through the shared proxy (default: the per-run maximum): 429 past it', async () => {
    const big = await a.post('/api/workloads', { app_hostname: 'shop.localhost', rps: 1200, duration_seconds: 30 });
    expect(big.status, big.text).toBe(201);
    try {
      const over = await b.post('/api/workloads', { app_hostname: 'other.localhost', rps: 1000, duration_seconds: 1 });
      expect(over.status, over.text).toBe(429);
      expect(over.body.error).toMatchObject({ code: 'too_many_workloads', message: expect.stringMatching(/already send up to 1200 req\/s; with this one's 1000 .* \(2000 req\/s, BERTH_WORKLOAD_MAX_RPS_TOTAL\)/) });
      expect(over.headers.get('retry-after')).toBeTruthy();
      const fits = await b.post('/api/workloads', { app_hostname: 'other.localhost', rps: 500, duration_seconds: 1 });
      expect(fits.status, fits.text).toBe(201);
      await waitDone(b, fits.body.id);
    } finally {
      await a.post(`/api/workloads/${big.body.id}/stop`);
    }
    // the stopped run's rate is free again
    const after = await b.post('/api/workloads', { app_hostname: 'other.localhost', rps: 1000, duration_seconds: 1 });
    expect(after.status, after.text).toBe(201);
    await waitDone(b, after.body.id);
  });

  it.each([
    [{ rps: 10, duration_seconds: 1 }, /app_hostname/],
    [{ app_hostname: 'shop.localhost', duration_seconds: 1 }, /rps is required/],
    [{ app_hostname: 'shop.localhost', rps: 10 }, /duration_seconds is required/],
    [{ app_hostname: 'shop.localhost', rps: 0, duration_seconds: 1 }, /rps/],
    [{ app_hostname: 'shop.localhost', rps: 60_000, duration_seconds: 1 }, /rps/],
    [{ app_hostname: 'shop.localhost', rps: 'lots', duration_seconds: 1 }, /rps/],
    [{ app_hostname: 'shop.localhost', rps: 10, duration_seconds: 1e400 }, /./],
    [{ app_hostname: 'shop.localhost', rps: 10, duration_seconds: 4000 }, /duration_seconds/],
    [{ app_hostname: 'shop.localhost', rps: 10, duration_seconds: 1, pattern: 'sawtooth' }, /pattern/],
    [{ app_hostname: 'shop.localhost', rps: 10, duration_seconds: 1, pattern: 'ramp' }, /ramp_to_rps/],
    [{ app_hostname: 'shop.localhost', rps: 10, duration_seconds: 1, stages: [{ duration_seconds: 1, rps: 5 }] }, /only used by the step/],
    [{ app_hostname: 'shop.localhost', rps: 10, duration_seconds: 1, headers: { 'x-a': 'b\r\nx-evil: 1' } }, /control characters/],
    [{ app_hostname: 'shop.localhost', rps: 10, duration_seconds: 1, headers: { host: 'evil.localhost' } }, /set by the load generator/],
    [{ app_hostname: 'shop.localhost', rps: 10, duration_seconds: 1, path: 'no-slash' }, /path/],
    [{ app_hostname: 'shop.localhost', rps: 10, duration_seconds: 1, method: 'GE T' }, /method/],
    [{ app_hostname: 'shop.localhost', rps: 10, duration_seconds: 1, bogus: 1 }, /unknown field "bogus"/],
    [{ app_hostname: '', rps: 10, duration_seconds: 1 }, /app_hostname/],
    // each header within its 8 KiB, the head over 16 KiB (a run stores its config: a list of 1,000 runs stays small)
    [{ app_hostname: 'shop.localhost', rps: 10, duration_seconds: 1, headers: { 'x-a': 'a'.repeat(8000), 'x-b': 'b'.repeat(8000), 'x-c': 'c'.repeat(8000) } }, /request head .* bytes; at most 16384/],
  ])('bad input %j is 400 with a message', async (body, message) => {
    const r = await a.post('/api/workloads', body);
    expect(r.status, r.text).toBe(400);
    expect(r.body.error.message).toMatch(message);
  });

  it('one user\'s runs together peak at most BERTH_WORKLOAD_MAX_RPS_PER_USER (default: half the total): past it alone 400, with their others 429; another user still starts beside them', async () => {
    // defaults: half the total, all of a total of 1, never more than the total; the variable
    expect(workloadConfig({ proxyUrl, maxRps: 2000 }).maxRpsPerUser).toBe(1000);
    expect(workloadConfig({ proxyUrl, maxRps: 2000, maxRpsTotal: 1 }).maxRpsPerUser).toBe(1);
    expect(workloadConfig({ proxyUrl, maxRps: 2000, maxRpsTotal: 3000, maxRpsPerUser: 5000 }).maxRpsPerUser).toBe(3000);
    process.env.BERTH_WORKLOAD_MAX_RPS_PER_USER = '700';
    try {
      expect(workloadConfig({ proxyUrl, maxRps: 2000 }).maxRpsPerUser).toBe(700);
      process.env.BERTH_WORKLOAD_MAX_RPS_PER_USER = 'lots';
      expect(() => workloadConfig({ proxyUrl, maxRps: 2000 })).toThrow(/BERTH_WORKLOAD_MAX_RPS_PER_USER/);
    } finally {
      delete process.env.BERTH_WORKLOAD_MAX_RPS_PER_USER;
    }
    const own = await startTestControlPlane({ workloads: { proxyUrl, maxRps: 300, maxRpsTotal: 400, maxRunningPerUser: 3, maxDurationSeconds: 120, heartbeatMs: 500 } });
    const started: [Api, number][] = [];
    try {
      const o = new Api(own.cp.url);
      const c = await o.signup('wl-share-c@example.com');
      const d = await o.signup('wl-share-d@example.com');
      await insertReadyImage(own.cp, await userId(c), 'share-c.localhost');
      await insertReadyImage(own.cp, await userId(d), 'share-d.localhost');
      const run = async (api: Api, host: string, rps: number) => {
        const r = await api.post('/api/workloads', { app_hostname: host, rps, duration_seconds: 60 });
        if (r.status === 201) started.push([api, r.body.id]);
        return r;
      };
      const alone = await run(c, 'share-c.localhost', 250);
      expect(alone.status, alone.text).toBe(400);
      expect(alone.body.error).toMatchObject({ code: 'workload_limit', message: expect.stringMatching(/peaks at 250 req\/s; .* at most 200 req\/s \(BERTH_WORKLOAD_MAX_RPS_PER_USER\)/) });
      expect((await run(c, 'share-c.localhost', 150)).status).toBe(201);
      const more = await run(c, 'share-c.localhost', 60);
      expect(more.status, more.text).toBe(429);
      expect(more.body.error).toMatchObject({ code: 'too_many_workloads', message: expect.stringMatching(/already send up to 150 req\/s; with this one's 60 .* \(200 req\/s, BERTH_WORKLOAD_MAX_RPS_PER_USER\)/) });
      expect(more.headers.get('retry-after')).toBeTruthy();
      expect((await run(c, 'share-c.localhost', 50)).status).toBe(201);
      // the other half is still there for someone else
      const beside = await run(d, 'share-d.localhost', 190);
      expect(beside.status, beside.text).toBe(201);
    } finally {
      for (const [api, id] of started) await api.post(`/api/workloads/${id}/stop`);
      await own.close();
    }
  });

  it('a live view whose client leaves while the run is looked up frees its stream slot (20 such would lock the user out of logs)', async () => {
    const id = (await a.get('/api/workloads')).body.workloads[0].id;
    const aId = await userId(a);
    const limits = streamLimits(t.cp.app);
    const { port } = new URL(t.cp.url);
    // each client sends the request and resets the connection a moment later: some before the
    // handler starts, some while it awaits the database, some after it answers
    await Promise.all(Array.from({ length: 40 }, (_, i) => new Promise<void>((resolve) => {
      const s = connect(Number(port), '127.0.0.1', () => {
        s.write(`GET /api/workloads/${id}/live HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer ${a.token}\r\n\r\n`);
        setTimeout(() => { s.resetAndDestroy(); resolve(); }, i % 8);
      });
      s.on('error', () => resolve());
    })));
    // (the server handles them a little later; a slot it leaked stays taken for good)
    await new Promise((r) => setTimeout(r, 1000));
    const t0 = Date.now();
    while (limits.count(aId) > 0 && Date.now() - t0 < 5000) await new Promise((r) => setTimeout(r, 50));
    expect(limits.count(aId)).toBe(0);
    const live = await fetch(`${t.cp.url}/api/workloads/${id}/live`, { headers: { authorization: `Bearer ${a.token}` } });
    expect(live.status).toBe(200);
    await live.text();
  });

  it('malformed JSON and a wrong content type are 4xx, not 500', async () => {
    const r = await a.req('POST', '/api/workloads', { body: '{"app_hostname":', headers: { 'content-type': 'application/json' } });
    expect(r.status).toBe(400);
    const t2 = await a.req('POST', '/api/workloads', { body: 'x', headers: { 'content-type': 'text/plain' } });
    expect([400, 415]).toContain(t2.status);
    expect(t2.body.error.code).toBeTruthy();
  });

  it('isolation: another user\'s app or run is 404; unauthenticated is 401', async () => {
    const r = await b.post('/api/workloads', { app_hostname: 'shop.localhost', rps: 10, duration_seconds: 1 });
    expect(r.status).toBe(404);
    expect(r.body.error.message).toMatch(/shop\.localhost/);
    const unknown = await a.post('/api/workloads', { app_hostname: 'nobody.localhost', rps: 10, duration_seconds: 1 });
    expect(unknown.status).toBe(404);
    const mine = (await a.get('/api/workloads')).body.workloads[0].id;
    for (const p of [`/api/workloads/${mine}`, `/api/workloads/${mine}/report`, `/api/workloads/${mine}/report.json`, `/api/workloads/${mine}/live`]) {
      expect((await b.get(p)).status, p).toBe(404);
    }
    expect((await b.post(`/api/workloads/${mine}/stop`)).status).toBe(404);
    expect((await b.get('/api/workloads')).body.workloads.every((w: any) => w.config.app_hostnames[0] === 'other.localhost')).toBe(true);
    expect((await anon.get('/api/workloads')).status).toBe(401);
    expect((await anon.post('/api/workloads', { app_hostname: 'shop.localhost', rps: 1, duration_seconds: 1 })).status).toBe(401);
    expect((await a.get('/api/workloads/abc')).status).toBe(400);
    expect((await a.get('/api/workloads/99999999')).status).toBe(404);
  });

  it('cannot be aimed at another app: no /apps/ paths, no tag host that is not a tag of yours, connections bounded by the rate', async () => {
    // the proxy routes /apps/{host}/… by the path: the load (and its bill) would land on other.localhost
    const viaPath = await b.post('/api/workloads', { app_hostname: 'other.localhost', path: '/apps/shop.localhost/x', rps: 10, duration_seconds: 1 });
    expect(viaPath.status).toBe(400);
    expect(viaPath.body.error.message).toMatch(/\/apps\//);
    expect((await b.post('/api/workloads', { app_hostname: 'other.localhost', path: '/APPS/shop.localhost/', rps: 10, duration_seconds: 1 })).status).toBe(400);
    // `x---other.localhost` is only b's while b has a revision tagged x
    const tag = await b.post('/api/workloads', { app_hostname: 'x---other.localhost', rps: 10, duration_seconds: 1 });
    expect(tag.status).toBe(404);
    // a trickle may not hold thousands of sockets on the shared proxy
    const conns = await b.post('/api/workloads', { app_hostname: 'other.localhost', rps: 1, duration_seconds: 1, connections: 5000 });
    expect(conns.status).toBe(400);
    expect(conns.body.error.message).toMatch(/connections 5000/);
  });
});

describe('berth load --remote', () => {
  it('runs on the control plane, follows it live, writes JSON and the server\'s report; isolation and auth hold', async () => {
    const dir = await tempDir();
    try {
      const json = join(dir.dir, 'r.json');
      const html = join(dir.dir, 'r.html');
      const env = { BERTH_API: t.cp.url, BERTH_TOKEN: a.token!, BERTH_CONFIG_DIR: dir.dir };
      const p = spawnBerth(['load', '--remote', '--app', 'shop.localhost', '--rps', '100', '--duration', '2s', '--json', json, '--html', html, '--fail-on', 'error_rate>0%',
        '-H', 'Authorization: Bearer remote-s3cret'], env);
      const { code } = await p.exited;
      expect(code, p.output()).toBe(0);
      expect(p.output()).toMatch(/workload #\d+ started on/);
      const { config, metrics } = JSON.parse(await readFile(json, 'utf8'));
      expect(config).toMatchObject({ app_hostnames: ['shop.localhost'], status: 'completed', headers: { Authorization: '[redacted]' } });
      expect(await readFile(json, 'utf8')).not.toContain('remote-s3cret');
      expect(await readFile(html, 'utf8')).not.toContain('remote-s3cret');
      expect(Math.abs(metrics.total_requests - 200)).toBeLessThanOrEqual(6);
      expect(await readFile(html, 'utf8')).toContain('berth workload #');
      // berth workloads: the list, one run, its report; --stop on a finished run is the API's 409
      const list = spawnBerth(['workloads'], env);
      expect((await list.exited).code, list.output()).toBe(0);
      expect(list.output()).toMatch(new RegExp(`^${config.id}\\s+completed\\s+shop\\.localhost\\s+constant 100/s 2s`, 'm'));
      const report = join(dir.dir, 'w.html');
      const one = spawnBerth(['workloads', String(config.id), '--report', report], env);
      expect((await one.exited).code, one.output()).toBe(0);
      expect(one.output()).toMatch(/latency\s+p50 /);
      expect(await readFile(report, 'utf8')).toContain('data-chart="rate"');
      const stopDone = spawnBerth(['workloads', String(config.id), '--stop'], env);
      expect((await stopDone.exited).code).toBe(1);
      expect(stopDone.output()).toMatch(/not running/);
      const notMine = spawnBerth(['workloads', String(config.id)], { ...env, BERTH_TOKEN: b.token! });
      expect((await notMine.exited).code).toBe(1);
      expect((await spawnBerth(['workloads', 'abc'], env).exited).code).toBe(2);
      // b does not own shop.localhost: the API's 404, exit 1
      const other = spawnBerth(['load', '--remote', '--app', 'shop.localhost', '--rps', '10', '--duration', '1s'], { ...env, BERTH_TOKEN: b.token! });
      expect((await other.exited).code).toBe(1);
      expect(other.output()).toMatch(/app shop\.localhost not found/);
      // no credentials at all: exit 3 (not logged in)
      const anonRun = spawnBerth(['load', '--remote', '--app', 'shop.localhost', '--rps', '10', '--duration', '1s'], { BERTH_API: t.cp.url, BERTH_TOKEN: '', BERTH_CONFIG_DIR: dir.dir });
      expect((await anonRun.exited).code, anonRun.output()).toBe(3);
      // --remote needs --app
      const url = spawnBerth(['load', '--remote', '--url', 'http://127.0.0.1:1/', '--rps', '10'], env);
      expect((await url.exited).code).toBe(2);
    } finally {
      await dir.cleanup();
    }
  });
});

describe('/workload/* (the original platform\'s paths)', () => {
  it('available-services, start, status, metrics, list, stop', async () => {
    const svc = await a.get('/workload/available-services');
    expect(svc.status).toBe(200);
    expect(svc.body.services.map((s: any) => s.app_hostname)).toEqual(['api.localhost', 'shop.localhost']);
    const start = await a.post('/workload/start', { app_hostname: 'shop.localhost', requests_per_second: 50, duration: 30 });
    expect(start.status, start.text).toBe(200);
    const id = start.body.test_id;
    expect(start.body.status).toBe('running');
    try {
      // live metrics come with the run's first progress report (about a second; later on a loaded machine)
      let st = await a.get(`/workload/status/${id}`);
      for (const until = Date.now() + 15_000; st.body.metrics === null && Date.now() < until;) {
        await new Promise((res) => setTimeout(res, 200));
        st = await a.get(`/workload/status/${id}`);
      }
      expect(st.body).toMatchObject({ test_id: id, status: 'running' });
      expect(st.body.metrics.total_requests).toBeGreaterThan(0);
      const list = await a.get('/workload/list');
      expect(list.body.tests[0]).toMatchObject({ test_id: id, status: 'running', pattern: 'constant' });
    } finally {
      // (stopped whatever happened above: a run left going would hold the user's only workload slot)
      const stop = await a.post(`/workload/stop/${id}`);
      expect(stop.body).toMatchObject({ test_id: id, status: 'stopped' });
    }
    const m = await a.get(`/workload/metrics/${id}`);
    expect(m.body.metrics.series.length).toBeGreaterThanOrEqual(1);
    expect((await b.get(`/workload/status/${id}`)).status).toBe(404);
    expect((await anon.get('/workload/list')).status).toBe(401);
    expect((await b.post('/workload/start', { app_hostname: 'shop.localhost', requests_per_second: 5, duration: 1 })).status).toBe(404);
  });
});

describe('workload headers stored before redaction', () => {
  it('are not shown by the API, and migration 013 replaces them in the rows (same rule as bench/workload/redact.ts)', async () => {
    const names = ['Authorization', 'proxy-authorization', 'COOKIE', 'Set-Cookie', 'X-Api-Key', 'x-auth-token', 'X-Client-Secret', 'x-csrf-token', 'X-Session-Id', 'X-Password', 'x-credentials',
      'Accept', 'X-Trace', 'User-Agent', 'Content-Type', 'x-request-id'];
    const headers = Object.fromEntries(names.map((n, i) => [n, `old-value-${i}`]));
    const expected = Object.fromEntries(names.map((n, i) => [n, isSensitiveHeader(n) ? '[redacted]' : `old-value-${i}`]));
    expect(Object.values(expected).filter((v) => v === '[redacted]').length).toBe(11);
    // as a control plane before this change stored it
    const config = JSON.stringify({ app_hostnames: ['shop.localhost'], pattern: 'constant', rps: 1, duration_seconds: 1, path: '/', method: 'GET', timeout_ms: 1000, headers });
    const { rows: [w] } = await t.cp.db.query(
      `INSERT INTO workloads (user_id, status, config, finished_at) VALUES ($1, 'completed', $2, now()) RETURNING id`, [await userId(a), config]);
    expect((await a.get(`/api/workloads/${w.id}`)).body.config.headers).toEqual(expected);
    expect((await a.get(`/api/workloads/${w.id}/report`)).text).not.toMatch(/old-value-(0|1|2|3|4|5|6|7|8|9|10)\b/);

    const db = createPool(await t.pg.createDatabase({ empty: true }), 2);
    try {
      await migrate(db, migrations.filter((m) => m.version <= 12));
      const { rows: [u] } = await db.query(`INSERT INTO users (email, password_hash) VALUES ('old@example.com', 'x') RETURNING id`);
      const { rows: [old] } = await db.query(`INSERT INTO workloads (user_id, status, config) VALUES ($1, 'completed', $2) RETURNING id`, [u.id, config]);
      const { rows: [none] } = await db.query(`INSERT INTO workloads (user_id, status, config) VALUES ($1, 'completed', '{"app_hostnames":["x"],"headers":{}}') RETURNING id`, [u.id]);
      const { rows: [bare] } = await db.query(`INSERT INTO workloads (user_id, status, config) VALUES ($1, 'completed', '{"app_hostnames":["x"]}') RETURNING id`, [u.id]);
      expect(await migrate(db)).toContain(13);
      const get = async (id: number) => (await db.query('SELECT config FROM workloads WHERE id = $1', [id])).rows[0].config;
      expect((await get(old.id)).headers).toEqual(expected);
      expect(await get(old.id)).toEqual({ ...JSON.parse(config), headers: expected });
      expect(await get(none.id)).toEqual({ app_hostnames: ['x'], headers: {} });
      expect(await get(bare.id)).toEqual({ app_hostnames: ['x'] });
    } finally {
      await db.end();
    }
  });
});

describe('persistence', () => {
  it('a run cut off by a shutdown ends failed with the reason and its metrics so far; a run left running is failed at the next start', async () => {
    const data = await tempDir();
    const cp = await startControlPlane({ port: 0, dataDir: data.dir, databaseUrl: t.cp.databaseUrl, quiet: true, workloads: { proxyUrl } });
    try {
      const api = await new Api(cp.url).signup('wl-c@example.com');
      await insertReadyImage(cp, await userId(api), 'c.localhost');
      const r = await api.post('/api/workloads', { app_hostname: 'c.localhost', rps: 50, duration_seconds: 60 });
      expect(r.status).toBe(201);
      await new Promise((res) => setTimeout(res, 1500));
      await cp.close();
      const { rows: [row] } = await t.cp.db.query('SELECT status, status_reason, metrics FROM workloads WHERE id = $1', [r.body.id]);
      expect(row.status).toBe('failed');
      expect(row.status_reason).toMatch(/shut down/);
      expect(row.metrics.total_requests).toBeGreaterThan(30);
      // as a control plane killed mid-run would leave it
      const { rows: [left] } = await t.cp.db.query(
        `INSERT INTO workloads (user_id, status, config) VALUES ($1, 'running', '{"app_hostnames":["c.localhost"]}') RETURNING id`, [await userId(a)]);
      const cp2 = await startControlPlane({ port: 0, dataDir: data.dir, databaseUrl: t.cp.databaseUrl, quiet: true, workloads: { proxyUrl } });
      await cp2.close();
      const { rows: [after] } = await t.cp.db.query('SELECT status, status_reason FROM workloads WHERE id = $1', [left.id]);
      expect(after).toEqual({ status: 'failed', status_reason: INTERRUPTED_REASON });
    } finally {
      await cp.close().catch(() => {});
      await data.cleanup();
    }
  });

  it('two control planes on one database: one starting leaves the runs the other is running alone, and fails only runs whose control plane stopped heartbeating', async () => {
    const d = await anon.signup('wl-d@example.com');
    const dId = await userId(d);
    // t runs a's workload
    const r = await a.post('/api/workloads', { app_hostname: 'shop.localhost', rps: 20, duration_seconds: 4 });
    expect(r.status, r.text).toBe(201);
    const { rows: [mine] } = await t.cp.db.query('SELECT runner, heartbeat_at FROM workloads WHERE id = $1', [r.body.id]);
    expect(mine.runner).toEqual(expect.any(String));
    expect(mine.heartbeat_at).not.toBeNull();
    // rows of other control planes: one alive (heartbeat now), one that was killed a minute ago, one from before runners were recorded
    const other = async (runner: string | null, heartbeatAgo: string | null): Promise<number> => {
      const { rows: [w] } = await t.cp.db.query(
        `INSERT INTO workloads (user_id, status, config, runner, heartbeat_at)
         VALUES ($1, 'running', '{"app_hostnames":["d.localhost"]}', $2, now() - $3::interval) RETURNING id`, [dId, runner, heartbeatAgo]);
      return Number(w.id);
    };
    const alive = await other('elsewhere/1/alive', '2 seconds');
    const killed = await other('elsewhere/2/killed', '60 seconds');
    const legacy = await other(null, null);
    const status = async (id: number) => (await t.cp.db.query('SELECT status, status_reason FROM workloads WHERE id = $1', [id])).rows[0];

    const data = await tempDir();
    const cp2 = await startControlPlane({ port: 0, dataDir: data.dir, databaseUrl: t.cp.databaseUrl, quiet: true, workloads: { proxyUrl, heartbeatMs: 500 } });
    try {
      expect(await status(r.body.id)).toEqual({ status: 'running', status_reason: null });
      expect(await status(alive)).toEqual({ status: 'running', status_reason: null });
      expect(await status(killed)).toEqual({ status: 'failed', status_reason: INTERRUPTED_REASON });
      expect(await status(legacy)).toEqual({ status: 'failed', status_reason: INTERRUPTED_REASON });
      // t ends its run normally
      const done = await waitDone(a, r.body.id);
      expect(done.status).toBe('completed');
      // while both run: a run whose control plane stops heartbeating is failed by a sweep (every HEARTBEAT_S) within seconds
      await t.cp.db.query(`UPDATE workloads SET heartbeat_at = now() - make_interval(secs => $2) WHERE id = $1`, [alive, STALE_AFTER_S + 1]);
      const deadline = Date.now() + (HEARTBEAT_S + 3) * 1000;
      while ((await status(alive)).status === 'running' && Date.now() < deadline) await new Promise((res) => setTimeout(res, 200));
      expect(await status(alive)).toEqual({ status: 'failed', status_reason: INTERRUPTED_REASON });
    } finally {
      await cp2.close().catch(() => {});
      await data.cleanup();
    }
  }, 40_000);

  it('a run another control plane ended (its heartbeats were late) is stopped here at the next heartbeat', async () => {
    const r = await a.post('/api/workloads', { app_hostname: 'shop.localhost', rps: 20, duration_seconds: 60 });
    expect(r.status, r.text).toBe(201);
    const id = r.body.id;
    const sleep = (ms: number) => new Promise((res) => setTimeout(res, ms));
    const sentIn = async (ms: number) => { const n = seen.length; await sleep(ms); return seen.length - n; };
    expect(await sentIn(1000)).toBeGreaterThan(5);
    // as another control plane's sweep would leave it
    await t.cp.db.query(`UPDATE workloads SET status = 'failed', status_reason = $2, finished_at = now() WHERE id = $1`, [id, INTERRUPTED_REASON]);
    // the load stops within a heartbeat (and the ~2 s a stopping run gives its requests)
    const deadline = Date.now() + (HEARTBEAT_S + 8) * 1000;
    while ((await sentIn(1000)) > 0 && Date.now() < deadline);
    expect(await sentIn(1500)).toBe(0);
    const { rows: [row] } = await t.cp.db.query('SELECT status, status_reason FROM workloads WHERE id = $1', [id]);
    expect(row).toEqual({ status: 'failed', status_reason: INTERRUPTED_REASON });
    // and a's next run may start (the per-user limit counts it no more)
    const next = await a.post('/api/workloads', { app_hostname: 'shop.localhost', rps: 5, duration_seconds: 1 });
    expect(next.status, next.text).toBe(201);
    expect((await waitDone(a, next.body.id)).status).toBe('completed');
  }, 30_000);

  it('a run whose app is deleted stops at the next heartbeat (another user may claim the name, and would get the load and its bill)', async () => {
    await insertReadyImage(t.cp, await userId(a), 'doomed.localhost');
    const r = await a.post('/api/workloads', { app_hostname: 'doomed.localhost', rps: 20, duration_seconds: 60 });
    expect(r.status, r.text).toBe(201);
    const sleep = (ms: number) => new Promise((res) => setTimeout(res, ms));
    const sentIn = async (ms: number) => { const n = seen.filter((h) => h === 'doomed.localhost').length; await sleep(ms); return seen.filter((h) => h === 'doomed.localhost').length - n; };
    expect(await sentIn(1000)).toBeGreaterThan(5);
    const del = await a.del('/api/apps/doomed.localhost');
    expect(del.status, del.text).toBe(204);
    const done = await waitDone(a, r.body.id, (HEARTBEAT_S + 8) * 1000);
    expect(done).toMatchObject({ status: 'stopped', status_reason: 'the app doomed.localhost was deleted (or is no longer yours) during the run' });
    expect(await sentIn(1500)).toBe(0);
  }, 30_000);
});
