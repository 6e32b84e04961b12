/**
 * A month's invoice, once the month is over (and 15 minutes more), is closed: stored the first
 * time it is computed (by the leader's hourly pass or the first read) and never changed
 * afterwards, neither by a new price nor by counts a proxy delivers late (those are billed in the
 * month they arrive). (Run in the first 15 minutes of a month, last month is still open here.)
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Api } from '../helpers/api.js';
import { insertReadyImage, startTestControlPlane, type TestControlPlane } from '../helpers/control-plane.js';
import { closeInvoices, isClosed, monthBounds, monthOf } from '../../control-plane/billing/invoice.js';
import { applyUpload } from '../../control-plane/metering/ingest.js';
import { METER_BUCKET_COUNT } from '../../shared/metering/schema.js';

let t: TestControlPlane;
let alice: Api;
let aliceId = 0;
let image = 0;
const HOST = 'invoice-closed.example.com';
const now = Date.now();
const thisMonth = monthOf(now);
const lastMonth = monthOf(monthBounds(thisMonth).start - 1);
const inLastMonth = monthBounds(lastMonth).start + 3 * 86_400_000; // the 4th, 00:00 UTC

async function addRun(userId: number, imageId: number, startMs: number, hours: number): Promise<void> {
  await t.cp.db.query(
    `INSERT INTO usage_records (user_id, image_id, container_id, app_hostname, vcpu, memory_bytes, start_time, end_time)
     VALUES ($1, $2, 1, $3, 1, 536870912, to_timestamp($4::double precision / 1000), to_timestamp($4::double precision / 1000) + make_interval(hours => $5))`,
    [userId, imageId, HOST, startMs, hours]);
}

beforeAll(async () => {
  // the leader's own close pass stays out of the way (the tests close invoices themselves)
  process.env.BERTH_INVOICE_CLOSE_MS = '86400000';
  t = await startTestControlPlane({ seedDefaultUser: false, dockerHost: 'unix:///nonexistent/docker.sock', autoscale: { enabled: false } });
  alice = await new Api(t.cp.url).signup('alice-invoice@example.com');
  aliceId = Number((await alice.get('/api/auth/me')).body.user.id);
  image = await insertReadyImage(t.cp, aliceId, HOST);
  await addRun(aliceId, image, inLastMonth, 2);
}, 60_000);
afterAll(async () => {
  delete process.env.BERTH_INVOICE_CLOSE_MS;
  await t?.close();
});

// (in the first 15 minutes of a month last month is still open: nothing here to test then)
describe.skipIf(!isClosed(lastMonth, now))('closed invoices', () => {
  it('last month\'s invoice does not change with a new price or late usage; this month\'s does', async () => {
    const first = await alice.get(`/api/billing/invoices/${lastMonth}`);
    expect(first.status, first.text).toBe(200);
    expect(first.body.status).toBe('closed');
    expect(first.body.total).toBeGreaterThan(0);
    const pricing = t.cp.app.billing.pricing;
    const was = { ...pricing };
    try {
      pricing.vcpu_hour_micros *= 2;
      pricing.gib_hour_micros *= 2;
      pricing.container_minute_micros *= 2;
      await addRun(aliceId, image, inLastMonth + 86_400_000, 5);
      const again = await alice.get(`/api/billing/invoices/${lastMonth}`);
      expect(again.body).toEqual(first.body);
      const csv = await alice.req('GET', `/api/billing/invoices/${lastMonth}?format=csv`);
      expect(csv.text).toContain(String(first.body.total));
      // the open month is priced on every read
      const open1 = (await alice.get(`/api/billing/invoices/${thisMonth}`)).body;
      expect(open1.status).toBe('open');
      await addRun(aliceId, image, monthBounds(thisMonth).start, 1);
      const open2 = (await alice.get(`/api/billing/invoices/${thisMonth}`)).body;
      expect(open2.total).toBeGreaterThan(open1.total);
    } finally {
      Object.assign(pricing, was);
    }
  });

  it('the hourly pass closes last month\'s invoices of users who had usage, once', async () => {
    const bob = await new Api(t.cp.url).signup('bob-invoice@example.com');
    const bobId = Number((await bob.get('/api/auth/me')).body.user.id);
    await addRun(bobId, 999_999, inLastMonth, 1);
    const stored = async () => (await t.cp.db.query('SELECT body FROM invoices WHERE user_id = $1 AND month = $2', [bobId, lastMonth])).rows;
    expect(await stored()).toHaveLength(0);
    expect((await closeInvoices(t.cp.db, t.cp.app.billing.pricing, Date.now())).closed).toBeGreaterThanOrEqual(1);
    const [row] = await stored();
    expect(row.body).toMatchObject({ user_id: bobId, month: lastMonth, status: 'closed' });
    expect(row.body.total).toBeGreaterThan(0);
    expect((await closeInvoices(t.cp.db, t.cp.app.billing.pricing, Date.now())).closed).toBe(0);
    // a month a pass closed already is not looked at again
    expect(await closeInvoices(t.cp.db, t.cp.app.billing.pricing, Date.now(), lastMonth)).toEqual({ month: lastMonth, closed: 0 });
    expect((await bob.get(`/api/billing/invoices/${lastMonth}`)).body).toEqual(row.body);
  });

  it('a closed month with nothing to bill is answered, not stored (a row per month since 1970 otherwise)', async () => {
    const r = await alice.get('/api/billing/invoices/2001-01');
    expect(r.status, r.text).toBe(200);
    expect(r.body).toMatchObject({ status: 'closed', lines: [], total: 0 });
    expect((await t.cp.db.query("SELECT 1 FROM invoices WHERE month = '2001-01'")).rowCount).toBe(0);
  });

  it('an empty invoice of the month closed last is stored at the first read (reading it again takes no metering lock)', async () => {
    const bob = await new Api(t.cp.url).signup('invoice-empty@example.com');
    const bobId = (await bob.get('/api/auth/me')).body.user.id as number;
    const r = await bob.get(`/api/billing/invoices/${lastMonth}`);
    expect(r.status, r.text).toBe(200);
    expect(r.body).toMatchObject({ status: 'closed', lines: [], total: 0 });
    expect((await t.cp.db.query('SELECT 1 FROM invoices WHERE user_id = $1 AND month = $2', [bobId, lastMonth])).rowCount).toBe(1);
  });

  it('months before 1970 are refused (two-digit years are not 19xx)', async () => {
    for (const m of ['0085-03', '1969-12', '0000-01']) expect((await alice.get(`/api/billing/invoices/${m}`)).status, m).toBe(400);
  });

  it('requests a proxy delivers after their month ended are counted in the minute they arrive', async () => {
    const entry = (requests: number) => ({
      route: `img-${image}`, endpoint: 'c-1', requests, status: [0, requests, 0, 0, 0], proxyErrors: 0,
      buckets: Array.from({ length: METER_BUCKET_COUNT }, (_, i) => (i === 0 ? requests : 0)), latencyMsSum: 1, bytesIn: 0, bytesOut: 0,
    });
    const arrive = Date.now();
    await applyUpload(t.cp.db, {
      stream: 'invoice-late',
      batches: [
        { seq: 1, from: inLastMonth, to: inLastMonth + 1000, merged: 1, entries: [entry(7)] },
        { seq: 2, from: arrive - 1000, to: arrive, merged: 1, entries: [entry(5)] },
      ],
    }, t.cp.log, arrive);
    const { rows } = await t.cp.db.query<{ minute: Date; requests: string }>(
      'SELECT minute, requests FROM request_minutes WHERE image_id = $1 ORDER BY minute', [image]);
    expect(rows.map((r) => Number(r.requests))).toEqual([12]);
    expect(monthOf(rows[0].minute.getTime())).toBe(thisMonth);
  });
});
