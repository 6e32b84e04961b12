import type { RouteStats } from './route-stats.js';

export const SAMPLE_MS = 100;
const SAMPLES_PER_SECOND = 1000 / SAMPLE_MS;

/**
 * Per-route concurrency for the autoscaler: every 100 ms each route's in-flight count (held
 * requests included) is added up, and every second the average becomes `stats.concurrency`.
 * Off the hot path (a timer over the routes, no work per request). `active()` says whether any
 * route had traffic in the last second, which sets how often the proxy reports.
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
        s.concurrency = s.concurrencySum / SAMPLES_PER_SECOND;
        if (s.concurrencySum > 0) busy = true;
        s.concurrencySum = 0;
      }
    }
    if (last) {
      this.samples = 0;
      this.busy = busy;
    }
  }
}
