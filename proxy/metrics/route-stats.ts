/** Upstream latency histogram buckets in seconds (Prometheus `le`). */
export const LATENCY_BUCKETS = [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10];

/**
 * Per-route counters. Plain numbers touched in the hot path; formatting happens at scrape time.
 * Kept by route id across table swaps so counters are monotonic.
 */
export class RouteStats {
  requests = 0;
  inflight = 0;
  /** responses by status class: index 1..5 = 1xx..5xx */
  readonly byClass = [0, 0, 0, 0, 0, 0];
  /** proxy-generated errors by reason */
  errors = 0;
  fallbackHits = 0;
  retries = 0;
  /** requests answered 400 as the client's fault (admission refusals, bytes the upstream client refused) */
  refused = 0;
  readonly latencyBuckets: number[] = new Array<number>(LATENCY_BUCKETS.length + 1).fill(0);
  latencySum = 0;
  latencyCount = 0;
  /** in flight (queued included) summed over this second's 100 ms samples (concurrency.ts) */
  concurrencySum = 0;
  /** average concurrency over the last whole second, for the autoscaler */
  concurrency = 0;

  constructor(readonly id: string) {}

  observeLatency(seconds: number): void {
    const b = LATENCY_BUCKETS;
    let i = 0;
    while (i < b.length && seconds > b[i]) i++;
    this.latencyBuckets[i]++;
    this.latencySum += seconds;
    this.latencyCount++;
  }
}

/** Counters for requests that match no route. */
export const globalStats = {
  requests: 0,
  noRoute: 0,
  badRequest: 0,
  notReady: 0,
  inflight: 0,
};
