/** `fn` over `items`, at most `limit` at once (a round's Docker calls). */
export async function eachLimited<T>(items: readonly T[], limit: number, fn: (item: T) => Promise<void>): Promise<void> {
  let next = 0;
  await Promise.all(Array.from({ length: Math.min(Math.max(1, limit), items.length) }, async () => {
    while (next < items.length) await fn(items[next++]);
  }));
}

/**
 * A round of background work every `intervalMs`, counted from the end of the previous round (so
 * rounds never overlap however long one takes), until stopped; stop() waits for a round under
 * way. A round that fails is reported and the next one comes as usual. Timers are unref'd.
 */
export class Periodic {
  private timer: NodeJS.Timeout | null = null;
  private running: Promise<void> | null = null;
  private stopped = false;

  constructor(private readonly intervalMs: number, private readonly round: () => Promise<unknown>, private readonly onError: (e: Error) => void) {}

  /** The first round after `firstMs` (the interval unless given), then every interval. */
  start(firstMs = this.intervalMs): void {
    if (this.stopped) return;
    this.timer = setTimeout(() => {
      this.running = this.round().then(() => {}, (e: Error) => this.onError(e)).finally(() => {
        this.running = null;
        this.start();
      });
    }, firstMs);
    this.timer.unref();
  }

  async stop(): Promise<void> {
    this.stopped = true;
    if (this.timer) clearTimeout(this.timer);
    await this.running;
  }
}
