import { INVOICE_LOCK, lastClosedMonth, monthBounds } from '../billing/invoice.js';
import type { Logger } from '../../shared/logging.js';
import { METER_BUCKET_COUNT, METER_MAX_FUTURE_MS, type MeterUpload } from '../../shared/metering/schema.js';
import { withTransaction, type Db } from '../db/pool.js';
import { badRequest } from '../http/errors.js';

/**
 * What a per-minute counter may hold: sums stop here instead of overflowing BIGINT (2^63 − 1).
 * Two capped values still add up below 2^63, so `LEAST(a + b, cap)` cannot overflow either; a
 * sum that would overflow becomes a saturated counter rather than an error the proxy retries forever.
 */
export const ROW_COUNT_CAP = 4e18;
const cap = (n: number) => (n > ROW_COUNT_CAP ? ROW_COUNT_CAP : n);

/**
 * Batches the control plane refuses (400, naming the batch): an end before the start, an end more
 * than METER_MAX_FUTURE_MS ahead of this clock. Counts past the sanity bounds are refused by the
 * schema. The proxy drops a batch refused on its own rather than resending it forever.
 */
export function checkUpload(up: MeterUpload, now = Date.now()): void {
  for (const b of up.batches) {
    if (b.from > b.to) throw badRequest(`batch ${b.seq}: from (${b.from}) is after to (${b.to})`, 'metering_batch_refused');
    if (b.to > now + METER_MAX_FUTURE_MS) {
      throw badRequest(`batch ${b.seq}: to (${new Date(b.to).toISOString()}) is more than ${METER_MAX_FUTURE_MS / 60_000} minutes ahead of the control plane's clock`, 'metering_batch_refused');
    }
  }
}

/** `img-{id}` → image id; anything else (a file-fed route, a foreign name) → null. */
export function imageOfRoute(route: string): number | null {
  const m = /^img-([1-9][0-9]{0,15})$/.exec(route);
  const n = m ? Number(m[1]) : NaN;
  return Number.isSafeInteger(n) ? n : null;
}

/** `c-{id}` → container id; "" (no endpoint answered) → 0; anything else → null. */
export function containerOfEndpoint(endpoint: string): number | null {
  if (endpoint === '') return 0;
  const m = /^c-([1-9][0-9]{0,15})$/.exec(endpoint);
  const n = m ? Number(m[1]) : NaN;
  return Number.isSafeInteger(n) ? n : null;
}

interface Row {
  minute: number; imageId: number; containerId: number;
  requests: number; s: number[]; proxyErrors: number; latencyMsSum: number; latencyCount: number; buckets: number[]; bytesIn: number; bytesOut: number;
}

export interface IngestResult {
  acked: number;
  applied: number;
  duplicates: number;
  /** entries naming no known image (file-fed routes, deleted apps) */
  unattributed: number;
}

/**
 * Apply a proxy's upload once: under a row lock on the stream, every batch whose seq is above the
 * stream's last applied seq is rolled into per-minute rows (the minute of the batch's end, or of
 * its arrival when the batch ended in a month whose invoice is closed), and
 * the stream's last seq moves — all in one transaction, so a batch is either applied with its seq
 * recorded or not at all. Batches at or below it (a resend after a lost answer) are ignored.
 */
export async function applyUpload(db: Db, up: MeterUpload, log: Logger, at?: number): Promise<IngestResult> {
  return withTransaction(db, async (tx) => {
    // counts of a month whose invoice is closed (a proxy away for a while) are billed in the
    // minute they arrive: a closed invoice never changes. Under the invoice lock (shared), by the
    // database's clock, as closing reads it (billing/invoice.ts)
    const { rows: [clock] } = await tx.query<{ now: number }>(
      'SELECT pg_advisory_xact_lock_shared($1::bigint), (extract(epoch FROM clock_timestamp()) * 1000)::float8 AS now', [INVOICE_LOCK.toString()]);
    const now = at ?? clock.now;
    const closedBefore = monthBounds(lastClosedMonth(now)).end;
    const arrival = Math.floor(now / 60_000) * 60_000;
    await tx.query('INSERT INTO metering_streams (stream) VALUES ($1) ON CONFLICT (stream) DO NOTHING', [up.stream]);
    const { rows: [s] } = await tx.query<{ last_seq: string }>('SELECT last_seq FROM metering_streams WHERE stream = $1 FOR UPDATE', [up.stream]);
    let last = Number(s.last_seq);
    const rows = new Map<string, Row>();
    let applied = 0;
    let duplicates = 0;
    let unattributed = 0;
    for (const b of [...up.batches].sort((a, z) => a.seq - z.seq)) {
      if (b.seq <= last) { duplicates++; continue; }
      last = b.seq;
      applied++;
      const counted = Math.floor(b.to / 60_000) * 60_000;
      const minute = counted < closedBefore ? arrival : counted;
      for (const e of b.entries) {
        const imageId = imageOfRoute(e.route);
        const containerId = containerOfEndpoint(e.endpoint);
        if (imageId === null || containerId === null) { unattributed += e.requests; continue; }
        const k = `${imageId}/${containerId}/${minute}`;
        let r = rows.get(k);
        if (!r) {
          r = { minute, imageId, containerId, requests: 0, s: [0, 0, 0, 0, 0], proxyErrors: 0, latencyMsSum: 0, latencyCount: 0, buckets: new Array<number>(METER_BUCKET_COUNT).fill(0), bytesIn: 0, bytesOut: 0 };
          rows.set(k, r);
        }
        r.requests += e.requests;
        for (let i = 0; i < 5; i++) r.s[i] += e.status[i];
        r.proxyErrors += e.proxyErrors;
        r.latencyMsSum += e.latencyMsSum;
        for (let i = 0; i < METER_BUCKET_COUNT; i++) { r.buckets[i] += e.buckets[i]; r.latencyCount += e.buckets[i]; }
        r.bytesIn += e.bytesIn;
        r.bytesOut += e.bytesOut;
      }
    }
    for (const r of rows.values()) {
      r.requests = cap(r.requests); r.proxyErrors = cap(r.proxyErrors); r.latencyCount = cap(r.latencyCount);
      r.bytesIn = cap(r.bytesIn); r.bytesOut = cap(r.bytesOut);
      for (let i = 0; i < 5; i++) r.s[i] = cap(r.s[i]);
      for (let i = 0; i < METER_BUCKET_COUNT; i++) r.buckets[i] = cap(r.buckets[i]);
    }
    if (rows.size) {
      const ids = [...new Set([...rows.values()].map((r) => r.imageId))];
      const { rows: imgs } = await tx.query<{ id: string; user_id: string; app_hostname: string }>('SELECT id, user_id, app_hostname FROM images WHERE id = ANY($1::bigint[])', [ids]);
      const owner = new Map(imgs.map((i) => [Number(i.id), i]));
      // one order for every upload: concurrent uploads of several proxies lock shared rows in the same order (no deadlock)
      const ordered = [...rows.values()].sort((a, b) => a.imageId - b.imageId || a.containerId - b.containerId || a.minute - b.minute);
      const rowsIn = ordered.filter((r) => {
        if (owner.has(r.imageId)) return true;
        unattributed += r.requests;
        return false;
      });
      if (rowsIn.length) {
        // one statement for the whole upload (arrays of columns; each histogram as a '{…}' literal)
        const col = <T>(f: (r: Row) => T) => rowsIn.map(f);
        await tx.query(
          `INSERT INTO request_minutes (minute, user_id, image_id, container_id, app_hostname, requests, s1xx, s2xx, s3xx, s4xx, s5xx,
             proxy_errors, latency_ms_sum, latency_count, buckets, bytes_in, bytes_out)
           SELECT to_timestamp(u.minute::double precision / 1000), u.user_id, u.image_id, u.container_id, u.app_hostname, u.requests,
                  u.s1, u.s2, u.s3, u.s4, u.s5, u.proxy_errors, u.latency_ms_sum, u.latency_count, u.buckets::bigint[], u.bytes_in, u.bytes_out
             FROM unnest($1::bigint[], $2::bigint[], $3::bigint[], $4::bigint[], $5::text[], $6::bigint[], $7::bigint[], $8::bigint[], $9::bigint[],
                         $10::bigint[], $11::bigint[], $12::bigint[], $13::double precision[], $14::bigint[], $15::text[], $16::bigint[], $17::bigint[])
               WITH ORDINALITY AS u(minute, user_id, image_id, container_id, app_hostname, requests, s1, s2, s3, s4, s5, proxy_errors,
                                    latency_ms_sum, latency_count, buckets, bytes_in, bytes_out, ord)
            ORDER BY u.ord
           ON CONFLICT (image_id, container_id, minute) DO UPDATE SET
             ${['requests', 's1xx', 's2xx', 's3xx', 's4xx', 's5xx', 'proxy_errors', 'latency_count', 'bytes_in', 'bytes_out']
    .map((c) => `${c} = LEAST(request_minutes.${c} + EXCLUDED.${c}, ${ROW_COUNT_CAP}::bigint)`).join(', ')},
             latency_ms_sum = request_minutes.latency_ms_sum + EXCLUDED.latency_ms_sum,
             buckets = ARRAY(SELECT LEAST(x.a + x.b, ${ROW_COUNT_CAP}::bigint) FROM unnest(request_minutes.buckets, EXCLUDED.buckets) WITH ORDINALITY AS x(a, b, i) ORDER BY x.i)`,
          [col((r) => r.minute), col((r) => owner.get(r.imageId)!.user_id), col((r) => r.imageId), col((r) => r.containerId),
            col((r) => owner.get(r.imageId)!.app_hostname), col((r) => r.requests), col((r) => r.s[0]), col((r) => r.s[1]), col((r) => r.s[2]),
            col((r) => r.s[3]), col((r) => r.s[4]), col((r) => r.proxyErrors), col((r) => r.latencyMsSum), col((r) => r.latencyCount),
            col((r) => `{${r.buckets.join(',')}}`), col((r) => r.bytesIn), col((r) => r.bytesOut)]);
      }
    }
    await tx.query('UPDATE metering_streams SET last_seq = $2, batches = batches + $3, last_seen = now() WHERE stream = $1', [up.stream, last, applied]);
    if (unattributed) log.debug({ stream: up.stream, unattributed }, 'metered requests of routes that name no image (not billed)');
    return { acked: last, applied, duplicates, unattributed };
  });
}
