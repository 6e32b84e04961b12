import { setTimeout as sleep } from 'node:timers/promises';
import pg from 'pg';
import type { Logger } from '../../shared/logging.js';

/** How often the listening connection checks that its own notification still arrives. */
const CHECK_EVERY_MS = 60_000;
/** How long a notification may take to come back. */
const CHECK_WITHIN_MS = 5000;

export interface ListenHandlers {
  /** a notification on the channel (not one of the connection's own checks) */
  notify(payload: string): void;
  /** listening (again): anything notified while it was not was missed */
  up(): void;
  /** not listening any more, until up() */
  down(): void;
}

/** What the log says of it: cannot listen (first failure), listening again, stopped hearing. */
export interface ListenMessages {
  cannot: string;
  again: string;
  stopped: string;
}

/**
 * One connection LISTENing to a channel of Postgres notifications (sent by triggers at commit, on
 * whichever control plane the change was made). It checks every minute that a notification of its
 * own comes back — behind a pooler in transaction mode (PgBouncer) LISTEN is accepted and nothing
 * ever comes; a connection a NAT or failover cut silently neither — and is made again with
 * backoff (up to every 30 s) when lost. `up` and `down` tell the user when to stop and start
 * looking for itself.
 */
export class Listener {
  private client: pg.Client | null = null;
  private closed = false;
  private retry: NodeJS.Timeout | null = null;
  private checker: NodeJS.Timeout | null = null;
  private backoffMs = 1000;
  private warned = false;
  private on = false;
  /** the payload of the check under way, and what its arrival calls */
  private expected = '';
  private arrived: (() => void) | null = null;
  /** the last check asked for, settled either way (null once it has), and the one not started yet */
  private running: Promise<void> | null = null;
  private next: Promise<void> | null = null;

  constructor(
    private readonly url: string,
    private readonly channel: string,
    private readonly log: Logger,
    private readonly messages: ListenMessages,
    private readonly handlers: ListenHandlers,
  ) {}

  /** Listening now (notifications arrive). */
  get listening(): boolean {
    return this.on;
  }

  start(): void {
    void this.connect();
  }

  private async connect(): Promise<void> {
    this.retry = null;
    if (this.closed) return;
    // (as the reconcile leader's connection: a dead peer is noticed in seconds, not TCP's minutes)
    const client = new pg.Client({ connectionString: this.url, keepAlive: true, keepAliveInitialDelayMillis: 5000, connectionTimeoutMillis: 5000, query_timeout: CHECK_WITHIN_MS });
    this.client = client;
    this.expected = '';
    client.on('error', () => this.lost(client));
    client.on('end', () => this.lost(client));
    client.on('notification', (n) => {
      if (n.channel !== this.channel) return;
      const payload = n.payload ?? '';
      if (payload === this.expected) return this.arrived?.();
      this.handlers.notify(payload);
    });
    try {
      await client.connect();
      await client.query(`LISTEN ${this.channel}`);
      await this.selfCheck(client);
    } catch (e) {
      if (this.closed) return;
      // (said once until it works: tried again with backoff)
      if (!this.warned) this.log.warn({ err: (e as Error).message }, this.messages.cannot);
      this.warned = true;
      this.lost(client);
      return;
    }
    if (this.client !== client) return;
    if (this.warned) this.log.info(this.messages.again);
    this.warned = false;
    this.on = true;
    this.backoffMs = 1000;
    this.checker = setInterval(() => void this.check().catch(() => {}), CHECK_EVERY_MS);
    this.checker.unref();
    this.handlers.up();
  }

  /**
   * A notification of its own, sent now, comes back: every notification of a transaction that
   * committed before this call has arrived (Postgres delivers them in commit order). Checks run
   * one at a time; a call while one runs joins the next (its notification is sent after the
   * call). One that fails: the connection is lost (made again), and this rejects.
   */
  check(): Promise<void> {
    if (this.next !== null) return this.next;
    const p = (this.running ?? Promise.resolve()).then(() => {
      this.next = null;
      return this.runCheck();
    });
    this.next = p;
    const settled = p.then(() => {}, () => {});
    this.running = settled;
    void settled.then(() => {
      if (this.running === settled) this.running = null;
    });
    return p;
  }

  private async runCheck(): Promise<void> {
    const client = this.client;
    if (client === null || !this.on) throw new Error('not listening');
    try {
      await this.selfCheck(client);
    } catch (e) {
      if (this.client === client) {
        this.log.warn({ err: (e as Error).message }, this.messages.stopped);
        this.lost(client);
      }
      throw e;
    }
  }

  private async selfCheck(client: pg.Client): Promise<void> {
    const expected = `check-${Math.random().toString(36).slice(2)}`;
    this.expected = expected;
    let timer: NodeJS.Timeout | undefined;
    const arrived = new Promise<boolean>((resolve) => {
      timer = setTimeout(() => resolve(false), CHECK_WITHIN_MS);
      timer.unref();
      this.arrived = () => resolve(true);
    });
    try {
      // (the query is bounded by query_timeout, the notification by the timer: a cut connection
      // answers neither within CHECK_WITHIN_MS)
      await client.query('SELECT pg_notify($1, $2)', [this.channel, expected]);
      if (!(await arrived)) throw new Error('a notification this connection sent itself did not come back (a connection pooler in transaction mode, or a cut connection?)');
    } finally {
      clearTimeout(timer);
      this.arrived = null;
    }
  }

  private lost(client: pg.Client): void {
    if (this.client !== client) return;
    this.client = null;
    this.on = false;
    if (this.checker !== null) clearInterval(this.checker);
    this.checker = null;
    void end(client);
    if (this.closed) return;
    this.handlers.down();
    this.retry = setTimeout(() => void this.connect(), this.backoffMs);
    this.retry.unref();
    this.backoffMs = Math.min(30_000, this.backoffMs * 2);
  }

  /** Stop listening (for good). */
  async close(): Promise<void> {
    this.closed = true;
    if (this.retry !== null) clearTimeout(this.retry);
    if (this.checker !== null) clearInterval(this.checker);
    const c = this.client;
    this.client = null;
    this.on = false;
    if (c !== null) await end(c);
  }
}

/** End a client, at most a second's wait for the database to say goodbye (a dead socket never does). */
async function end(client: pg.Client): Promise<void> {
  const ended = await Promise.race([client.end().then(() => true, () => true), sleep(1000, false, { ref: false })]);
  if (!ended) (client as unknown as { connection?: { stream?: { destroy(): void } } }).connection?.stream?.destroy();
}
