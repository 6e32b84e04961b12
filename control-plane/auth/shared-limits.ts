import { LRUCache } from 'lru-cache';
import type { Queryable } from '../db/pool.js';
import { addressKey, DEFAULT_MAX_KEYS } from './rate-limit.js';

/**
 * The login limits that must hold across control planes and restarts, kept in the database:
 *
 * - failures per account from clients that never signed in to it (a botnet guessing one
 *   account): with the counts in memory, N control planes behind a balancer gave it N times the
 *   allowance, and a restart gave it a fresh one;
 * - the addresses that signed in to an account (its last KNOWN_ADDRESSES_PER_ACCOUNT, for
 *   `knownForMs`): those are not refused by that limit, and a restart must not forget them while
 *   the account is under attack.
 *
 * Times are the database's (clock_timestamp()), so control planes with skewed clocks agree. The
 * per-address limits and the per-(account, address) backoff stay in memory (rate-limit.ts): they
 * are about one client, which a balancer usually keeps on one control plane, and cost no query.
 *
 * An account at its limit costs the database one read per control plane, then nothing until its
 * window ends (each control plane remembers the refusal, in bounded memory): a botnet hammering a
 * locked account does not hammer the database.
 */

/**
 * Addresses an account remembers (the most recent sign-ins). Only a sign-in adds to the list, so
 * nobody can push the owner's addresses out without the password.
 */
export const KNOWN_ADDRESSES_PER_ACCOUNT = 20;

/**
 * The least the sweep keeps, whatever this control plane's own settings: another control plane on
 * the database may count longer windows or remember addresses longer (a test's `knownForMs: 0`
 * must not wipe the platform's).
 */
const SWEEP_FLOOR_MS = { window: 15 * 60_000, known: 30 * 24 * 3600_000 };

export class SharedLoginLimits {
  /** keys refused here, until when (local clock): answered without the database */
  private refused: LRUCache<string, number>;

  constructor(
    private readonly db: Queryable,
    private readonly o: { max: number; windowMs: number; knownForMs: number; maxKeys?: number },
  ) {
    this.refused = new LRUCache({ max: Math.max(1, o.maxKeys ?? DEFAULT_MAX_KEYS) });
  }

  /**
   * Count one failure against `key` (fixed windows of windowMs). Returns 0 when it was counted,
   * or the seconds until the window ends when `key` is at its limit (then nothing is written).
   * One statement counts and checks, so parallel attempts on any control plane cannot all slip
   * under it.
   */
  async take(key: string): Promise<number> {
    const t = Date.now();
    const until = this.refused.get(key);
    if (until !== undefined && until > t) return Math.max(1, Math.ceil((until - t) / 1000));
    const secs = this.o.windowMs / 1000;
    // (EXCLUDED.window_start: the one "now" of the statement)
    const { rowCount } = await this.db.query(
      `INSERT INTO login_limits AS l (key, window_start, failures) VALUES ($1, clock_timestamp(), 1)
       ON CONFLICT (key) DO UPDATE SET
         window_start = CASE WHEN l.window_start <= EXCLUDED.window_start - make_interval(secs => $2) THEN EXCLUDED.window_start ELSE l.window_start END,
         failures = CASE WHEN l.window_start <= EXCLUDED.window_start - make_interval(secs => $2) THEN 1 ELSE l.failures + 1 END
       WHERE l.window_start <= EXCLUDED.window_start - make_interval(secs => $2) OR l.failures < $3`,
      [key, secs, this.o.max],
    );
    if ((rowCount ?? 0) > 0) return 0;
    const { rows: [w] } = await this.db.query<{ ms: number }>(
      'SELECT extract(epoch FROM window_start + make_interval(secs => $2) - clock_timestamp()) * 1000 AS ms FROM login_limits WHERE key = $1',
      [key, secs],
    );
    const ms = Math.max(0, Number(w?.ms ?? 0));
    this.refused.set(key, t + ms);
    return Math.max(1, Math.ceil(ms / 1000));
  }

  /** Take back one failure (the login was right, or never judged); a key back at zero goes. */
  async giveBack(key: string): Promise<void> {
    this.refused.delete(key);
    const { rows: [r] } = await this.db.query<{ failures: number }>(
      'UPDATE login_limits SET failures = failures - 1 WHERE key = $1 AND failures > 0 RETURNING failures', [key]);
    if (r?.failures === 0) await this.db.query('DELETE FROM login_limits WHERE key = $1 AND failures = 0', [key]);
  }

  /** `address` signed in to `account` now. */
  async remember(account: string, address: string): Promise<void> {
    await this.db.query(
      `INSERT INTO login_known_addresses (account, address, last_at) VALUES ($1, $2, clock_timestamp())
       ON CONFLICT (account, address) DO UPDATE SET last_at = EXCLUDED.last_at`,
      [account, addressKey(address)],
    );
    await this.db.query(
      `DELETE FROM login_known_addresses WHERE account = $1 AND address NOT IN
         (SELECT address FROM login_known_addresses WHERE account = $1 ORDER BY last_at DESC LIMIT $2)`,
      [account, KNOWN_ADDRESSES_PER_ACCOUNT],
    );
  }

  /** Did `address` sign in to `account` within knownForMs? */
  async knows(account: string, address: string): Promise<boolean> {
    const { rowCount } = await this.db.query(
      `SELECT 1 FROM login_known_addresses WHERE account = $1 AND address = $2 AND last_at > clock_timestamp() - make_interval(secs => $3)`,
      [account, addressKey(address), this.o.knownForMs / 1000],
    );
    return (rowCount ?? 0) > 0;
  }

  /** Forget windows that ended and addresses nobody remembers any more (the control plane runs it every few minutes). */
  async sweep(): Promise<void> {
    const window = Math.max(this.o.windowMs, SWEEP_FLOOR_MS.window) / 1000;
    const known = Math.max(this.o.knownForMs, SWEEP_FLOOR_MS.known) / 1000;
    await this.db.query('DELETE FROM login_limits WHERE window_start <= clock_timestamp() - make_interval(secs => $1)', [window]);
    await this.db.query('DELETE FROM login_known_addresses WHERE last_at <= clock_timestamp() - make_interval(secs => $1)', [known]);
  }
}
