import { isIPv4, isIPv6 } from 'node:net';
import { LRUCache } from 'lru-cache';

/**
 * Login and signup throttling per client, in memory (one control plane counts alone; several each
 * count separately: a balancer usually keeps a client on one). The limits per account, which a
 * botnet meets on every control plane at once, are counted in the database (shared-limits.ts). Memory is bounded: every table is an LRU with a fixed number of keys, so a flood
 * of distinct addresses or accounts evicts the oldest entries instead of growing the heap.
 */

/** Keys every table holds at most, unless configured. */
export const DEFAULT_MAX_KEYS = 10_000;

/**
 * The source address a limit applies to: IPv4 as is (also when IPv4-mapped, `::ffff:1.2.3.4`),
 * IPv6 by its /64 — one host usually owns a whole /64, so counting single IPv6 addresses would
 * give it 2^64 fresh counters.
 */
export function addressKey(ip: string): string {
  const mapped = /^::ffff:(\d+\.\d+\.\d+\.\d+)$/i.exec(ip);
  if (mapped) return mapped[1];
  if (isIPv4(ip) || !isIPv6(ip)) return ip;
  const [head, tail = ''] = ip.toLowerCase().split('%')[0].split('::');
  const h = head ? head.split(':') : [];
  const t = ip.includes('::') && tail ? tail.split(':') : [];
  const groups = ip.includes('::') ? [...h, ...Array(Math.max(0, 8 - h.length - t.length)).fill('0'), ...t] : h;
  return `${groups.slice(0, 4).map((g) => g.replace(/^0+(?=.)/, '')).join(':')}::/64`;
}

/**
 * The network an IPv6 address belongs to, by its /48 (what one site is usually given: 65,536
 * /64s, each a fresh `addressKey`), or null for IPv4 (one address is what one costs). Limits per
 * network sit on top of those per address, a few times larger.
 */
export function networkKey(ip: string): string | null {
  const a = addressKey(ip);
  if (!a.endsWith('::/64')) return null;
  return `${a.slice(0, -5).split(':').slice(0, 3).join(':')}::/48`;
}

/**
 * How many times the per-address limit a whole IPv6 /48 gets. A trade-off: an attacker with a
 * few /64s in a carrier's /48 can use its allowance up, and its neighbours are then refused for
 * up to a window (correct passwords too: the check comes first), so it is generous.
 */
export const NETWORK_FACTOR = 8;

/** Fixed-window counters keyed by string (an address): `max` per `windowMs`. */
export class RateLimiter {
  private windows: LRUCache<string, { count: number; resetAt: number }>;

  constructor(readonly max: number, private readonly windowMs: number, private readonly now: () => number = Date.now, maxKeys = DEFAULT_MAX_KEYS) {
    this.windows = new LRUCache({ max: maxKeys });
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

  /** Take back one hit (a login that turned out to be right is not an attack); a key back at zero is dropped. */
  unhit(key: string): void {
    const w = this.windows.get(key);
    if (w === undefined) return;
    if (w.count <= 1) this.windows.delete(key);
    else w.count--;
  }

  reset(key: string): void {
    this.windows.delete(key);
  }

  get size(): number {
    return this.windows.size;
  }

  close(): void {
    this.windows.clear();
  }
}

/**
 * Failures per source address (addressKey) and, on top, per IPv6 /48 (networkKey), NETWORK_FACTOR
 * times as many: the two fixed-window limits the login and signup routes check and count together.
 */
export class AddressLimiter {
  private readonly address: RateLimiter;
  private readonly network: RateLimiter;

  constructor(max: number, windowMs: number, maxKeys = DEFAULT_MAX_KEYS, now: () => number = Date.now) {
    this.address = new RateLimiter(max, windowMs, now, maxKeys);
    this.network = new RateLimiter(max * NETWORK_FACTOR, windowMs, now, maxKeys);
  }

  /** Seconds until `ip` may try again (its address or its network over the limit), else 0. */
  retryAfter(ip: string): number {
    const net = networkKey(ip);
    return Math.max(this.address.retryAfter(addressKey(ip)), net === null ? 0 : this.network.retryAfter(net));
  }

  hit(ip: string): void {
    this.address.hit(addressKey(ip));
    const net = networkKey(ip);
    if (net !== null) this.network.hit(net);
  }

  unhit(ip: string): void {
    this.address.unhit(addressKey(ip));
    const net = networkKey(ip);
    if (net !== null) this.network.unhit(net);
  }

  close(): void {
    this.address.close();
    this.network.close();
  }
}

export interface LoginThrottleOptions {
  /** Failures per (account, address) answered without delay (default 5). */
  freeFailures: number;
  /** First delay once they are used up; it doubles with every further failure (default 1 s). */
  baseDelayMs: number;
  /** Longest delay (default 15 min). */
  maxDelayMs: number;
  /** A count is forgotten this long after its delay has passed without a new failure (default 15 min). */
  forgetAfterMs: number;
  /** (account, address) pairs remembered at most (LRU; default 10 000). */
  maxKeys: number;
}

interface Failures { count: number; lastAt: number }

/**
 * Failed logins per (account, source address), with growing delays: after `freeFailures`
 * failures the next attempt must wait `baseDelayMs`, then twice that after each further failure,
 * up to `maxDelayMs`. A success forgets the pair, and so does a quiet `forgetAfterMs`. Keyed by
 * the pair, not the account alone, so an attacker hammering an account from one address slows
 * down only that address: the owner logs in from another one meanwhile.
 *
 * `check` and `fail` run in the same tick before the (slow) password check: parallel attempts
 * cannot all slip through; a success then calls `succeed`.
 */
export class LoginThrottle {
  private failures: LRUCache<string, Failures>;

  constructor(private readonly opts: LoginThrottleOptions, private readonly now: () => number = Date.now) {
    this.failures = new LRUCache({ max: Math.max(1, opts.maxKeys) });
  }

  private key(account: string, address: string): string {
    return `${addressKey(address)}\n${account}`;
  }

  /** Delay owed after `count` failures. */
  delayMs(count: number): number {
    if (count < this.opts.freeFailures) return 0;
    const steps = count - this.opts.freeFailures;
    return Math.min(this.opts.maxDelayMs, this.opts.baseDelayMs * 2 ** Math.min(steps, 40));
  }

  private live(k: string, t: number): Failures | undefined {
    const f = this.failures.get(k);
    if (f && t - f.lastAt > this.delayMs(f.count) + this.opts.forgetAfterMs) {
      this.failures.delete(k);
      return undefined;
    }
    return f;
  }

  /** Milliseconds this pair must still wait, 0 when it may try now. Does not count. */
  check(account: string, address: string): number {
    const t = this.now();
    const f = this.live(this.key(account, address), t);
    if (!f) return 0;
    return Math.max(0, f.lastAt + this.delayMs(f.count) - t);
  }

  /** Count one failed (or, until `succeed`, pending) attempt. */
  fail(account: string, address: string): void {
    const t = this.now();
    const k = this.key(account, address);
    const f = this.live(k, t);
    this.failures.set(k, { count: (f?.count ?? 0) + 1, lastAt: t });
  }

  /** Take back one counted attempt that was never judged (the password check could not run). */
  unfail(account: string, address: string): void {
    const k = this.key(account, address);
    const f = this.failures.get(k);
    if (f === undefined) return;
    if (f.count <= 1) this.failures.delete(k);
    else f.count--;
  }

  succeed(account: string, address: string): void {
    this.failures.delete(this.key(account, address));
  }

  get size(): number {
    return this.failures.size;
  }

  close(): void {
    this.failures.clear();
  }
}
