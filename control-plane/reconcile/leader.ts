import pg from 'pg';
import type { Logger } from '../../shared/logging.js';
import type { Db } from '../db/pool.js';

/** Advisory lock key of the reconcile leader ("brcn"). */
export const RECONCILE_LOCK_KEY = 0x6272636e;

/**
 * Only one control plane per database reconciles and health-checks at a time: the one holding a
 * session-level Postgres advisory lock on a dedicated connection. Others retry every
 * `retryMs`; when the holder's connection dies, Postgres releases the lock and another takes over.
 *
 * The lock connection is a dedicated client (not a pool slot) with TCP keepalive on both ends
 * and a query timeout: a holder whose network vanished loses leadership within seconds on its
 * side, and Postgres drops its session (and the lock) within about 25 s instead of the OS
 * default of hours.
 */
export class Leadership {
  private client: pg.Client | undefined;
  private timer: NodeJS.Timeout | undefined;
  private stopped = true;
  isLeader = false;

  constructor(private readonly db: Db, private readonly log: Logger, private readonly retryMs = 2000, private readonly onChange?: (leader: boolean) => void) {}

  start(): Promise<void> {
    this.stopped = false;
    return this.attempt();
  }

  private async attempt(): Promise<void> {
    if (this.stopped) return;
    try {
      if (!this.client) {
        const c = new pg.Client({
          connectionString: this.db.options.connectionString,
          keepAlive: true,
          keepAliveInitialDelayMillis: 5000,
          query_timeout: 3000,
          connectionTimeoutMillis: 5000,
        });
        c.on('error', () => this.lost('connection error'));
        this.client = c;
        await c.connect();
        // server side: notice a vanished holder in ~10 + 5 × 3 s and release its lock
        await c.query('SET tcp_keepalives_idle = 10; SET tcp_keepalives_interval = 5; SET tcp_keepalives_count = 3');
      }
      if (!this.isLeader) {
        const { rows } = await this.client.query<{ ok: boolean }>('SELECT pg_try_advisory_lock($1) AS ok', [RECONCILE_LOCK_KEY]);
        if (rows[0].ok) {
          this.isLeader = true;
          this.log.info('this control plane now reconciles containers (advisory lock held)');
          this.onChange?.(true);
        }
      } else {
        await this.client.query('SELECT 1'); // keep-alive: notice a dead connection
      }
    } catch (e) {
      this.lost((e as Error).message);
    }
    if (this.stopped) return;
    this.timer = setTimeout(() => void this.attempt(), this.retryMs);
    this.timer.unref();
  }

  private lost(why: string): void {
    const c = this.client;
    this.client = undefined;
    if (c) void c.end().catch(() => {});
    if (this.isLeader) {
      this.isLeader = false;
      this.log.warn({ why }, 'lost the reconcile lock');
      this.onChange?.(false);
    }
  }

  async stop(): Promise<void> {
    this.stopped = true;
    if (this.timer) clearTimeout(this.timer);
    const c = this.client;
    this.client = undefined;
    if (c) {
      if (this.isLeader) await c.query('SELECT pg_advisory_unlock($1)', [RECONCILE_LOCK_KEY]).catch(() => {});
      await c.end().catch(() => {});
    }
    this.isLeader = false;
  }
}
