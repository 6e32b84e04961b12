import { METER_BUCKETS_MS } from '../../shared/metering/schema.js';

/**
 * The q-quantile (0 < q < 1) of a latency histogram over METER_BUCKETS_MS (+Inf last), linearly
 * interpolated inside its bucket (Prometheus' histogram_quantile); the +Inf bucket answers the
 * largest finite bound. null when the histogram is empty.
 */
export function quantileMs(buckets: number[], q: number): number | null {
  let total = 0;
  for (const b of buckets) total += b;
  if (total === 0) return null;
  const rank = q * total;
  let acc = 0;
  for (let i = 0; i < buckets.length; i++) {
    const prev = acc;
    acc += buckets[i];
    if (acc >= rank && buckets[i] > 0) {
      if (i >= METER_BUCKETS_MS.length) return METER_BUCKETS_MS[METER_BUCKETS_MS.length - 1];
      const lo = i === 0 ? 0 : METER_BUCKETS_MS[i - 1];
      const hi = METER_BUCKETS_MS[i];
      return round3(lo + (hi - lo) * ((rank - prev) / buckets[i]));
    }
  }
  return METER_BUCKETS_MS[METER_BUCKETS_MS.length - 1];
}

export const round3 = (n: number) => Math.round(n * 1000) / 1000;

export function addBuckets(into: number[], from: (number | string)[]): void {
  for (let i = 0; i < from.length; i++) into[i] = (into[i] ?? 0) + Number(from[i]);
}
