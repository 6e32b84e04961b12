import { envNumber } from '../env.js';
import { ApiError } from './errors.js';
import { perServer, UserCaps } from './user-caps.js';

/**
 * Streams (log reads and follows, workload live SSE) per user and in all: each holds a socket,
 * timers and, for logs, a backlog and Docker streams for as long as the client stays. `acquire` answers
 * 429 past either cap and returns the release (idempotent), to call when the stream closes.
 *
 * Caps: `BERTH_MAX_STREAMS_PER_USER` (default 20) and `BERTH_MAX_STREAMS` (default 500).
 */
export class StreamLimits {
  private readonly caps: UserCaps;

  constructor(readonly maxPerUser: number, readonly maxTotal: number) {
    this.caps = new UserCaps(maxPerUser, maxTotal);
  }

  static fromEnv(): StreamLimits {
    return new StreamLimits(envNumber('BERTH_MAX_STREAMS_PER_USER', 20, 1, 100_000, true), envNumber('BERTH_MAX_STREAMS', 500, 1, 1_000_000, true));
  }

  /** Open streams (of one user, or in all). */
  count(userId?: number): number {
    return this.caps.count(userId);
  }

  acquire(userId: number, what: string): () => void {
    return this.caps.take(userId, (which, held) => new ApiError(429, 'too_many_streams', which === 'user'
      ? `you already have ${held} open ${what} streams (at most ${this.maxPerUser}); close one first`
      : `the control plane has ${held} open streams (at most ${this.maxTotal}); try again later`));
  }
}

/** One `StreamLimits` per control plane (keyed by its HTTP server, shared by every plugin). */
export const streamLimits = perServer(() => StreamLimits.fromEnv());
