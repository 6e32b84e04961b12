import { envNumber } from '../env.js';
import { ApiError } from './errors.js';
import { perServer, UserCaps } from './user-caps.js';

/**
 * Reads that sum a user's history in Postgres (metrics, series, billing, invoices) can each hold
 * a pooled connection for seconds on a long history. Without a bound, a few such requests at once
 * from one tenant would hold every connection of the pool, and everyone's API calls, metering
 * ingest and the reconcile loop would wait behind them. So at most
 * `BERTH_HEAVY_QUERIES_PER_USER` (default 2) run at once per user and `BERTH_HEAVY_QUERIES`
 * (default 4, under the pool's 10) in all; past either the answer is 429 `busy` with Retry-After.
 */
export class HeavyQueries {
  private readonly caps: UserCaps;

  constructor(readonly maxPerUser: number, readonly maxTotal: number) {
    this.caps = new UserCaps(maxPerUser, maxTotal);
  }

  static fromEnv(): HeavyQueries {
    return new HeavyQueries(envNumber('BERTH_HEAVY_QUERIES_PER_USER', 2, 1, 1000, true), envNumber('BERTH_HEAVY_QUERIES', 4, 1, 1000, true));
  }

  /** Running now (of one user, or in all). */
  count(userId?: number): number {
    return this.caps.count(userId);
  }

  async run<T>(userId: number, fn: () => Promise<T>): Promise<T> {
    const release = this.caps.take(userId, (which, held) => new ApiError(429, 'busy', which === 'user'
      ? `${held} of your metrics or billing reads are still running (at most ${this.maxPerUser} at once); try again when they are done`
      : `the control plane is computing ${held} metrics or billing reads (at most ${this.maxTotal} at once); try again in a moment`, { 'retry-after': '1' }));
    try {
      return await fn();
    } finally {
      release();
    }
  }
}

/** One per control plane (keyed by its HTTP server, shared by every plugin). */
export const heavyQueries = perServer(() => HeavyQueries.fromEnv());

/** A route handler that runs as one of the caller's heavy queries (the route authenticates first). */
export function heavyHandler(app: { server: object }) {
  const limits = heavyQueries(app);
  return <Req extends { user?: { id: number } | null }, Rep, T>(fn: (req: Req, reply: Rep) => Promise<T>) =>
    (req: Req, reply: Rep): Promise<T> => limits.run(req.user!.id, () => fn(req, reply));
}
