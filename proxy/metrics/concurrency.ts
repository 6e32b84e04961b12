import type { RouteStats } from './route-stats.js';

export const SAMPLE_MS = 100;
const SAMPLES_PER_SECOND = 1000 / SAMPLE_MS;
/** The concurrency of a second in which requests were answered in no measurable time: above zero. */
const MIN_BUSY = 0.001;

/**
 * Per-route concurrency for the autoscaler: every 100 ms each route's in-flight count (held
 * requests included) is added up, and every second the average becomes `stats.concurrency` —
 * or, when more, the time the requests answered in that second took (each up to one second: a
 * long one is in the samples already, and its whole life must not land in the second it ends):
 * samples alone miss short requests (4 a second of 1 ms each were sampled as 0, and an app under
 * steady light traffic was scaled to zero), where the time they took says 0.004. Any request
 * answered in the second makes it above zero. Off the hot path (a timer over the routes; per
 * request, one add beside the latency histogram's). `active()` says whether any route had traffic in the last second, which sets how
 * often the proxy reports.
 */
export class ConcurrencySampler {
  private timer: NodeJS.Timeout | null = null;
  private samples = 0;
  private busy = false;

  constructor(private readonly routes: () => Iterable<RouteStats>) {}

  start(): void {
    this.timer = setInterval(() => this.sample(), SAMPLE_MS);
    this.timer.unref();
  }

  stop(): void {
    if (this.timer) clearInterval(this.timer);
    this.timer = null;
  }

  /** Did any route carry traffic during the last whole second? */
  get active(): boolean {
    return this.busy;
  }

  private sample(): void {
    this.samples++;
    const last = this.samples === SAMPLES_PER_SECOND;
    let busy = false;
    for (const s of this.routes()) {
      s.concurrencySum += s.inflight;
      if (last) {
        const answered = s.latencyCount - s.latencyCountSeen;
        const took = s.busySeconds - s.busySecondsSeen;
        s.latencyCountSeen = s.latencyCount;
        s.busySecondsSeen = s.busySeconds;
        s.concurrency = Math.max(s.concurrencySum / SAMPLES_PER_SECOND, took, answered > 0 ? MIN_BUSY : 0);
        if (s.concurrencySum > 0 || answered > 0) busy = true;
        s.concurrencySum = 0;
      }
    }
    if (last) {
      this.samples = 0;
      this.busy = busy;
    }
  }
}
