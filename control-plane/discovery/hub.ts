import type { RouteSpec, RouteTableSpec } from '../../shared/routes/schema.js';
import { applyRouteDeltas } from '../../shared/routes/delta.js';
import { parseRouteDelta, RouteTableError } from '../../shared/routes/validate.js';
import type { Logger } from '../../shared/logging.js';
import type { Db } from '../db/pool.js';
import { buildRoutes, makeTable } from './route-table.js';

export type TableListener = (table: RouteTableSpec) => void;

/**
 * Rows inserted, updated or deleted in the tables the routes are read from (route-table.ts), as
 * Postgres's statistics count them. A session reports its counts after its transaction ends
 * (committed or not; within about a second), so when the count is what it was when a rebuild
 * began, that rebuild saw every write counted: a poll that finds it unchanged has nothing to read.
 */
const WRITES = `SELECT coalesce(sum(n_tup_ins + n_tup_upd + n_tup_del), 0)::text AS n FROM pg_stat_user_tables
  WHERE relid = ANY (ARRAY['apps', 'images', 'containers', 'app_invokers']::regclass[])`;
/**
 * The longest a poll trusts an unchanged count: then it rebuilds anyway (a server whose
 * statistics are off — track_counts — or were reset to the same sum still gets the changes of
 * other control planes, this late).
 */
const FULL_POLL_MS = 30_000;

/**
 * The current route table and its subscribers (proxy watch streams).
 *
 * `schedule()` after any change coalesces a burst into one rebuild `debounceMs` later;
 * `refresh()` does the same and resolves with the version of a table built after the call
 * (graceful stop waits for proxies to acknowledge exactly that version). A rebuild whose routes
 * equal the current ones publishes nothing; one that changed some makes the new table from the
 * current one as a proxy does from a delta (shared/routes/delta.ts): only the changed routes are
 * checked, the others stay the same objects (route-events.ts serialises each once).
 *
 * A poll every `pollMs` picks up changes made by other control planes sharing the database. It
 * rebuilds only when Postgres counts rows written to the tables routes are read from since the
 * last rebuild began (WRITES), or FULL_POLL_MS after the last rebuild whatever the counts say —
 * and waits ten times as long as the last rebuild took when that is longer (10,000 apps take
 * 90–170 ms to read and compare: every second, 10–17 % of this event loop for nothing). Versions
 * come from a Postgres sequence, so they only ever grow, across restarts and across control planes.
 */
export class RouteHub {
  private current: RouteTableSpec | null = null;
  /** the routes the current table was made of, as built (before checking), each as JSON, by id */
  private built = new Map<string, string>();
  private listeners = new Set<TableListener>();
  private timer: NodeJS.Timeout | undefined;
  private poller: NodeJS.Timeout | undefined;
  /** how long the last rebuild took (ms): the poll waits at least ten times as long */
  private lastBuildMs = 0;
  /** WRITES when the last rebuild that succeeded began (null: unknown), and when that was */
  private writes: string | null = null;
  private builtAt = 0;
  /** a scheduled rebuild runs, and changes came while it did (another follows) */
  private building = false;
  private again = false;
  private waiters: ((v: number) => void)[] = [];
  private failed: ((e: unknown) => void)[] = [];
  private chain: Promise<unknown> = Promise.resolve();
  private stopped = false;
  /** when each published version was built (ms since epoch), for latency measurements */
  readonly publishedAt = new Map<number, number>();

  constructor(
    private readonly db: Db,
    private readonly endpointHost: string,
    private readonly log: Logger,
    private readonly debounceMs = 50,
    private readonly pollMs = 1000,
    private readonly hold?: { maxQueue: number; timeoutMs: number },
  ) {}

  async start(): Promise<void> {
    this.stopped = false;
    await this.rebuild().catch((e) => this.log.error({ err: e }, 'initial route table build failed'));
    this.poll();
  }

  /** Look for other control planes' changes: after pollMs, or ten times the last rebuild if longer. */
  private poll(): void {
    if (this.stopped) return;
    this.poller = setTimeout(() => {
      this.poller = undefined;
      void this.changedSince().then((changed) => {
        if (changed) this.schedule();
        this.poll();
      });
    }, Math.max(this.pollMs, 10 * this.lastBuildMs));
    this.poller.unref();
  }

  /** Whether the tables may have changed since the last rebuild began (true when unsure). */
  private async changedSince(): Promise<boolean> {
    if (this.writes === null || Date.now() - this.builtAt >= FULL_POLL_MS) return true;
    return (await this.countWrites()) !== this.writes;
  }

  /** WRITES now; null when it cannot be read (the rebuild, or the poll, goes ahead). */
  private async countWrites(): Promise<string | null> {
    try {
      const { rows } = await this.db.query<{ n: string }>(WRITES);
      return typeof rows[0]?.n === 'string' ? rows[0].n : null;
    } catch {
      return null;
    }
  }

  stop(): void {
    this.stopped = true;
    if (this.timer) clearTimeout(this.timer);
    if (this.poller) clearTimeout(this.poller);
    this.timer = undefined;
    for (const f of this.failed) f(new Error('route hub stopped'));
    this.waiters = [];
    this.failed = [];
  }

  get table(): RouteTableSpec | null {
    return this.current;
  }

  get subscriberCount(): number {
    return this.listeners.size;
  }

  /** Calls `fn` with every new table; returns the unsubscribe function. */
  subscribe(fn: TableListener): () => void {
    this.listeners.add(fn);
    return () => this.listeners.delete(fn);
  }

  /** Rebuild soon (coalesced). */
  schedule(): void {
    if (this.stopped || this.timer) return;
    this.timer = setTimeout(() => {
      this.timer = undefined;
      // one rebuild at a time, and at most one more after it: changes coming faster than a
      // rebuild takes (10,000 apps: 90-170 ms) wait for the next, not each for one of their own
      if (this.building) this.again = true;
      else this.run();
    }, this.debounceMs);
    this.timer.unref();
  }

  /** A scheduled rebuild, for every refresh() waiting; then another if changes came meanwhile. */
  private run(): void {
    const waiters = this.waiters;
    const failed = this.failed;
    this.waiters = [];
    this.failed = [];
    this.building = true;
    this.rebuild().then((v) => waiters.forEach((w) => w(v)), (e) => {
      this.log.error({ err: e }, 'route table rebuild failed');
      failed.forEach((f) => f(e));
    }).finally(() => {
      this.building = false;
      if (!this.again || this.stopped) return;
      this.again = false;
      this.run();
    });
  }

  /** Rebuild (coalesced) and resolve with the version that reflects the database as of now. */
  refresh(): Promise<number> {
    if (this.stopped) return Promise.reject(new Error('route hub stopped'));
    return new Promise<number>((resolve, reject) => {
      this.waiters.push(resolve);
      this.failed.push(reject);
      this.schedule();
    });
  }

  /** Build now; publish when the routes changed. Serialised. Returns the current version. */
  rebuild(): Promise<number> {
    const p = this.chain.then(async () => {
      const t0 = performance.now();
      try {
        // (read first: every write it counts is committed, so the routes read next include it)
        const writes = await this.countWrites();
        const startedAt = Date.now();
        const routes = await buildRoutes(this.db, this.endpointHost, this.hold);
        // each route against its version in the current table: changed (or new), or gone
        const texts = new Map<string, string>();
        const upsert: string[] = [];
        for (const r of routes) {
          const text = JSON.stringify(r);
          texts.set(r.id, text);
          if (this.built.get(r.id) !== text) upsert.push(text);
        }
        const remove: string[] = [];
        for (const id of this.built.keys()) if (!texts.has(id)) remove.push(id);
        const version = this.current && upsert.length === 0 && remove.length === 0 ? this.current.version : await this.publish(routes, texts, upsert, remove);
        this.writes = writes;
        this.builtAt = startedAt;
        return version;
      } finally {
        this.lastBuildMs = performance.now() - t0;
      }
    });
    this.chain = p.catch(() => {});
    return p;
  }

  private async publish(routes: RouteSpec[], texts: Map<string, string>, upsert: string[], remove: string[]): Promise<number> {
    const { rows } = await this.db.query<{ v: number }>(`SELECT nextval('route_table_version_seq')::bigint AS v`);
    const version = rows[0].v;
    const table = this.current === null || upsert.length > routes.length / 2 ? makeTable(version, routes) : this.patch(version, upsert, remove, routes);
    this.current = table;
    this.built = texts;
    this.publishedAt.set(table.version, Date.now());
    if (this.publishedAt.size > 1000) this.publishedAt.delete(this.publishedAt.keys().next().value!);
    this.log.info({ version: table.version, routes: routes.length, changed: upsert.length + remove.length, endpoints: routes.reduce((n, r) => n + r.endpoints.length, 0), proxies: this.listeners.size }, 'route table published');
    for (const l of this.listeners) {
      try { l(table); } catch (e) { this.log.warn({ err: e }, 'route table listener failed'); }
    }
    return table.version;
  }

  /**
   * The current table with the routes that changed (JSON) and without the ids gone, checked as a
   * proxy checks a delta: what changed, against the hosts of what stays. At 10,000 apps a whole
   * table took 40-80 ms of this event loop to copy and check for a change of one route. A table
   * that does not check that way is made whole (the same table, or the error a whole one throws).
   */
  private patch(version: number, upsert: string[], remove: string[], routes: RouteSpec[]): RouteTableSpec {
    const base = this.current!;
    try {
      const delta = parseRouteDelta(`{"base":${base.version},"version":${version},"upsert":[${upsert.join(',')}],"remove":${JSON.stringify(remove)}}`);
      return applyRouteDeltas(base, [delta]);
    } catch (e) {
      if (!(e instanceof RouteTableError)) throw e;
      return makeTable(version, routes);
    }
  }
}
