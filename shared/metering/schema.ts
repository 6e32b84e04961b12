/**
 * The metering contract between proxies and the control plane (imported by both sides).
 *
 * A proxy counts, per route and endpoint, what it forwarded; every second it turns what changed
 * into one *batch* with the next sequence number of its *stream* (a meter id kept in the proxy's
 * data dir, so a restarted proxy continues its stream). Batches are kept (on disk too) until the
 * control plane acknowledges them and resent while it is away; the control plane applies each
 * (stream, seq) once — a batch whose seq is not above the stream's last applied seq is ignored —
 * and answers the last applied seq.
 *
 * `POST /v1/proxy/metering` (bearer proxy token) `{stream, batches:[…]}` → 200 `{stream, acked}`.
 * A sibling of `/v1/proxy/report` (latest-wins concurrency, fire and forget) because the two
 * have different delivery rules; proxies that do not meter simply never call it.
 */

export const METERING_PATH = '/v1/proxy/metering';

/** Latency histogram upper bounds in milliseconds; a last bucket (+Inf) follows. */
export const METER_BUCKETS_MS = [0.5, 1, 2.5, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000] as const;
export const METER_BUCKET_COUNT = METER_BUCKETS_MS.length + 1;

/** What one route/endpoint pair did during a batch. `endpoint` "" = requests no endpoint answered. */
export interface MeterEntry {
  route: string;
  endpoint: string;
  requests: number;
  /** responses by class: [1xx, 2xx, 3xx, 4xx, 5xx] */
  status: number[];
  /** errors the proxy made itself (502/503/504, truncations) — also counted in `status` */
  proxyErrors: number;
  /** latency histogram over METER_BUCKETS_MS (+Inf last), and the sum in ms */
  buckets: number[];
  latencyMsSum: number;
  bytesIn: number;
  bytesOut: number;
}

export interface MeterBatch {
  seq: number;
  /** time window covered (ms since epoch); rows are attributed to the minute of `to` */
  from: number;
  to: number;
  /** how many original batches were merged into this one while the control plane was away */
  merged?: number;
  entries: MeterEntry[];
}

export interface MeterUpload {
  stream: string;
  batches: MeterBatch[];
}

export interface MeterAck {
  stream: string;
  /** the highest seq of this stream the control plane has applied */
  acked: number;
}

/**
 * Sanity bounds of one entry (one route × endpoint in one batch, merged batches included): a
 * million requests a second for eleven days, a petabyte. Past them the upload is refused (400).
 */
export const METER_MAX_COUNT = 1e12;
export const METER_MAX_BYTES = 1e15;
/** A batch may end at most this far after the control plane's clock (400 otherwise). */
export const METER_MAX_FUTURE_MS = 5 * 60_000;

const COUNT = { type: 'integer', minimum: 0, maximum: METER_MAX_COUNT } as const;
const BYTES = { type: 'integer', minimum: 0, maximum: METER_MAX_BYTES } as const;
const TIME = { type: 'integer', minimum: 0, maximum: 8_640_000_000_000_000 } as const;

/** JSON schema of the upload (the control plane validates it; bounded so one body stays small). */
export const meterUploadSchema = {
  type: 'object',
  required: ['stream', 'batches'],
  additionalProperties: false,
  properties: {
    stream: { type: 'string', minLength: 1, maxLength: 200, pattern: '^[A-Za-z0-9._:-]+$' },
    batches: {
      type: 'array', maxItems: 1000,
      items: {
        type: 'object', required: ['seq', 'from', 'to', 'entries'], additionalProperties: false,
        properties: {
          seq: { type: 'integer', minimum: 1, maximum: Number.MAX_SAFE_INTEGER },
          from: TIME, to: TIME, merged: COUNT,
          entries: {
            type: 'array', maxItems: 100_000,
            items: {
              type: 'object',
              required: ['route', 'endpoint', 'requests', 'status', 'proxyErrors', 'buckets', 'latencyMsSum', 'bytesIn', 'bytesOut'],
              additionalProperties: false,
              properties: {
                route: { type: 'string', maxLength: 200 },
                endpoint: { type: 'string', maxLength: 200 },
                requests: COUNT,
                status: { type: 'array', minItems: 5, maxItems: 5, items: COUNT },
                proxyErrors: COUNT,
                buckets: { type: 'array', minItems: METER_BUCKET_COUNT, maxItems: METER_BUCKET_COUNT, items: COUNT },
                latencyMsSum: { type: 'number', minimum: 0, maximum: 1e15 },
                bytesIn: BYTES,
                bytesOut: BYTES,
              },
            },
          },
        },
      },
    },
  },
} as const;

/** Add `b` into `a` (same route/endpoint). */
export function addEntry(a: MeterEntry, b: MeterEntry): void {
  a.requests += b.requests;
  for (let i = 0; i < 5; i++) a.status[i] += b.status[i];
  a.proxyErrors += b.proxyErrors;
  for (let i = 0; i < METER_BUCKET_COUNT; i++) a.buckets[i] += b.buckets[i];
  a.latencyMsSum += b.latencyMsSum;
  a.bytesIn += b.bytesIn;
  a.bytesOut += b.bytesOut;
}

/** Merge batches (oldest first) into one carrying the newest seq. */
export function mergeBatches(batches: MeterBatch[]): MeterBatch {
  const by = new Map<string, MeterEntry>();
  let merged = 0;
  for (const b of batches) {
    merged += b.merged ?? 1;
    for (const e of b.entries) {
      const k = `${e.route}\n${e.endpoint}`;
      const m = by.get(k);
      if (m === undefined) by.set(k, { ...e, status: [...e.status], buckets: [...e.buckets] });
      else addEntry(m, e);
    }
  }
  const last = batches[batches.length - 1];
  return { seq: last.seq, from: batches[0].from, to: last.to, merged, entries: [...by.values()] };
}
