import { setTimeout as sleep } from 'node:timers/promises';
import { LRUCache } from 'lru-cache';
import pg from 'pg';
import type { Logger } from '../../shared/logging.js';

/** The channel migration 027's trigger notifies, with the event's user id as payload. */
const CHANNEL = 'berth_events';
/** How often the listening connection checks that its own notification still arrives. */
const CHECK_EVERY_MS = 60_000;
/** How long a notification may take to come back. */
const CHECK_WITHIN_MS = 5000;

/** Why a wait ended. */
export type WakeReason = 'event' | 'timeout' | 'closed';

interface Waiter {
  done(reason: WakeReason): void;
}

/**
 * Long polls of GET /api/events, woken when one of their user's events commits on any control
 * plane: one connection LISTENs to the channel migration 027's trigger notifies. While that
 * connection is away (the database restarting, a connection cut silently: it checks every minute
 * that a notification of its own comes back), a wait ends after `fallbackMs` at most, so a
 * follower is never much later than polling would make it; the connection is made again with
 * backoff.
 *
 * A poll takes `mark(user)` before it lists, and waits from that mark: a notification that came
 * in between (while it listed) ends the wait at once instead of being missed.
 */
export class EventWaiters {
  private client: pg.Client | null = null;
  private readonly waiting = new Map<number, Set<Waiter>>();
  /** per user, the sequence number of their last notification (users notified lately) */
  private readonly notified = new LRUCache<number, number>({ max: 10_000 });
  /** the sequence number of the last time every wait had to look again (listening began or stopped) */
  private everyone = 0;
  private seq = 0;
  private closed = false;
  private retry: NodeJS.Timeout | null = null;
  private checker: NodeJS.Timeout | null = null;
  private backoffMs = 1000;
  private listening = false;
  private warned = false;

  constructor(
    private readonly url: string,
    private readonly log: Logger,
    private readonly fallbackMs = 2000,
  ) {}

  start(): void {
    void this.connect();
  }

  private async connect(): Promise<void> {
    this.retry = null;
    if (this.closed) return;
    // (as the reconcile leader's connection: a dead peer is noticed in seconds, not TCP's minutes)
    const client = new pg.Client({ connectionString: this.url, keepAlive: true, keepAliveInitialDelayMillis: 5000, connectionTimeoutMillis: 5000, query_timeout: CHECK_WITHIN_MS });
    this.client = client;
    client.on('error', () => this.lost(client));
    client.on('end', () => this.lost(client));
    // (the checks this connection sends itself: their payload is no user id)
    let expected = '';
    let checked: (() => void) | null = null;
    client.on('notification', (n) => {
      if (n.channel !== CHANNEL) return;
      if (n.payload === expected) return checked?.();
      const user = Number(n.payload);
      if (Number.isSafeInteger(user)) this.wake(user, 'event');
    });
    // notifications must arrive: behind a pooler in transaction mode (PgBouncer) LISTEN is
    // accepted and nothing ever comes; a connection a NAT or failover cut silently neither
    const selfCheck = async (): Promise<void> => {
      expected = `check-${Math.random().toString(36).slice(2)}`;
      let timer: NodeJS.Timeout | undefined;
      const arrived = new Promise<boolean>((resolve) => {
        timer = setTimeout(() => resolve(false), CHECK_WITHIN_MS);
        timer.unref();
        checked = () => resolve(true);
      });
      try {
        // (the query is bounded by query_timeout, the notification by the timer: a cut connection
        // answers neither within CHECK_WITHIN_MS)
        await client.query('SELECT pg_notify($1, $2)', [CHANNEL, expected]);
        if (!(await arrived)) throw new Error('a notification this connection sent itself did not come back (a connection pooler in transaction mode, or a cut connection?)');
      } finally {
        clearTimeout(timer);
        checked = null;
      }
    };
    try {
      await client.connect();
      await client.query(`LISTEN ${CHANNEL}`);
      await selfCheck();
    } catch (e) {
      if (this.closed) return;
      // (said once until it works: tried again with backoff, up to every 30 s)
      if (!this.warned) this.log.warn({ err: (e as Error).message }, 'events: cannot listen for new events; long polls fall back to looking every 2 s');
      this.warned = true;
      this.lost(client);
      return;
    }
    if (this.client !== client) return;
    if (this.warned) this.log.info('events: listening for new events again');
    this.warned = false;
    this.listening = true;
    this.backoffMs = 1000;
    this.checker = setInterval(() => {
      selfCheck().catch((e: Error) => {
        if (this.client !== client) return;
        this.log.warn({ err: e.message }, 'events: the connection listening for new events stopped hearing them; making it again');
        this.lost(client);
      });
    }, CHECK_EVERY_MS);
    this.checker.unref();
    // events committed while nobody listened: every wait looks again
    this.wakeAll();
  }

  private lost(client: pg.Client): void {
    if (this.client !== client) return;
    this.client = null;
    this.listening = false;
    if (this.checker !== null) clearInterval(this.checker);
    this.checker = null;
    void end(client);
    if (this.closed) return;
    // waits that counted on notifications look again now, then every fallbackMs
    this.wakeAll();
    this.retry = setTimeout(() => void this.connect(), this.backoffMs);
    this.retry.unref();
    this.backoffMs = Math.min(30_000, this.backoffMs * 2);
  }

  private wakeAll(): void {
    // (a poll between its mark and its wait looks again too)
    this.everyone = ++this.seq;
    for (const user of [...this.waiting.keys()]) this.wake(user, 'event');
  }

  private wake(user: number, reason: WakeReason): void {
    if (reason === 'event') this.notified.set(user, ++this.seq);
    const set = this.waiting.get(user);
    if (set === undefined) return;
    this.waiting.delete(user);
    for (const w of set) w.done(reason);
  }

  /** Where `user`'s notifications stand: pass it to wait() to hear of any that come after it. */
  mark(user: number): number {
    const own = this.notified.get(user) ?? 0;
    return own > this.everyone ? own : this.everyone;
  }

  /**
   * Wait until an event of `user` may have committed since `since` (a mark(); 'event': at once
   * when one already has), `ms` passed ('timeout'; at most fallbackMs while not listening), or
   * the control plane closes or `signal` aborts ('closed').
   */
  wait(user: number, ms: number, signal: AbortSignal, since: number): Promise<WakeReason> {
    if (this.closed || signal.aborted) return Promise.resolve('closed');
    if (this.mark(user) > since) return Promise.resolve('event');
    let set = this.waiting.get(user);
    if (set === undefined) this.waiting.set(user, (set = new Set()));
    const mine = set;
    return new Promise<WakeReason>((resolve) => {
      const waiter: Waiter = {
        done: (reason) => {
          clearTimeout(timer);
          signal.removeEventListener('abort', onAbort);
          mine.delete(waiter);
          if (mine.size === 0 && this.waiting.get(user) === mine) this.waiting.delete(user);
          resolve(reason);
        },
      };
      const onAbort = () => waiter.done('closed');
      const timer = setTimeout(() => waiter.done('timeout'), this.listening ? ms : Math.min(ms, this.fallbackMs));
      signal.addEventListener('abort', onAbort, { once: true });
      mine.add(waiter);
    });
  }

  /** End every wait now ('closed') and stop listening. */
  async close(): Promise<void> {
    this.closed = true;
    if (this.retry !== null) clearTimeout(this.retry);
    if (this.checker !== null) clearInterval(this.checker);
    for (const user of [...this.waiting.keys()]) this.wake(user, 'closed');
    const c = this.client;
    this.client = null;
    this.listening = false;
    if (c !== null) await end(c);
  }
}

/** End a client, at most a second's wait for the database to say goodbye (a dead socket never does). */
async function end(client: pg.Client): Promise<void> {
  const ended = await Promise.race([client.end().then(() => true, () => true), sleep(1000, false, { ref: false })]);
  if (!ended) (client as unknown as { connection?: { stream?: { destroy(): void } } }).connection?.stream?.destroy();
}
