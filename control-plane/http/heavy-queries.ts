import { envNumber } from '../env.js';
import { ApiError } from './errors.js';

/**
 * Reads that sum a user's history in Postgres (metrics, series, billing, invoices) can each hold
 * a pooled connection for seconds on a long history. Without a bound, a few such requests at once
 * from one tenant would hold every connection of the pool, and everyone's API calls, metering
 * ingest and the reconcile loop would wait behind them. So at most
 * `BERTH_HEAVY_QUERIES_PER_USER` (default 2) run at once per user and `BERTH_HEAVY_QUERIES`
 * (default 4, under the pool's 10) in all; past either the answer is 429 `busy` with Retry-After.
 */
export class HeavyQueries {
  private readonly perUser = new Map<number, number>();
  private total = 0;

  constructor(readonly maxPerUser: number, readonly maxTotal: number) {}

  static fromEnv(): HeavyQueries {
    return new HeavyQueries(envNumber('BERTH_HEAVY_QUERIES_PER_USER', 2, 1, 1000, true), envNumber('BERTH_HEAVY_QUERIES', 4, 1, 1000, true));
  }

  /** Running now (of one user, or in all). */
  count(userId?: number): number {
    return userId === undefined ? this.total : this.perUser.get(userId) ?? 0;
  }

  async run<T>(userId: number, fn: () => Promise<T>): Promise<T> {
    const mine = this.perUser.get(userId) ?? 0;
    if (mine >= this.maxPerUser) {
      throw new ApiError(429, 'busy', `${mine} of your metrics or billing reads are still running (at most ${this.maxPerUser} at once); try again when they are done`, { 'retry-after': '1' });
    }
    if (this.total >= this.maxTotal) {
      throw new ApiError(429, 'busy', `the control plane is computing ${this.total} metrics or billing reads (at most ${this.maxTotal} at once); try again in a moment`, { 'retry-after': '1' });
    }
    this.perUser.set(userId, mine + 1);
    this.total++;
    try {
      return await fn();
    } finally {
      this.total--;
      const n = (this.perUser.get(userId) ?? 1) - 1;
      if (n > 0) this.perUser.set(userId, n);
      else this.perUser.delete(userId);
    }
  }
}

/** One per control plane (keyed by its HTTP server, shared by every plugin). */
const byServer = new WeakMap<object, HeavyQueries>();
export function heavyQueries(app: { server: object }): HeavyQueries {
  let l = byServer.get(app.server);
  if (!l) byServer.set(app.server, (l = HeavyQueries.fromEnv()));
  return l;
}

/** A route handler that runs as one of the caller's heavy queries (the route authenticates first). */
export function heavyHandler(app: { server: object }) {
  const limits = heavyQueries(app);
  return <Req extends { user?: { id: number } | null }, Rep, T>(fn: (req: Req, reply: Rep) => Promise<T>) =>
    (req: Req, reply: Rep): Promise<T> => limits.run(req.user!.id, () => fn(req, reply));
}
