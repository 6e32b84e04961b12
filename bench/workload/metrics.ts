/**
 * What a run measures, in the shape the API returns (the original platform's field names, extended):
 * totals, latency percentiles from an HDR histogram (microsecond resolution, 3 significant digits),
 * status codes, error kinds, and one entry per second.
 */
import * as hdr from 'hdr-histogram-js';

export interface SeriesPoint {
  /** seconds since the start (the second [t, t+1)) */
  t: number;
  /** mean target rate over this second */
  target_rps: number;
  /** responses (any status) and failures completed in this second */
  achieved_rps: number;
  p50_ms: number | null;
  p99_ms: number | null;
  errors: number;
  /** requests sent in this second */
  sent: number;
  late: number;
  dropped: number;
}

export interface WorkloadMetrics {
  /** every scheduled request that was sent or dropped */
  total_requests: number;
  /** answered 1xx–3xx */
  successful_requests: number;
  /** answered 4xx/5xx, failed in transport (reset, timeout, refused), or dropped */
  failed_requests: number;
  /** percent of total_requests that failed */
  error_rate: number;
  /** completed (answered or failed) per second of run time */
  requests_per_second: number;
  /** mean target rate of the pattern */
  target_rps: number;
  avg_latency_ms: number | null;
  min_latency_ms: number | null;
  max_latency_ms: number | null;
  p50_latency_ms: number | null;
  p90_latency_ms: number | null;
  p95_latency_ms: number | null;
  p99_latency_ms: number | null;
  p999_latency_ms: number | null;
  status_code_distribution: Record<string, number>;
  /** failures by kind: timeout, ECONNREFUSED, ECONNRESET, closed, dropped, … (HTTP statuses are in status_code_distribution) */
  errors: Record<string, number>;
  /** sent later than the late threshold after their intended start */
  late_requests: number;
  /** never sent: waited for a connection longer than the timeout, or too many were waiting */
  dropped_requests: number;
  start_time: string;
  end_time: string;
  duration_seconds: number;
  app_hostnames: string[];
  series: SeriesPoint[];
  /** extensions */
  scheduled_requests: number;
  /** latency (from the intended start) at percentiles, for the distribution chart */
  latency_distribution: { percentile: number; ms: number }[];
  connections_opened: number;
  connections_max: number;
  bytes_received: number;
  late_threshold_ms: number;
  /** intended start → sent: how much of each latency is the generator's own timing (timer, queue for a connection) */
  send_delay_p50_ms: number | null;
  send_delay_p99_ms: number | null;
  send_delay_max_ms: number | null;
  stopped: boolean;
}

/** Latencies up to one hour, in microseconds. */
export function newHistogram(): hdr.Histogram {
  return hdr.build({ lowestDiscernibleValue: 1, highestTrackableValue: 3_600_000_000, numberOfSignificantValueDigits: 3, bitBucketSize: 32 });
}

const ms = (us: number) => Math.round(us) / 1000;

export function percentileMs(h: hdr.Histogram, p: number): number | null {
  return h.totalCount === 0 ? null : ms(h.getValueAtPercentile(p));
}

export const DISTRIBUTION_PERCENTILES = [0, 10, 25, 50, 75, 90, 95, 99, 99.5, 99.9, 99.95, 99.99, 99.999, 100];

export function latencySummary(h: hdr.Histogram) {
  const empty = h.totalCount === 0;
  return {
    avg_latency_ms: empty ? null : Math.round(h.mean) / 1000,
    min_latency_ms: empty ? null : ms(h.minNonZeroValue),
    max_latency_ms: empty ? null : ms(h.maxValue),
    p50_latency_ms: percentileMs(h, 50),
    p90_latency_ms: percentileMs(h, 90),
    p95_latency_ms: percentileMs(h, 95),
    p99_latency_ms: percentileMs(h, 99),
    p999_latency_ms: percentileMs(h, 99.9),
    latency_distribution: empty ? [] : DISTRIBUTION_PERCENTILES.map((p) => ({ percentile: p, ms: p === 100 ? ms(h.maxValue) : ms(h.getValueAtPercentile(p)) })),
  };
}
