import { statSync, readFileSync } from 'node:fs';
import { connect } from 'node:net';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Api } from '../helpers/api.js';
import { insertReadyImage, startTestControlPlane, type TestControlPlane } from '../helpers/control-plane.js';
import { csvField } from '../../control-plane/billing/plugin.js';
import { METER_BUCKET_COUNT } from '../../shared/metering/schema.js';

/**
 * The metering and billing routes against a tenant and an anonymous client: what `/metrics`
 * shows and to whom, what an unauthenticated proxy route costs the server, how much history one
 * request may load, what ingest refuses, and what an invoice CSV may start a cell with.
 */
const PROXY_TOKEN = 'bpt_metering-security-token';
let t: TestControlPlane;
let anon: Api;
let alice: Api;
let aliceId: number;
let imageId: number;

beforeAll(async () => {
  t = await startTestControlPlane({ seedDefaultUser: false, proxyToken: PROXY_TOKEN, dockerHost: 'unix:///nonexistent/docker.sock', autoscale: { enabled: false } });
  anon = new Api(t.cp.url);
  alice = await anon.signup('alice-metering@example.com');
  aliceId = (await alice.get('/api/auth/me')).body.user.id;
  imageId = await insertReadyImage(t.cp, aliceId, 'secret-app.example.com');
});

afterAll(async () => {
  await t?.close();
});

describe('GET /metrics on the control plane', () => {
  it('needs the metrics token: anonymous, a user login and a wrong token are 401; health probes stay open', async () => {
    for (const token of [undefined, alice.token, PROXY_TOKEN, 'bmt_wrong']) {
      const r = await anon.req('GET', '/metrics', { token: token ?? null });
      expect(r.status, String(token)).toBe(401);
      expect(r.text).not.toContain('secret-app.example.com');
    }
    expect((await anon.get('/healthz')).status).toBe(200);
    expect((await anon.get('/readyz')).status).toBe(200);
    const ok = await anon.req('GET', '/metrics', { token: t.cp.metricsToken });
    expect(ok.status).toBe(200);
    expect(ok.text).toContain(`berth_cp_route_info{route="img-${imageId}",app_hostname="secret-app.example.com",image_id="${imageId}"} 1`);
  });

  it('the token is generated once into <data-dir>/metrics-token, mode 0600', () => {
    const file = join(t.cp.config.dataDir, 'metrics-token');
    expect(t.cp.metricsTokenFile).toBe(file);
    expect(readFileSync(file, 'utf8').trim()).toBe(t.cp.metricsToken);
    expect(statSync(file).mode & 0o777).toBe(0o600);
  });

  it('per-app gauges are collected at most once per 15 s, however often it is scraped', async () => {
    const scrape = async () => (await anon.req('GET', '/metrics', { token: t.cp.metricsToken })).text;
    await scrape();
    const later = await insertReadyImage(t.cp, aliceId, 'later-app.example.com');
    for (let i = 0; i < 5; i++) expect(await scrape()).not.toContain(`route="img-${later}"`);
  });
});

/**
 * Send the head of a request announcing `length` body bytes and only the first 64 KiB of it;
 * resolve with what the server answered before the client sent the rest (or '' after `waitMs`).
 */
function partialUpload(port: number, method: string, path: string, length: number, waitMs = 3000): Promise<{ head: string; closed: boolean }> {
  return new Promise((resolve) => {
    const s = connect(port, '127.0.0.1');
    let text = '';
    let closed = false;
    const done = () => { clearTimeout(timer); s.destroy(); resolve({ head: text, closed }); };
    const timer = setTimeout(done, waitMs);
    s.on('data', (c: Buffer) => { text += c.toString('latin1'); if (text.includes('\r\n\r\n') && /content-length: (\d+)/i.test(text)) setTimeout(done, 200); });
    s.on('end', () => { closed = true; });
    s.on('error', () => {});
    s.write(`${method} ${path} HTTP/1.1\r\nhost: 127.0.0.1\r\ncontent-type: application/json\r\ncontent-length: ${length}\r\n\r\n`);
    s.write(Buffer.alloc(64 * 1024, 0x20));
  });
}

describe('proxy-token routes refuse an anonymous request before reading its body', () => {
  const port = () => Number(new URL(t.cp.url).port);
  // each body within the route's bodyLimit (otherwise 413 would answer early anyway)
  for (const [method, path, mib] of [['POST', '/v1/proxy/metering', 30], ['POST', '/v1/proxy/report', 15], ['POST', '/v1/routes/img-1/activate', 0.9]] as const) {
    it(`${method} ${path}: a ${mib} MiB body without the token is 401 before the client sent it`, async () => {
      const t0 = Date.now();
      const r = await partialUpload(port(), method, path, Math.round(mib * 1024 * 1024));
      expect(r.head).toMatch(/^HTTP\/1\.1 401 /);
      expect(r.head).toMatch(/connection: close/i);
      expect(Date.now() - t0).toBeLessThan(2000);
    });
  }

  it('GET /v1/routes/watch without the token is 401; with it the stream opens', async () => {
    expect((await anon.get('/v1/routes/watch')).status).toBe(401);
    const ac = new AbortController();
    const r = await fetch(`${t.cp.url}/v1/routes/watch`, { headers: { authorization: `Bearer ${PROXY_TOKEN}` }, signal: ac.signal });
    expect(r.status).toBe(200);
    ac.abort();
  });

  it('with the token the upload is read and applied as before', async () => {
    const r = await anon.req('POST', '/v1/proxy/metering', { token: PROXY_TOKEN, json: { stream: 'sec-ok', batches: [] } });
    expect(r.status).toBe(200);
    expect(r.body).toMatchObject({ stream: 'sec-ok', acked: 0 });
  });
});

describe('invoice CSV', () => {
  it('a cell a spreadsheet would run as a formula gets a leading quote (OWASP CSV injection)', async () => {
    expect(csvField('=HYPERLINK("http://evil")')).toBe(`"'=HYPERLINK(""http://evil"")"`);
    for (const c of ['+1', '-1+2', '@SUM(A1)', '\tx', '\rx']) expect(csvField(c).startsWith(`"'`), JSON.stringify(c)).toBe(true);
    expect(csvField('hello.example.com')).toBe('hello.example.com');
    expect(csvField(12345)).toBe('12345');
    // a stored hostname that starts like a formula (the rows keep what they were given)
    const month = new Date().toISOString().slice(0, 7);
    await t.cp.db.query(
      `INSERT INTO usage_records (user_id, image_id, container_id, app_hostname, vcpu, memory_bytes, start_time, end_time)
       VALUES ($1, $2, 990001, '=cmd|'' /C calc''!A0', 1, 536870912, now() - interval '10 seconds', now())`, [aliceId, imageId]);
    const r = await alice.get(`/api/billing/invoices/${month}?format=csv`);
    expect(r.status).toBe(200);
    const rows = r.text.trim().split('\r\n');
    const evil = rows.filter((l) => l.includes('cmd|'));
    expect(evil.length).toBeGreaterThan(0);
    for (const l of evil) {
      const cells = l.split(',');
      for (const c of cells) expect(c, l).not.toMatch(/^"?[=+\-@\t\r]/);
    }
  });
});

describe('metering ingest refuses what cannot be true (400) and cannot overflow', () => {
  const entry = (over: Record<string, unknown> = {}) => ({
    route: `img-${imageId}`, endpoint: '', requests: 1, status: [0, 1, 0, 0, 0], proxyErrors: 0,
    buckets: new Array(METER_BUCKET_COUNT).fill(0), latencyMsSum: 0, bytesIn: 0, bytesOut: 0, ...over,
  });
  let seq = 0;
  const upload = (stream: string, batches: unknown[]) => anon.req('POST', '/v1/proxy/metering', { token: PROXY_TOKEN, json: { stream, batches } });
  const batch = (over: Record<string, unknown> = {}, entries = [entry()]) => { const now = Date.now(); return { seq: ++seq, from: now - 1000, to: now, entries, ...over }; };

  it('from after to, an end far in the future, counts past the bounds, unknown fields', async () => {
    const now = Date.now();
    const cases: [string, unknown][] = [
      ['from > to', batch({ from: now, to: now - 1000 })],
      ['10 minutes ahead', batch({ from: now, to: now + 10 * 60_000 })],
      ['requests past the bound', batch({}, [entry({ requests: 1e13 })])],
      ['a bucket past the bound', batch({}, [entry({ buckets: [1e13, ...new Array(METER_BUCKET_COUNT - 1).fill(0)] })])],
      ['bytes past the bound', batch({}, [entry({ bytesOut: 1e16 })])],
      ['an unknown batch field', batch({ extra: 1 })],
      ['an unknown entry field', batch({}, [entry({ extra: 1 })])],
    ];
    for (const [what, b] of cases) {
      const r = await upload('sec-refused', [b]);
      expect(r.status, `${what}: ${r.text}`).toBe(400);
    }
    // nothing was applied, and a good batch still goes through
    const ok = await upload('sec-refused', [batch()]);
    expect(ok.status).toBe(200);
    expect(ok.body.applied).toBe(1);
  });

  it('sums that would overflow BIGINT saturate instead of failing every retry', async () => {
    const many = Array.from({ length: 4001 }, () => entry({ endpoint: '', requests: 0, status: [0, 0, 0, 0, 0], bytesIn: 1e15 }));
    const to = Math.floor(Date.now() / 60_000) * 60_000 - 30_000; // three uploads into one (past) minute row
    for (let i = 0; i < 3; i++) {
      const r = await upload('sec-overflow', [{ seq: i + 1, from: to - 1000, to, entries: many }]);
      expect(r.status, r.text).toBe(200);
    }
    const { rows } = await t.cp.db.query<{ b: string }>(`SELECT max(bytes_in)::text AS b FROM request_minutes WHERE image_id = $1`, [imageId]);
    expect(BigInt(rows[0].b)).toBeLessThanOrEqual(4_000_000_000_000_000_000n);
    expect(BigInt(rows[0].b)).toBeGreaterThan(3_000_000_000_000_000_000n);
  });
});

describe('metrics read bounded amounts of history', () => {
  let aggImage: number;
  const HOST = 'agg-app.example.com';
  const e = (endpoint: string, n: number, bucket: number, bytes: number) => {
    const buckets = new Array(METER_BUCKET_COUNT).fill(0);
    buckets[bucket] = n;
    return { route: `img-${aggImage}`, endpoint, requests: n, status: [0, n - 1, 0, 0, 1], proxyErrors: 1, buckets, latencyMsSum: n * 2, bytesIn: bytes, bytesOut: 2 * bytes };
  };

  beforeAll(async () => {
    aggImage = await insertReadyImage(t.cp, aliceId, HOST);
    const base = Math.floor(Date.now() / 60_000) * 60_000 - 10 * 60_000;
    const batches = [];
    // ten minutes × two containers and the no-endpoint bucket
    for (let m = 0; m < 10; m++) batches.push({ seq: m + 1, from: base + m * 60_000, to: base + m * 60_000 + 30_000, entries: [e('c-501', 10, 3, 100), e('c-502', 5, 8, 50), e('', 2, 0, 0)] });
    const r = await anon.req('POST', '/v1/proxy/metering', { token: PROXY_TOKEN, json: { stream: 'sec-agg', batches } });
    expect(r.status, r.text).toBe(200);
    // a row from 40 days ago: outside the default window of /api/metrics
    await t.cp.db.query(
      `INSERT INTO request_minutes (minute, user_id, image_id, container_id, app_hostname, requests, s1xx, s2xx, s3xx, s4xx, s5xx, proxy_errors, latency_ms_sum, latency_count, buckets, bytes_in, bytes_out)
       VALUES (date_trunc('minute', now() - interval '40 days'), $1, $2, 501, $3, 1000, 0, 1000, 0, 0, 0, 0, 0, 0, $4::bigint[], 0, 0)`,
      [aliceId, aggImage, HOST, `{${new Array(METER_BUCKET_COUNT).fill(0).join(',')}}`]);
  });

  it('/api/metrics sums in the database: totals, histograms, by app and container; the last 30 days unless since', async () => {
    const r = await alice.get(`/api/metrics?app_hostname=${HOST}`);
    expect(r.status, r.text).toBe(200);
    expect(Date.parse(r.body.until) - Date.parse(r.body.since)).toBe(30 * 24 * 3600_000);
    expect(r.body).toMatchObject({ total_requests: 170, total_errors: 30, proxy_errors: 30, bytes_in: 1500, bytes_out: 3000, status_codes: { '2xx': 140, '5xx': 30 } });
    expect(r.body.avg_latency_ms).toBe(2);
    expect(r.body.p50_latency_ms).toBeGreaterThan(2.5);
    expect(r.body.p50_latency_ms).toBeLessThanOrEqual(5);
    expect(r.body.p99_latency_ms).toBeGreaterThan(50);
    expect(r.body.by_app_hostname[HOST].total_requests).toBe(170);
    expect(r.body.by_container['501']).toMatchObject({ app_hostname: HOST, total_requests: 100, bytes_in: 1000 });
    expect(r.body.by_container['502']).toMatchObject({ total_requests: 50, p50_latency_ms: expect.any(Number) });
    expect(r.body.by_container['0']).toBeUndefined();
    const all = await alice.get(`/api/metrics?app_hostname=${HOST}&since=0`);
    expect(all.body.total_requests).toBe(1170);
    // the logs' time forms too (http/time-query.ts): durations, and RFC 3339 with an offset
    const recent = await alice.get(`/api/metrics?app_hostname=${HOST}&since=1h`);
    expect(recent.status, recent.text).toBe(200);
    expect(recent.body.total_requests).toBe(170);
    expect(Date.parse(recent.body.until) - Date.parse(recent.body.since)).toBeGreaterThanOrEqual(3600_000 - 5000);
    expect((await alice.get(`/api/metrics?app_hostname=${HOST}&since=50d&until=20d`)).body.total_requests).toBe(1000);
    expect((await alice.get(`/api/metrics?app_hostname=${HOST}&since=2020-01-01T00:00:00%2B02:00&until=1d`)).body.total_requests).toBe(1000);
  });

  it('malformed or absurd since/until are 400 with the messages the logs give', async () => {
    const bad: [string, string][] = [
      ['since=abc', 'query.since "abc" is not a duration back from now (30s, 10m, 2h, 1d), unix seconds or an RFC 3339 time (2026-11-30T18:00:00Z)'],
      ['until=yesterday', 'query.until "yesterday" is not a duration back from now (30s, 10m, 2h, 1d), unix seconds or an RFC 3339 time (2026-11-30T18:00:00Z)'],
      ['since=99999999999h', 'query.since "99999999999h" reaches back more than ten years'],
      ['since=1969-12-31T23:59:59Z', 'query.since "1969-12-31T23:59:59Z" is out of range (a time from 1970 to 9999)'],
      ['until=9999-12-31T23:00:00-02:00', 'query.until "9999-12-31T23:00:00-02:00" is out of range (a time from 1970 to 9999)'],
      ['until=999999999999', 'query.until "999999999999" is out of range (a time from 1970 to 9999)'],
      ['since=2026-13-45T99:00:00Z', 'query.since "2026-13-45T99:00:00Z" is not a date that exists (month 01-12, day within the month, hours 00-23, minutes and seconds 00-59)'],
      ['since=10m&until=1h', 'since must not be after until'],
    ];
    for (const [q, message] of bad) {
      for (const path of ['/api/metrics', '/api/metrics/series']) {
        const r = await alice.get(`${path}?${q.replace(/\+/g, '%2B')}`);
        expect(r.status, `${path}?${q}`).toBe(400);
        expect(r.body.error.message, `${path}?${q}`).toBe(message);
      }
    }
  });

  it('/api/metrics/series: one point per step summed in the database; more than 10000 points is 400 naming the limit', async () => {
    const r = await alice.get(`/api/metrics/series?app_hostname=${HOST}&step=300&since=${Math.floor(Date.now() / 1000) - 3600}`);
    expect(r.status, r.text).toBe(200);
    expect(r.body.points.reduce((s: number, p: { requests: number }) => s + p.requests, 0)).toBe(170);
    expect(r.body.points.length).toBeLessThanOrEqual(4);
    for (const p of r.body.points) expect(p.avg_latency_ms).toBe(2);
    const far = await alice.get('/api/metrics/series?step=86400&since=1970-01-01');
    expect(far.status).toBe(400);
    expect(far.body.error.message).toMatch(/10000/);
  });
});

describe('billing reads usage records in bounded pages', () => {
  let img: number;
  beforeAll(async () => {
    img = await insertReadyImage(t.cp, aliceId, 'paged-app.example.com');
    for (let i = 0; i < 5; i++) {
      await t.cp.db.query(
        `INSERT INTO usage_records (user_id, image_id, container_id, app_hostname, vcpu, memory_bytes, start_time, end_time, end_reason)
         VALUES ($1, $2, $3, 'paged-app.example.com', 1, 536870912, now() - make_interval(mins => $4), now() - make_interval(mins => $4) + interval '30 seconds', 'stopped (api)')`,
        [aliceId, img, 800 + i, 50 - i]);
    }
  });

  it('/api/billing/images/:id?limit=&before=: the summary covers every run, records come a page at a time', async () => {
    const first = await alice.get(`/api/billing/images/${img}?limit=2`);
    expect(first.status, first.text).toBe(200);
    expect(first.body.total_runs).toBe(5);
    expect(first.body.total_containers).toBe(5);
    expect(first.body.records.map((r: { container_id: number }) => r.container_id)).toEqual([803, 804]);
    expect(first.body.next_before).toBe(first.body.records[0].id);
    const second = await alice.get(`/api/billing/images/${img}?limit=2&before=${first.body.next_before}`);
    expect(second.body.records.map((r: { container_id: number }) => r.container_id)).toEqual([801, 802]);
    const third = await alice.get(`/api/billing/images/${img}?limit=2&before=${second.body.next_before}`);
    expect(third.body.records.map((r: { container_id: number }) => r.container_id)).toEqual([800]);
    expect(third.body.next_before).toBeNull();
    const costs = [...first.body.records, ...second.body.records, ...third.body.records].reduce((s: number, r: { cost: number }) => s + r.cost, 0);
    expect(first.body.instance_cost).toBe(costs);
    expect(first.body.total_minutes).toBeCloseTo(2.5, 3);
    // the default page holds all five, oldest first, like before
    const all = await alice.get(`/api/billing/images/${img}`);
    expect(all.body.records.map((r: { container_id: number }) => r.container_id)).toEqual([800, 801, 802, 803, 804]);
    expect(all.body.next_before).toBeNull();
    for (const q of ['limit=0', 'limit=1001', 'before=abc', 'nope=1']) expect((await alice.get(`/api/billing/images/${img}?${q}`)).status, q).toBe(400);
    // the account view folds the same records per image
    const acct = await alice.get('/api/billing');
    expect(acct.body.images.find((i: { image_id: number }) => i.image_id === img)).toMatchObject({ total_runs: 5, instance_cost: costs });
  });
});
