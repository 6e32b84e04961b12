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
