import { METER_BUCKETS_MS, METER_BUCKET_COUNT, type MeterEntry } from '../../shared/metering/schema.js';

/**
 * The latency histogram bucket of `ms` (METER_BUCKETS_MS, the last one +Inf). One set of bounds
 * for metering and for Prometheus (route-stats.ts, in seconds): a request's bucket is found once.
 */
export function latencyBucket(ms: number): number {
  const b = METER_BUCKETS_MS;
  let i = 0;
  while (i < b.length && ms > b[i]) i++;
  return i;
}

/**
 * What one route sent one endpoint since the last report, for metering and billing
 * (shared/metering/schema.ts). Plain numbers and one typed array, touched once per request at
 * its end; turned into a plain `MeterEntry` and zeroed only at report time (`take()`).
 * `open` counts exchanges holding this meter, so an idle meter is dropped only when no request
 * can still add to it.
 */
export class EndpointMeter {
  requests = 0;
  c1 = 0; c2 = 0; c3 = 0; c4 = 0; c5 = 0;
  proxyErrors = 0;
  latencyMsSum = 0;
  bytesIn = 0;
  bytesOut = 0;
  open = 0;
  readonly buckets = new Float64Array(METER_BUCKET_COUNT);

  constructor(readonly route: string, readonly endpoint: string) {}

  /** A finished request: its status, whether the proxy made the error, its body bytes. */
  count(status: number, proxyError: boolean, bytesIn: number, bytesOut: number): void {
    this.requests++;
    if (status < 200) this.c1++;
    else if (status < 300) this.c2++;
    else if (status < 400) this.c3++;
    else if (status < 500) this.c4++;
    else this.c5++;
    if (proxyError) this.proxyErrors++;
    this.bytesIn += bytesIn;
    this.bytesOut += bytesOut;
  }

  observe(ms: number, bucket = latencyBucket(ms)): void {
    this.buckets[bucket]++;
    this.latencyMsSum += ms;
  }

  /** Everything counted since the last take, as a plain entry; the counters restart at zero. */
  take(): MeterEntry {
    const e: MeterEntry = {
      route: this.route, endpoint: this.endpoint, requests: this.requests,
      status: [this.c1, this.c2, this.c3, this.c4, this.c5], proxyErrors: this.proxyErrors,
      buckets: Array.from(this.buckets), latencyMsSum: Math.round(this.latencyMsSum * 1000) / 1000,
      bytesIn: this.bytesIn, bytesOut: this.bytesOut,
    };
    this.requests = this.c1 = this.c2 = this.c3 = this.c4 = this.c5 = 0;
    this.proxyErrors = this.latencyMsSum = this.bytesIn = this.bytesOut = 0;
    this.buckets.fill(0);
    return e;
  }

  get idle(): boolean {
    return this.requests === 0 && this.latencyMsSum === 0 && this.bytesIn === 0 && this.bytesOut === 0;
  }
}
