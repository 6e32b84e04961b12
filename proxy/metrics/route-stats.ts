import type { Target } from '../balancing/target.js';
import type { Endpoint } from '../upstream/endpoint.js';
import { METER_BUCKETS_MS, type MeterEntry } from '../../shared/metering/schema.js';
import { EndpointMeter, latencyBucket } from './meter.js';

/** Upstream latency histogram buckets in seconds (Prometheus `le`): the metering bounds (meter.ts). */
export const LATENCY_BUCKETS = METER_BUCKETS_MS.map((ms) => ms / 1000);

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
  /** pipelined requests sent again, alone: the answer in front would have held them up, or the connection ended first */
  resent = 0;
  /** requests sent again after their connection closed under them: a reused keep-alive connection before any answer (the keep-alive race), or any before they went out */
  staleResent = 0;
  /**
   * A pipelining route's GET answers: a moving average (1/8 per answer) of their announced length,
   * counting those that would have the requests behind them resent (unknown length, chunked,
   * 204/304) as 64 KiB. Its requests are pipelined only while it is small (exchange.ts).
   */
  answerBytes = 0;
  /**
   * A pipelining route's requests go alone until then (clock ms): an answer of its stalled a batch
   * (not whole 500 ms after its turn began; upstream/connection.ts PIPELINE_PAUSE_MS).
   */
  pipelinePausedUntil = 0;
  /** requests answered 400 as the client's fault (admission refusals, bytes the upstream client refused) */
  refused = 0;
  readonly latencyBuckets: number[] = new Array<number>(LATENCY_BUCKETS.length + 1).fill(0);
  latencySum = 0;
  latencyCount = 0;
  /** in flight (queued included) summed over this second's 100 ms samples (concurrency.ts) */
  concurrencySum = 0;
  /** average concurrency over the last whole second, for the autoscaler */
  concurrency = 0;
  /** seconds its answered requests took, each counted up to one second (concurrency.ts: a long one must not count its whole life in the second it ends) */
  busySeconds = 0;
  /** busySeconds and latencyCount when concurrency was last computed (concurrency.ts) */
  busySecondsSeen = 0;
  latencyCountSeen = 0;

  /** metering per endpoint (meter.ts), by the endpoint object (pools are keyed by address) */
  readonly meters = new Map<Endpoint, EndpointMeter>();
  /** requests answered without an endpoint (no capacity, queue timeouts, refusals); made on first use (a 10,000-route table must not allocate 10,000 up front) */
  private unroutedMeter: EndpointMeter | null = null;
  /** meters replaced while they still held counts (an address taken over by another endpoint id) */
  private retired: EndpointMeter[] = [];
  private refusedMetered = 0;

  constructor(readonly id: string) {}

  get unrouted(): EndpointMeter {
    return (this.unroutedMeter ??= new EndpointMeter(this.id, ''));
  }

  /** The meter of this route's requests to `t` (one Map lookup by object; allocates only on first use). */
  meterFor(t: Target): EndpointMeter {
    let m = this.meters.get(t.endpoint);
    if (m === undefined || m.endpoint !== t.id) {
      if (m !== undefined) this.retired.push(m);
      m = new EndpointMeter(this.id, t.id);
      this.meters.set(t.endpoint, m);
    }
    return m;
  }

  /**
   * Report time: what every meter counted since the last call, as plain entries (zeroed after);
   * client refusals counted by `refused` join the route's `unrouted` entry as 4xx. Meters idle a
   * whole interval and held by no request are dropped.
   */
  drainMeters(out: MeterEntry[]): void {
    const refused = this.refused - this.refusedMetered;
    if (refused > 0) {
      this.refusedMetered = this.refused;
      this.unrouted.requests += refused;
      this.unrouted.c4 += refused;
    }
    const u = this.unroutedMeter;
    if (u !== null && !u.idle) out.push(u.take());
    for (const [ep, m] of this.meters) {
      if (!m.idle) out.push(m.take());
      else if (m.open <= 0) this.meters.delete(ep);
    }
    if (this.retired.length > 0) {
      const keep: EndpointMeter[] = [];
      for (const m of this.retired) {
        if (!m.idle) out.push(m.take());
        if (m.open > 0) keep.push(m);
      }
      this.retired = keep;
    }
  }

  /**
   * Nothing holds these counters: no request in flight, no exchange holding a meter and, when
   * `metered`, nothing counted that the next report would still carry (RouteState.prune).
   */
  settled(metered: boolean): boolean {
    if (this.inflight > 0) return false;
    const u = this.unroutedMeter;
    if (u !== null && (u.open > 0 || (metered && !u.idle))) return false;
    if (metered && this.refused !== this.refusedMetered) return false;
    for (const m of this.meters.values()) if (m.open > 0 || (metered && !m.idle)) return false;
    for (const m of this.retired) if (m.open > 0 || (metered && !m.idle)) return false;
    return true;
  }

  observeLatency(ms: number, bucket = latencyBucket(ms)): void {
    this.latencyBuckets[bucket]++;
    this.latencySum += ms / 1000;
    this.busySeconds += ms < 1000 ? ms / 1000 : 1;
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
