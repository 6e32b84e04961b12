import { envNumber } from '../env.js';
import { ApiError } from './errors.js';

/**
 * Streams (log reads and follows, workload live SSE) per user and in all: each holds a socket,
 * timers and, for logs, a backlog and Docker streams for as long as the client stays. `acquire` answers
 * 429 past either cap and returns the release (idempotent), to call when the stream closes.
 *
 * Caps: `BERTH_MAX_STREAMS_PER_USER` (default 20) and `BERTH_MAX_STREAMS` (default 500).
 */
export class StreamLimits {
  private readonly perUser = new Map<number, number>();
  private total = 0;

  constructor(readonly maxPerUser: number, readonly maxTotal: number) {}

  static fromEnv(): StreamLimits {
    return new StreamLimits(envNumber('BERTH_MAX_STREAMS_PER_USER', 20, 1, 100_000, true), envNumber('BERTH_MAX_STREAMS', 500, 1, 1_000_000, true));
  }

  /** Open streams (of one user, or in all). */
  count(userId?: number): number {
    return userId === undefined ? this.total : this.perUser.get(userId) ?? 0;
  }

  acquire(userId: number, what: string): () => void {
    const mine = this.perUser.get(userId) ?? 0;
    if (mine >= this.maxPerUser) {
      throw new ApiError(429, 'too_many_streams', `you already have ${mine} open ${what} streams (at most ${this.maxPerUser}); close one first`);
    }
    if (this.total >= this.maxTotal) {
      throw new ApiError(429, 'too_many_streams', `the control plane has ${this.total} open streams (at most ${this.maxTotal}); try again later`);
    }
    this.perUser.set(userId, mine + 1);
    this.total++;
    let released = false;
    return () => {
      if (released) return;
      released = true;
      this.total--;
      const n = (this.perUser.get(userId) ?? 1) - 1;
      if (n > 0) this.perUser.set(userId, n);
      else this.perUser.delete(userId);
    };
  }
}

/** One `StreamLimits` per control plane (keyed by its HTTP server, shared by every plugin). */
const byServer = new WeakMap<object, StreamLimits>();
export function streamLimits(app: { server: object }): StreamLimits {
  let l = byServer.get(app.server);
  if (!l) byServer.set(app.server, (l = StreamLimits.fromEnv()));
  return l;
}
