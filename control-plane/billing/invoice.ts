import { withTransaction, type Db, type Queryable } from '../db/pool.js';
import { round3 } from '../metering/histogram.js';
import {
  cpuCost, formatMicros, gibSeconds, instanceMinuteCost, memoryCost, requestsCost, runQuantities, vcpuSeconds, type Pricing,
} from './pricing.js';

export interface InvoiceLine {
  app_hostname: string; resource: string; quantity: number; unit: string; rate_micros: number; rate_per: string; amount: number; amount_formatted: string;
}

export interface Invoice {
  user_id: number;
  month: string;
  period_start: string;
  period_end: string;
  status: 'open' | 'closed';
  plan: Pricing['plan'];
  currency: string;
  lines: InvoiceLine[];
  subtotal: number;
  total: number;
  total_formatted: string;
}

/** `YYYY-MM` (validated by the caller) → its first instant and the next month's, in ms UTC. */
export function monthBounds(month: string): { start: number; end: number } {
  const [y, m] = month.split('-').map(Number);
  return { start: Date.UTC(y, m - 1, 1), end: Date.UTC(y, m, 1) };
}

/** The month (`YYYY-MM`, UTC) an instant falls in. */
export function monthOf(ms: number): string {
  return new Date(ms).toISOString().slice(0, 7);
}

/**
 * A user's invoice for a month, priced now: instance time of the runs overlapping the month (an
 * active run up to `now`), clipped to it, and the requests metered in it.
 */
export async function computeInvoice(q: Queryable, uid: number, month: string, pricing: Pricing, now: number): Promise<Invoice> {
  const { start, end } = monthBounds(month);
  const { rows } = await q.query<{ app_hostname: string; vcpu: string; memory_bytes: string; ms: number }>(
    `SELECT app_hostname, vcpu, memory_bytes,
            EXTRACT(EPOCH FROM (LEAST(COALESCE(end_time, now()), to_timestamp($3::double precision / 1000)) - GREATEST(start_time, to_timestamp($2::double precision / 1000)))) * 1000 AS ms
       FROM usage_records
      WHERE user_id = $1 AND start_time < to_timestamp($3::double precision / 1000) AND COALESCE(end_time, now()) > to_timestamp($2::double precision / 1000)
      ORDER BY app_hostname, start_time`, [uid, start, end]);
  const { rows: reqRows } = await q.query<{ app_hostname: string; n: string }>(
    `SELECT app_hostname, sum(requests) AS n FROM request_minutes
      WHERE user_id = $1 AND container_id <> 0 AND minute >= to_timestamp($2::double precision / 1000) AND minute < to_timestamp($3::double precision / 1000)
      GROUP BY app_hostname`, [uid, start, end]);
  interface Acc { runs: number; ms: number; vcpuMilliMs: bigint; mibMs: bigint; cpu: bigint; mem: bigint; minutes: bigint; requests: number }
  const apps = new Map<string, Acc>();
  const acc = (h: string) => {
    let a = apps.get(h);
    if (!a) apps.set(h, (a = { runs: 0, ms: 0, vcpuMilliMs: 0n, mibMs: 0n, cpu: 0n, mem: 0n, minutes: 0n, requests: 0 }));
    return a;
  };
  for (const r of rows) {
    const qty = runQuantities(Math.max(0, Number(r.ms)), Number(r.vcpu), Number(r.memory_bytes), pricing);
    const a = acc(r.app_hostname);
    a.runs++;
    a.ms += qty.ms;
    a.vcpuMilliMs += qty.vcpuMilliMs;
    a.mibMs += qty.mibMs;
    // each run's line amounts are rounded once, as in /api/billing
    a.cpu += cpuCost(qty, pricing);
    a.mem += memoryCost(qty, pricing);
    a.minutes += instanceMinuteCost(qty, pricing);
  }
  for (const r of reqRows) acc(r.app_hostname).requests += Number(r.n);
  const lines: InvoiceLine[] = [];
  const line = (app_hostname: string, resource: string, quantity: number, unit: string, rate: number, per: string, amount: bigint) =>
    lines.push({ app_hostname, resource, quantity, unit, rate_micros: rate, rate_per: per, amount: Number(amount), amount_formatted: formatMicros(amount) });
  for (const [h, a] of [...apps].sort(([x], [z]) => x.localeCompare(z))) {
    if (pricing.plan === 'cloud_run') {
      line(h, 'cpu', round3(vcpuSeconds(a)), 'vCPU-second', pricing.vcpu_hour_micros, 'vCPU-hour', a.cpu);
      line(h, 'memory', round3(gibSeconds(a)), 'GiB-second', pricing.gib_hour_micros, 'GiB-hour', a.mem);
      line(h, 'requests', a.requests, 'request', pricing.million_requests_micros, 'million requests', requestsCost(a.requests, pricing));
    } else {
      line(h, 'instance_time', round3(a.ms / 60_000), 'container-minute', pricing.container_minute_micros, 'container-minute', a.minutes);
    }
  }
  const total = lines.reduce((s, l) => s + BigInt(l.amount), 0n);
  return {
    user_id: uid,
    month,
    period_start: new Date(start).toISOString(),
    period_end: new Date(end).toISOString(),
    status: isClosed(month, now) ? 'closed' : 'open',
    plan: pricing.plan,
    currency: pricing.currency,
    lines,
    subtotal: Number(total),
    total: Number(total),
    total_formatted: formatMicros(total),
  };
}

/**
 * A month's invoice stays open this long after the month ends: counts a proxy held through a
 * short outage, and the usage sampler's last word on runs that ended in it, still land in it.
 */
export const CLOSE_GRACE_MS = 15 * 60_000;

/** Closing an invoice (exclusive) and applying metering (shared) take this lock: a batch is either in the stored invoice or billed in the month it arrives. */
export const INVOICE_LOCK = 0x62657274_696e76n; // "bert" "inv"

/** The newest month that is closed at `now`. */
export function lastClosedMonth(now: number): string {
  return monthOf(monthBounds(monthOf(now - CLOSE_GRACE_MS)).start - 1);
}

/** Is `month` closed at `now` (ended, and the grace past)? */
export function isClosed(month: string, now: number): boolean {
  return monthBounds(month).end + CLOSE_GRACE_MS <= now;
}

/**
 * The invoice as the user sees it. An open month is computed on every read. A month that has
 * ended (CLOSE_GRACE_MS after) is closed: computed once (by `closeInvoices`, or by the first
 * read) and stored, so it never changes again — not with a new BERTH_PRICING, not with counts a
 * proxy delivers late (those are billed in the month they arrive: metering/ingest.ts).
 */
export async function invoiceFor(db: Db, uid: number, month: string, pricing: Pricing, now: number): Promise<Invoice> {
  if (!isClosed(month, now)) return computeInvoice(db, uid, month, pricing, now);
  const stored = await db.query<{ body: Invoice }>('SELECT body FROM invoices WHERE user_id = $1 AND month = $2', [uid, month]);
  if (stored.rows.length) return stored.rows[0].body;
  return closeInvoice(db, uid, month, pricing, now);
}

async function closeInvoice(db: Db, uid: number, month: string, pricing: Pricing, now: number): Promise<Invoice> {
  return withTransaction(db, async (tx) => {
    // no metering upload is half applied while the invoice is computed: only the month closed
    // last can still be written to by one that began before it closed (older ones have long been
    // past ingest's cut-off), so a first read of an old month does not hold up metering
    if (month === lastClosedMonth(now)) {
      await tx.query('SELECT pg_advisory_xact_lock($1::bigint)', [INVOICE_LOCK.toString()]);
    }
    const inv = await computeInvoice(tx, uid, month, pricing, now);
    // nothing to bill is not stored (reading every month since 1970 would write a row each; it
    // stays empty: nothing can reach a closed month any more), except for the month closed last:
    // computing that one takes the lock metering ingest takes, which a tenant reading it again
    // and again must not hold up (one row per user who reads it)
    if (inv.lines.length === 0 && month !== lastClosedMonth(now)) return inv;
    // two readers at once: the first stored wins, both answer with it
    const { rows } = await tx.query<{ body: Invoice }>(
      `INSERT INTO invoices (user_id, month, body) VALUES ($1, $2, $3)
       ON CONFLICT (user_id, month) DO UPDATE SET month = invoices.month
       RETURNING body`, [uid, month, JSON.stringify(inv)]);
    return rows[0].body;
  });
}

/**
 * Close the invoices of the last month that is closed at `now` (users with usage in it and no
 * stored invoice yet), so a price change early in a month does not reach the one before.
 * Returns the month and how many were closed; `done`, a month a pass closed already, is skipped.
 * Per user, through the (user_id, …) indexes.
 */
export async function closeInvoices(db: Db, pricing: Pricing, now: number, done = ''): Promise<{ month: string; closed: number }> {
  const month = lastClosedMonth(now);
  // a pass already closed it: what reaches a closed month later is billed in the month it arrives
  if (month === done) return { month, closed: 0 };
  const { start, end } = monthBounds(month);
  const { rows } = await db.query<{ id: string }>(
    `SELECT u.id FROM users u
      WHERE NOT EXISTS (SELECT 1 FROM invoices i WHERE i.user_id = u.id AND i.month = $3)
        AND (EXISTS (SELECT 1 FROM usage_records r WHERE r.user_id = u.id AND r.start_time < to_timestamp($2::double precision / 1000)
                       AND COALESCE(r.end_time, now()) > to_timestamp($1::double precision / 1000))
          OR EXISTS (SELECT 1 FROM request_minutes m WHERE m.user_id = u.id
                       AND m.minute >= to_timestamp($1::double precision / 1000) AND m.minute < to_timestamp($2::double precision / 1000)))
      ORDER BY u.id`, [start, end, month]);
  for (const r of rows) await closeInvoice(db, Number(r.id), month, pricing, now);
  return { month, closed: rows.length };
}
