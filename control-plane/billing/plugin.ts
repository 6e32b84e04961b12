import { envNumber } from '../env.js';
import { heavyHandler } from '../http/heavy-queries.js';
import type { FastifyInstance } from 'fastify';
import type { Logger } from '../../shared/logging.js';
import { badRequest, notFound } from '../http/errors.js';
import fp from '../http/fp.js';
import { withSnapshot, type Queryable } from '../db/pool.js';
import { ID, int } from '../http/schemas.js';
import { round3 } from '../metering/histogram.js';
import {
  formatMicros, gibSeconds, loadPricing, requestsCost, runCost, runQuantities, vcpuSeconds,
  type Pricing, type RunQuantities,
} from './pricing.js';
import { UsageSampler } from './sampler.js';
import { billingSchema, imageBillingSchema, invoiceSchema } from './schemas.js';
import { closeInvoices, invoiceFor, monthBounds } from './invoice.js';
import { Periodic } from '../periodic.js';
import { errorResponses } from '../http/responses.js';

export interface Billing {
  pricing: Pricing;
  sampler: UsageSampler;
}

declare module 'fastify' {
  interface FastifyInstance {
    billing: Billing;
  }
}

interface RecordRow {
  id: string; image_id: string; container_id: string; app_hostname: string; vcpu: string; memory_bytes: string;
  start_time: Date; end_time: Date | null; end_reason: string | null; duration_ms: number;
  cpu_seconds_used: number; memory_byte_seconds: number; memory_peak_bytes: string; samples: number;
}

const RECORD_COLUMNS = `id, image_id, container_id, app_hostname, vcpu, memory_bytes, start_time, end_time, end_reason,
  cpu_seconds_used, memory_byte_seconds, memory_peak_bytes, samples`;

/** One record's priced view (an active record is priced up to now). */
function recordView(r: RecordRow, q: RunQuantities, p: Pricing) {
  const secs = Number(r.duration_ms) / 1000;
  return {
    id: Number(r.id),
    container_id: Number(r.container_id),
    image_id: Number(r.image_id),
    app_hostname: r.app_hostname,
    start_time: r.start_time.toISOString(),
    end_time: r.end_time ? r.end_time.toISOString() : null,
    status: r.end_time ? 'Completed' : 'Active',
    end_reason: r.end_reason,
    duration_seconds: round3(secs),
    billed_seconds: q.ms / 1000,
    vcpu: Number(r.vcpu),
    memory_bytes: Number(r.memory_bytes),
    vcpu_seconds: round3(vcpuSeconds(q)),
    gib_seconds: round3(gibSeconds(q)),
    // what Docker's stats say it used (idle vs busy): CPU time, average and peak memory
    cpu_seconds_used: round3(Number(r.cpu_seconds_used)),
    avg_memory_bytes: secs > 0 && r.samples > 0 ? Math.round(Number(r.memory_byte_seconds) / secs) : null,
    peak_memory_bytes: Number(r.memory_peak_bytes),
    samples: r.samples,
    cost: Number(runCost(q, p)),
  };
}

type RecordView = ReturnType<typeof recordView>;

/** An image's records folded one at a time (records are read in bounded batches, never all at once). */
class SummaryAcc {
  runCosts = 0n;
  ms = 0;
  vs = 0;
  gs = 0;
  used = 0;
  runs = 0;
  active = 0;
  last = 0;
  host = '';
  readonly containers = new Set<number>();

  add(r: RecordView): void {
    this.runCosts += BigInt(r.cost);
    this.ms += r.billed_seconds * 1000;
    this.vs += r.vcpu_seconds;
    this.gs += r.gib_seconds;
    this.used += r.cpu_seconds_used;
    this.runs++;
    if (r.status === 'Active') this.active++;
    this.containers.add(r.container_id);
    this.host ||= r.app_hostname;
    this.last = Math.max(this.last, r.end_time ? Date.parse(r.end_time) : Date.now(), Date.parse(r.start_time));
  }
}

function summary(imageId: number, host: string, revision: number | null, acc: SummaryAcc, requests: number, lastRequestAt: Date | null, p: Pricing) {
  const last = Math.max(acc.last, lastRequestAt ? lastRequestAt.getTime() : 0);
  const reqCost = requestsCost(requests, p);
  const total = acc.runCosts + reqCost;
  return {
    image_id: imageId,
    app_hostname: host,
    revision,
    total_containers: acc.containers.size,
    active_containers: acc.active,
    total_runs: acc.runs,
    total_minutes: round3(acc.ms / 60_000),
    vcpu_seconds: round3(acc.vs),
    gib_seconds: round3(acc.gs),
    cpu_seconds_used: round3(acc.used),
    requests,
    instance_cost: Number(acc.runCosts),
    requests_cost: Number(reqCost),
    total_cost: Number(total),
    total_cost_formatted: formatMicros(total),
    currency: p.currency,
    last_activity: last ? new Date(last).toISOString() : null,
  };
}

/** Usage records read per query while folding a user's history. */
const RECORD_BATCH = 2000;
/** `GET /api/billing/images/:id`: records per page (default, most). */
export const RECORDS_PAGE_DEFAULT = 100;
export const RECORDS_PAGE_MAX = 1000;

const MONTH = '^[0-9]{4}-(0[1-9]|1[0-2])$';
/** Routes without query parameters refuse any (400) rather than ignore them. */
const NO_QUERY = { type: 'object', additionalProperties: false, properties: {} } as const;

/**
 * One CSV cell. A cell a spreadsheet would read as a formula (starting with `=`, `+`, `-`, `@`, tab
 * or CR — an app hostname is the tenant's text) gets a leading `'` and is quoted (OWASP, CSV
 * injection); cells with `"`, `,` or line breaks are quoted.
 */
export function csvField(v: string | number): string {
  let s = String(v);
  if (/^[=+\-@\t\r]/.test(s)) s = `'${s}`;
  return /[",\n\r']/.test(s) ? `"${s.replace(/"/g, '""')}"` : s;
}

/**
 * Billing: usage records (containers' runs) and metered requests, priced by BERTH_PRICING.
 * `GET /api/billing`, `GET /api/billing/images/:id`, `GET /api/billing/invoices/:month[?format=csv]`.
 * Starts the Docker stats sampler (reconcile leader only).
 */
async function billingPlugin(app: FastifyInstance): Promise<void> {
  // history sums hold a pooled connection each: a few at once per user (http/heavy-queries.ts)
  const heavy = heavyHandler(app);
  const log = app.log as unknown as Logger;
  const pricing = loadPricing(process.env.BERTH_PRICING);
  const interval = envNumber('BERTH_USAGE_SAMPLE_MS', 5000, 100, 3_600_000);
  const sampler = new UsageSampler({
    db: app.db, runtime: app.platform.runtime, log: log.child({ component: 'usage' }), isLeader: () => app.platform.leader.isLeader,
    intervalMs: interval, defaultMemoryBytes: app.config.containerMemoryDefaultBytes,
  });
  app.decorate('billing', { pricing, sampler } satisfies Billing);
  // last month's invoices are closed (stored as they are) soon after it ends, by the reconcile leader
  // (by the database's clock, as metering's ingest and the invoice route read it)
  const closeEvery = envNumber('BERTH_INVOICE_CLOSE_MS', 3600_000, 100, 86_400_000, true);
  let closedMonth = '';
  const closer = new Periodic(closeEvery, async () => {
    if (!app.platform.leader.isLeader) return;
    const { rows: [{ now }] } = await app.db.query<{ now: Date }>('SELECT now()');
    const r = await closeInvoices(app.db, pricing, now.getTime(), closedMonth);
    if (r.closed > 0) log.info({ month: r.month, invoices: r.closed }, 'invoices closed');
    closedMonth = r.month;
  }, (e) => log.warn({ err: e.message }, 'closing invoices failed; will retry'));
  app.addHook('onReady', async () => {
    sampler.start();
    // the first pass soon after start: a restart with new prices must not reach a month just ended
    closer.start(Math.min(closeEvery, 10_000));
  });
  app.addHook('onClose', async () => {
    await closer.stop();
    await sampler.stop();
  });
  log.info({ plan: pricing.plan, currency: pricing.currency }, 'billing pricing loaded');

  const pricingView = () => ({ ...pricing, unit: `micro-${pricing.currency} (1 ${pricing.currency} = 1000000)` });

  const priced = (r: RecordRow) => recordView(r, runQuantities(Number(r.duration_ms), Number(r.vcpu), Number(r.memory_bytes), pricing), pricing);
  const DURATION = 'EXTRACT(EPOCH FROM (COALESCE(end_time, now()) - start_time)) * 1000 AS duration_ms';
  /**
   * Every record of the caller (optionally of one image), priced, in batches of RECORD_BATCH by id:
   * memory stays bounded however long the history (durations by the database clock).
   */
  const eachRecord = async (q: Queryable, userId: number, imageId: number | undefined, fn: (r: RecordView) => void) => {
    for (let after = 0; ;) {
      const { rows } = await q.query<RecordRow>(
        `SELECT ${RECORD_COLUMNS}, ${DURATION} FROM usage_records
          WHERE user_id = $1 AND ($2::bigint IS NULL OR image_id = $2) AND id > $3 ORDER BY id LIMIT ${RECORD_BATCH}`, [userId, imageId ?? null, after]);
      for (const r of rows) fn(priced(r));
      if (rows.length < RECORD_BATCH) return;
      after = Number(rows[rows.length - 1].id);
    }
  };
  /** Billable requests (answered by a container) per image, and the last minute with traffic. */
  const requestsByImage = async (q: Queryable, userId: number, imageId?: number) => {
    const { rows } = await q.query<{ image_id: string; app_hostname: string; n: string; last: Date }>(
      `SELECT image_id, max(app_hostname) AS app_hostname, sum(requests) AS n, max(minute) + interval '1 minute' AS last
         FROM request_minutes WHERE user_id = $1 AND container_id <> 0 AND ($2::bigint IS NULL OR image_id = $2) GROUP BY image_id`, [userId, imageId ?? null]);
    return new Map(rows.map((r) => [Number(r.image_id), { host: r.app_hostname, requests: Number(r.n), last: r.last }]));
  };

  app.get('/api/billing', {
    preHandler: app.authenticate,
    schema: { summary: 'Your instance time, requests and cost per image (revision), priced with the configured plan', querystring: NO_QUERY, response: { 200: billingSchema, ...errorResponses } },
  }, heavy(async (req) => {
    const uid = req.user!.id;
    // one pass over the records (in batches), folded per image
    const accs = new Map<number, SummaryAcc>();
    // one snapshot: running records are priced at one instant
    // (one query after the other: a client runs one at a time anyway, and pg 8 warns of a second
    // query while one runs — deprecated, pg 9 will refuse it)
    const [reqs, { rows: imgs }] = await withSnapshot(app.db, async (c) => {
      await eachRecord(c, uid, undefined, (r) => {
        let a = accs.get(r.image_id);
        if (!a) accs.set(r.image_id, (a = new SummaryAcc()));
        a.add(r);
      });
      return [
        await requestsByImage(c, uid),
        await c.query<{ id: string; app_hostname: string; revision: number | null }>('SELECT id, app_hostname, revision FROM images WHERE user_id = $1', [uid]),
      ] as const;
    });
    const ids = new Set<number>([...imgs.map((i) => Number(i.id)), ...accs.keys(), ...reqs.keys()]);
    const hostOf = new Map(imgs.map((i) => [Number(i.id), i.app_hostname]));
    const revisionOf = new Map(imgs.map((i) => [Number(i.id), i.revision]));
    const images = [...ids].sort((a, b) => a - b).map((id) => {
      const acc = accs.get(id) ?? new SummaryAcc();
      const rq = reqs.get(id);
      return summary(id, hostOf.get(id) || acc.host || rq?.host || '', revisionOf.get(id) ?? null, acc, rq?.requests ?? 0, rq?.last ?? null, pricing);
    });
    const total = images.reduce((s, i) => s + BigInt(i.total_cost), 0n);
    return { user_id: uid, currency: pricing.currency, plan: pricing.plan, pricing: pricingView(), images, total_cost: Number(total), total_cost_formatted: formatMicros(total) };
  }));

  app.get<{ Params: { id: number }; Querystring: { limit?: number; before?: number } }>('/api/billing/images/:id', {
    preHandler: app.authenticate,
    schema: {
      summary: 'One image\'s billing summary (all runs) and a page of its usage records (?limit=&before=, next_before)',
      params: { type: 'object', required: ['id'], properties: { id: ID } },
      querystring: { type: 'object', additionalProperties: false, properties: { limit: int(1, RECORDS_PAGE_MAX, { default: RECORDS_PAGE_DEFAULT }), before: ID } },
      response: { 200: imageBillingSchema, ...errorResponses },
    },
  }, heavy(async (req) => {
    const uid = req.user!.id;
    const id = req.params.id;
    const limit = req.query.limit ?? RECORDS_PAGE_DEFAULT;
    const acc = new SummaryAcc();
    // one snapshot: the summary and the page price a running record at the same instant
    const [reqs, { rows: imgs }, { rows: page }] = await withSnapshot(app.db, async (c) => {
      await eachRecord(c, uid, id, (r) => acc.add(r));
      return [
        await requestsByImage(c, uid, id),
        await c.query<{ app_hostname: string; revision: number | null }>('SELECT app_hostname, revision FROM images WHERE user_id = $1 AND id = $2', [uid, id]),
        await c.query<RecordRow>(
          `SELECT ${RECORD_COLUMNS}, ${DURATION} FROM usage_records
            WHERE user_id = $1 AND image_id = $2 AND ($3::bigint IS NULL OR id < $3) ORDER BY id DESC LIMIT $4`, [uid, id, req.query.before ?? null, limit + 1]),
      ] as const;
    });
    const rq = reqs.get(id);
    if (!imgs.length && !acc.runs && !rq) throw notFound('image');
    const more = page.length > limit;
    const records = page.slice(0, limit).reverse().map(priced);
    return {
      ...summary(id, imgs[0]?.app_hostname || acc.host || rq?.host || '', imgs[0]?.revision ?? null, acc, rq?.requests ?? 0, rq?.last ?? null, pricing),
      plan: pricing.plan,
      records,
      next_before: more && records.length ? records[0].id : null,
    };
  }));

  app.get<{ Params: { month: string }; Querystring: { format?: 'json' | 'csv' } }>('/api/billing/invoices/:month', {
    preHandler: app.authenticate,
    schema: {
      summary: 'Your invoice for a month (YYYY-MM, UTC): line items per app and resource, total and currency; ?format=csv for accounting',
      params: { type: 'object', required: ['month'], properties: { month: { type: 'string', pattern: MONTH, maxLength: 7 } } },
      querystring: { type: 'object', additionalProperties: false, properties: { format: { type: 'string', enum: ['json', 'csv'] } } },
      // ?format=csv is sent as a string with its own content type: never serialized, documented only
      response: {
        200: { content: { 'application/json': { schema: invoiceSchema }, 'text/csv': { schema: { type: 'string', description: 'the same lines as CSV, then a total row' } } } },
        ...errorResponses,
      },
    },
  }, heavy(async (req, reply) => {
    const uid = req.user!.id;
    const { start } = monthBounds(req.params.month);
    if (Number(req.params.month.slice(0, 4)) < 1970) throw badRequest('month must be 1970-01 or later');
    const { rows: [{ now }] } = await app.db.query<{ now: Date }>('SELECT now()');
    if (start > now.getTime()) throw badRequest(`month ${req.params.month} has not started yet`);
    const invoice = await invoiceFor(app.db, uid, req.params.month, pricing, now.getTime());
    const lines = invoice.lines;
    if (req.query.format !== 'csv') return invoice;
    const head = ['month', 'app_hostname', 'resource', 'quantity', 'unit', 'rate_micros', 'rate_per', 'amount_micros', 'amount', 'currency'];
    const out = [head.join(',')];
    for (const l of lines) out.push([invoice.month, l.app_hostname, l.resource, l.quantity, l.unit, l.rate_micros, l.rate_per, l.amount, l.amount_formatted, invoice.currency].map(csvField).join(','));
    out.push([invoice.month, '', 'total', '', '', '', '', invoice.total, invoice.total_formatted, invoice.currency].map(csvField).join(','));
    return reply
      .header('content-type', 'text/csv; charset=utf-8')
      .header('content-disposition', `attachment; filename="berth-invoice-${invoice.month}.csv"`)
      .send(out.join('\r\n') + '\r\n');
  }));
}

export default fp(billingPlugin, 'berth-billing');
