/**
 * Fixed-window counters in memory, keyed by string (an IP, an account). Small and enough for one
 * control plane; several control planes each count separately.
 */
export class RateLimiter {
  private windows = new Map<string, { count: number; resetAt: number }>();
  private sweep: NodeJS.Timeout;

  constructor(private readonly max: number, private readonly windowMs: number, private readonly now: () => number = Date.now) {
    this.sweep = setInterval(() => this.prune(), Math.max(windowMs, 1000));
    this.sweep.unref();
  }

  /** Seconds until `key` may try again, or 0 when it is under the limit. Does not count. */
  retryAfter(key: string): number {
    const w = this.windows.get(key);
    const t = this.now();
    if (!w || w.resetAt <= t || w.count < this.max) return 0;
    return Math.max(1, Math.ceil((w.resetAt - t) / 1000));
  }

  hit(key: string): void {
    const t = this.now();
    const w = this.windows.get(key);
    if (!w || w.resetAt <= t) this.windows.set(key, { count: 1, resetAt: t + this.windowMs });
    else w.count++;
  }

  reset(key: string): void {
    this.windows.delete(key);
  }

  close(): void {
    clearInterval(this.sweep);
  }

  private prune(): void {
    const t = this.now();
    for (const [k, w] of this.windows) if (w.resetAt <= t) this.windows.delete(k);
  }
}
