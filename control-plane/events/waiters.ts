import pg from 'pg';
import type { Logger } from '../../shared/logging.js';

/** The channel migration 027's trigger notifies, with the event's user id as payload. */
const CHANNEL = 'berth_events';

/** Why a wait ended. */
export type WakeReason = 'event' | 'timeout' | 'closed';

interface Waiter {
  done(reason: WakeReason): void;
}

/**
 * Long polls of GET /api/events, woken when one of their user's events commits on any control
 * plane: one connection LISTENs to the channel migration 027's trigger notifies. While that
 * connection is away (the database restarting), a wait ends after `fallbackMs` at most, so a
 * follower is never later than polling would make it; the connection is made again with backoff.
 *
 * A user holds at most `perUser` waits (each is a request held open): past that, the caller
 * answers at once, as without `wait`.
 */
export class EventWaiters {
  private client: pg.Client | null = null;
  private readonly waiting = new Map<number, Set<Waiter>>();
  private closed = false;
  private retry: NodeJS.Timeout | null = null;
  private backoffMs = 1000;
  private listening = false;
  private warned = false;

  constructor(
    private readonly url: string,
    private readonly log: Logger,
    private readonly o: { perUser: number; fallbackMs: number } = { perUser: 16, fallbackMs: 2000 },
  ) {}

  start(): void {
    void this.connect();
  }

  private async connect(): Promise<void> {
    this.retry = null;
    if (this.closed) return;
    const client = new pg.Client({ connectionString: this.url });
    this.client = client;
    client.on('error', () => this.lost(client));
    client.on('end', () => this.lost(client));
    // (the check this connection sends itself: its payload is no user id)
    const check = `check-${Math.random().toString(36).slice(2)}`;
    let checked: (() => void) | null = null;
    client.on('notification', (n) => {
      if (n.channel !== CHANNEL) return;
      if (n.payload === check) return checked?.();
      const user = Number(n.payload);
      if (Number.isSafeInteger(user)) this.wake(user, 'event');
    });
    try {
      await client.connect();
      await client.query(`LISTEN ${CHANNEL}`);
      // notifications must arrive: behind a pooler in transaction mode (PgBouncer) LISTEN is
      // accepted and nothing ever comes, and held polls would wait their whole time
      const arrived = new Promise<boolean>((resolve) => {
        const timer = setTimeout(() => resolve(false), 5000);
        checked = () => { clearTimeout(timer); resolve(true); };
      });
      await client.query('SELECT pg_notify($1, $2)', [CHANNEL, check]);
      if (!(await arrived)) throw new Error('a notification this connection sent itself never arrived (a connection pooler in transaction mode?)');
    } catch (e) {
      // (said once until it works: tried again with backoff, up to every 30 s)
      if (!this.warned) this.log.warn({ err: (e as Error).message }, 'events: cannot listen for new events; long polls fall back to polling every 2 s');
      this.warned = true;
      this.lost(client);
      return;
    }
    if (this.client !== client) return;
    if (this.warned) this.log.info('events: listening for new events again');
    this.warned = false;
    this.listening = true;
    this.backoffMs = 1000;
    // events committed while nobody listened: every wait looks again
    for (const user of [...this.waiting.keys()]) this.wake(user, 'event');
  }

  private lost(client: pg.Client): void {
    if (this.client !== client) return;
    this.client = null;
    this.listening = false;
    client.end().catch(() => {});
    if (this.closed) return;
    this.retry = setTimeout(() => void this.connect(), this.backoffMs);
    this.retry.unref();
    this.backoffMs = Math.min(30_000, this.backoffMs * 2);
  }

  private wake(user: number, reason: WakeReason): void {
    const set = this.waiting.get(user);
    if (set === undefined) return;
    this.waiting.delete(user);
    for (const w of set) w.done(reason);
  }

  /**
   * Wait until an event of `user` may have committed ('event'), `ms` passed ('timeout'; at most
   * fallbackMs while not listening), or the control plane closes or `signal` aborts ('closed').
   * Null when the user already holds `perUser` waits: answer at once.
   */
  wait(user: number, ms: number, signal: AbortSignal): Promise<WakeReason> | null {
    if (this.closed || signal.aborted) return Promise.resolve('closed');
    let set = this.waiting.get(user);
    if (set !== undefined && set.size >= this.o.perUser) return null;
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
      const timer = setTimeout(() => waiter.done('timeout'), this.listening ? ms : Math.min(ms, this.o.fallbackMs));
      signal.addEventListener('abort', onAbort, { once: true });
      mine.add(waiter);
    });
  }

  /** End every wait now ('closed') and stop listening. */
  async close(): Promise<void> {
    this.closed = true;
    if (this.retry !== null) clearTimeout(this.retry);
    for (const user of [...this.waiting.keys()]) this.wake(user, 'closed');
    const c = this.client;
    this.client = null;
    this.listening = false;
    if (c !== null) await c.end().catch(() => {});
  }
}
