import { envNumber } from '../env.js';
import { ApiError } from './errors.js';
import { perServer, UserCaps } from './user-caps.js';
import { addressKey, networkKey } from '../auth/rate-limit.js';

/**
 * Streams (log reads and follows, workload live SSE) per user and in all: each holds a socket,
 * timers and, for logs, a backlog and Docker streams for as long as the client stays. `acquire` answers
 * 429 past either cap and returns the release (idempotent), to call when the stream closes.
 *
 * Caps: `BERTH_MAX_STREAMS_PER_USER` (default 20), `BERTH_MAX_STREAMS` (default 500) and
 * `BERTH_MAX_STREAMS_PER_ADDRESS` (default a fifth of the total, at least the per-user cap; behind a
 * reverse proxy, set the control plane's trust-proxy so that the address is the client's).
 */
export class StreamLimits {
  private readonly caps: UserCaps;
  /** per client address too (IPv6 by its /64): accounts made by the dozen from one host would fill the total */
  private readonly byAddress: UserCaps<string>;
  /** and per IPv6 /48, twice an address's share (a /48 is 65,536 addresses here) */
  private readonly byNetwork: UserCaps<string>;

  constructor(readonly maxPerUser: number, readonly maxTotal: number, readonly maxPerAddress = StreamLimits.defaultPerAddress(maxPerUser, maxTotal)) {
    this.caps = new UserCaps(maxPerUser, maxTotal);
    this.byAddress = new UserCaps<string>(maxPerAddress, Number.MAX_SAFE_INTEGER);
    this.byNetwork = new UserCaps<string>(2 * maxPerAddress, Number.MAX_SAFE_INTEGER);
  }

  /** A fifth of the total, at least one user's share. */
  static defaultPerAddress(perUser: number, total: number): number {
    return Math.max(perUser, Math.ceil(total / 5));
  }

  static fromEnv(): StreamLimits {
    const total = envNumber('BERTH_MAX_STREAMS', 500, 1, 1_000_000, true);
    const perUser = envNumber('BERTH_MAX_STREAMS_PER_USER', 20, 1, 100_000, true);
    return new StreamLimits(perUser, total, envNumber('BERTH_MAX_STREAMS_PER_ADDRESS', StreamLimits.defaultPerAddress(perUser, total), 1, 1_000_000, true));
  }

  /** Open streams (of one user, or in all). */
  count(userId?: number): number {
    return this.caps.count(userId);
  }

  /**
   * `ip`: the client's address, counted (IPv6 by its /64) against BERTH_MAX_STREAMS_PER_ADDRESS,
   * and an IPv6 one's /48 against twice that.
   */
  acquire(userId: number, what: string, ip?: string): () => void {
    const releases: (() => void)[] = [];
    const release = () => { for (const r of releases) r(); };
    try {
      if (ip !== undefined) {
        releases.push(this.byAddress.take(addressKey(ip), (_which, held) => new ApiError(429, 'too_many_streams',
          `your address already has ${held} open streams (at most ${this.maxPerAddress}, whatever the account); close one first`)));
        const net = networkKey(ip);
        if (net !== null) {
          releases.push(this.byNetwork.take(net, (_which, held) => new ApiError(429, 'too_many_streams',
            `your network (${net}) already has ${held} open streams (at most ${2 * this.maxPerAddress}); close one first`)));
        }
      }
      releases.push(this.caps.take(userId, (which, held) => new ApiError(429, 'too_many_streams', which === 'user'
        ? `you already have ${held} open ${what} streams (at most ${this.maxPerUser}); close one first`
        : `the control plane has ${held} open streams (at most ${this.maxTotal}); try again later`)));
      return release;
    } catch (e) {
      release();
      throw e;
    }
  }
}

/** One `StreamLimits` per control plane (keyed by its HTTP server, shared by every plugin). */
export const streamLimits = perServer(() => StreamLimits.fromEnv());
