import type { RouteSpec, RouteTableSpec } from '../../shared/routes/schema.js';
import { applyRouteDeltas } from '../../shared/routes/delta.js';
import { parseRouteDelta, RouteTableError } from '../../shared/routes/validate.js';
import type { Logger } from '../../shared/logging.js';
import type { Db } from '../db/pool.js';
import { Listener } from '../db/listen.js';
import { makeTable, readAppRoutes, type Hold } from './route-table.js';

export type TableListener = (table: RouteTableSpec) => void;

/** The channel migration 029's triggers notify, with the hostname of the app whose rows changed. */
const CHANNEL = 'berth_routes';

/**
 * Rows inserted, updated or deleted in the tables the routes are read from (route-table.ts), as
 * Postgres's statistics count them. A session reports its counts after its transaction ends
 * (committed or not; at most once a second, so up to ~10 s later when it then goes idle: Postgres's
 * PGSTAT_MIN_INTERVAL and PGSTAT_IDLE_INTERVAL), so when the count is what it was when a rebuild
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
/** The same while listening (the poll is a net for a notification missed, not the way changes come). */
const LISTENING_FULL_POLL_MS = 10 * 60_000;

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
 * A change reads only the routes of the apps it touched: triggers NOTIFY `berth_routes` with the
 * app's hostname at each commit (migration 029), on whichever control plane, and the hub LISTENs
 * (`listenUrl`; db/listen.ts). `schedule()` with no hosts waits for a notification of the
 * listener's own to come back — those of every transaction committed before come first — and
 * reads every app when it does not. Every app is read at the start, when many changed, when an
 * app whose hostname has `---` (an older one) comes or goes, and while nobody listens. A rebuild
 * that fails is tried again (1 s, doubling to 30 s).
 *
 * A poll every `pollMs` (every FULL_POLL_MS while listening, as a net) picks up changes made by
 * other control planes sharing the database. It reads every app only when Postgres counts rows
 * written to the tables routes are read from since the last such read began (WRITES), or
 * FULL_POLL_MS after it whatever the counts say (LISTENING_FULL_POLL_MS while listening) — and waits ten times as long as the last such
 * read took when that is longer (10,000 apps take 95–215 ms). Versions come from a Postgres
 * sequence, so they only ever grow, across restarts and across control planes.
 */
export class RouteHub {
  private current: RouteTableSpec | null = null;
  /** the routes the current table was made of, as built (before checking), each as JSON, by id */
  private built = new Map<string, string>();
  /** each app read for it (not being deleted, with a revision) and its routes' ids */
  private appRoutes = new Map<string, string[]>();
  /** apps whose routes are to be read again (notified, or named by refresh/schedule) */
  private dirty = new Set<string>();
  /** every app's: at the start, while nobody listens for changes, after a failed read */
  private dirtyAll = true;
  private listener: Listener | null = null;
  private listeners = new Set<TableListener>();
  private timer: NodeJS.Timeout | undefined;
  private poller: NodeJS.Timeout | undefined;
  /** after a failed rebuild: the next try, and how long it waited (doubling to 30 s) */
  private retryTimer: NodeJS.Timeout | undefined;
  private retryMs = 0;
  /** how long the last rebuild of every app took (ms): the poll waits at least ten times as long */
  private lastBuildMs = 0;
  /** WRITES when the last rebuild of every app that succeeded began (null: unknown), and when that was */
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

  /** `listenUrl`: the database to LISTEN on for `berth_routes` (none: every change reads every app) */
  constructor(
    private readonly db: Db,
    private readonly endpointHost: string,
    private readonly log: Logger,
    private readonly debounceMs = 50,
    private readonly pollMs = 1000,
    private readonly hold?: Hold,
    private readonly listenUrl?: string,
  ) {}

  async start(): Promise<void> {
    this.stopped = false;
    if (this.listenUrl !== undefined && this.listener === null) {
      this.listener = new Listener(this.listenUrl, CHANNEL, this.log, {
        cannot: 'routes: cannot listen for route changes; every change reads every app until it can',
        again: 'routes: listening for route changes again',
        stopped: 'routes: the connection listening for route changes stopped hearing them; making it again',
      }, {
        notify: (host) => {
          this.dirty.add(host);
          this.kick();
        },
        // changes made while nobody listened (or while it starts): every app is read again;
        // and until it listens again, the poll looks every pollMs
        up: () => this.everything(),
        down: () => {
          this.everything();
          if (this.poller === undefined) return;
          clearTimeout(this.poller);
          this.poll();
        },
      });
      this.listener.start();
    }
    await this.rebuild().catch((e) => {
      this.log.error({ err: e }, 'initial route table build failed');
      this.retryLater();
    });
    this.poll();
  }

  /** A rebuild failed (the database away?): what it was to read is read again, later each time. */
  private retryLater(): void {
    if (this.stopped || this.retryTimer !== undefined) return;
    this.retryMs = Math.min(30_000, this.retryMs === 0 ? 1000 : this.retryMs * 2);
    this.retryTimer = setTimeout(() => {
      this.retryTimer = undefined;
      this.kick();
    }, this.retryMs);
    this.retryTimer.unref();
  }

  private everything(): void {
    this.dirtyAll = true;
    this.kick();
  }

  /**
   * Look for other control planes' changes, in case a notification was missed: after pollMs (or
   * ten times the last rebuild of every app, if longer); every FULL_POLL_MS while listening.
   */
  private poll(): void {
    if (this.stopped) return;
    this.poller = setTimeout(() => {
      this.poller = undefined;
      void this.changedSince().then((changed) => {
        if (changed) this.everything();
        this.poll();
      });
    }, this.listener?.listening ? FULL_POLL_MS : Math.max(this.pollMs, 10 * this.lastBuildMs));
    this.poller.unref();
  }

  /** Whether the tables may have changed since the last rebuild of every app began (true when unsure). */
  private async changedSince(): Promise<boolean> {
    const trust = this.listener?.listening ? LISTENING_FULL_POLL_MS : FULL_POLL_MS;
    if (this.writes === null || Date.now() - this.builtAt >= trust) return true;
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
    if (this.retryTimer) clearTimeout(this.retryTimer);
    this.timer = undefined;
    this.retryTimer = undefined;
    for (const f of this.failed) f(new Error('route hub stopped'));
    this.waiters = [];
    this.failed = [];
    void this.listener?.close();
    this.listener = null;
  }

  get table(): RouteTableSpec | null {
    return this.current;
  }

  /** Told of changes by Postgres (LISTEN): a change reads its apps' routes only. */
  get listening(): boolean {
    return this.listener?.listening ?? false;
  }

  get subscriberCount(): number {
    return this.listeners.size;
  }

  /** Calls `fn` with every new table; returns the unsubscribe function. */
  subscribe(fn: TableListener): () => void {
    this.listeners.add(fn);
    return () => this.listeners.delete(fn);
  }

  /**
   * Rebuild soon (coalesced) after a change to the database (committed): of the apps `hosts`
   * names, or (none named) of those the change's notifications name — every app while nobody
   * listens, or when a notification of the listener's own, sent after this call, does not come
   * back (then the change's may not have either).
   */
  schedule(hosts?: Iterable<string>): void {
    if (hosts !== undefined) for (const h of hosts) this.dirty.add(h);
    else if (this.listener?.listening) {
      this.listener.check().catch(() => this.everything());
      return;
    } else this.dirtyAll = true;
    this.kick();
  }

  private kick(): void {
    if (this.stopped || this.timer) return;
    this.timer = setTimeout(() => {
      this.timer = undefined;
      // one rebuild at a time, and at most one more after it: changes coming faster than a
      // rebuild takes wait for the next, not each for one of their own
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
    const p = this.chain.then(() => this.build());
    this.chain = p.catch(() => {});
    p.then((v) => {
      this.retryMs = 0;
      waiters.forEach((w) => w(v));
    }, (e) => {
      this.log.error({ err: e }, 'route table rebuild failed');
      failed.forEach((f) => f(e));
      this.retryLater();
    }).finally(() => {
      this.building = false;
      if (!this.again || this.stopped) return;
      this.again = false;
      this.run();
    });
  }

  /**
   * Rebuild (coalesced) and resolve with the version of a table that reflects the database as of
   * now: for the apps `hosts` names (the caller's change), or every app.
   */
  refresh(hosts?: Iterable<string>): Promise<number> {
    if (this.stopped) return Promise.reject(new Error('route hub stopped'));
    if (hosts !== undefined) for (const h of hosts) this.dirty.add(h);
    else this.dirtyAll = true;
    return new Promise<number>((resolve, reject) => {
      this.waiters.push(resolve);
      this.failed.push(reject);
      this.kick();
    });
  }

  /** Read every app's routes now; publish when they changed. Serialised. Returns the current version. */
  rebuild(): Promise<number> {
    const p = this.chain.then(() => this.readAll());
    this.chain = p.catch(() => {});
    return p;
  }

  /** What is dirty: the apps named (or every app when many are, or nobody listened), read again. */
  private async build(): Promise<number> {
    if (this.dirtyAll || this.current === null || this.dirty.size > 16 + this.appRoutes.size / 4) return this.readAll();
    const hosts = [...this.dirty];
    this.dirty = new Set();
    if (hosts.length === 0) return this.current.version;
    try {
      return await this.readSome(hosts);
    } catch (e) {
      // (read again next time: not lost)
      for (const h of hosts) this.dirty.add(h);
      throw e;
    }
  }

  private async readAll(): Promise<number> {
    // what was dirty is read now (notifications that come while it reads mark it again)
    this.dirtyAll = false;
    this.dirty = new Set();
    const t0 = performance.now();
    try {
      // (read first: every write it counts is committed, so the routes read next include it)
      const writes = await this.countWrites();
      const startedAt = Date.now();
      const byApp = await readAppRoutes(this.db, this.endpointHost, this.hold);
      const { texts, upsert, appRoutes } = this.compare(byApp);
      const remove: string[] = [];
      for (const id of this.built.keys()) if (!texts.has(id)) remove.push(id);
      const version = this.current && upsert.length === 0 && remove.length === 0 ? this.current.version : await this.publish(upsert, remove, [...byApp.values()].flat());
      this.built = texts;
      this.appRoutes = appRoutes;
      this.writes = writes;
      this.builtAt = startedAt;
      return version;
    } catch (e) {
      this.dirtyAll = true;
      throw e;
    } finally {
      this.lastBuildMs = performance.now() - t0;
    }
  }

  /**
   * The routes of the apps `hosts` names, read again (an app that came: its routes added; one
   * that went: its routes removed). Other apps' routes depend on which apps exist only through
   * their tag hosts (`{tag}---{host}`), which an app hostname takes from them (route-table.ts):
   * an app hostname without `---` (the upload refuses it in new ones) is never one; one that came
   * or went with it — an older app's — has every app read.
   */
  private async readSome(hosts: string[]): Promise<number> {
    const byApp = await readAppRoutes(this.db, this.endpointHost, this.hold, { hosts, appHosts: new Set(this.appRoutes.keys()) });
    for (const h of hosts) if (byApp.has(h) !== this.appRoutes.has(h) && h.includes('---')) return this.readAll();
    const { texts, upsert, appRoutes } = this.compare(byApp);
    const remove: string[] = [];
    for (const host of byApp.keys()) for (const id of this.appRoutes.get(host) ?? []) if (!texts.has(id)) remove.push(id);
    // (apps gone: deleted, being deleted, or without a revision any more)
    const gone = hosts.filter((h) => !byApp.has(h) && this.appRoutes.has(h));
    for (const h of gone) for (const id of this.appRoutes.get(h)!) remove.push(id);
    let version = this.current!.version;
    if (upsert.length > 0 || remove.length > 0) {
      try {
        version = await this.publish(upsert, remove, null);
      } catch (e) {
        // (a change that does not fit the table this way: made whole, or the error a whole one gives)
        if (e instanceof RouteTableError) return this.readAll();
        throw e;
      }
    }
    for (const id of remove) this.built.delete(id);
    for (const [id, text] of texts) this.built.set(id, text);
    for (const [host, ids] of appRoutes) this.appRoutes.set(host, ids);
    for (const h of gone) this.appRoutes.delete(h);
    return version;
  }

  /** Each route read, as JSON, against the current table's: those changed (or new), and each app's route ids. */
  private compare(byApp: Map<string, RouteSpec[]>): { texts: Map<string, string>; upsert: string[]; appRoutes: Map<string, string[]> } {
    const texts = new Map<string, string>();
    const upsert: string[] = [];
    const appRoutes = new Map<string, string[]>();
    for (const [host, rs] of byApp) {
      const ids: string[] = [];
      for (const r of rs) {
        const text = JSON.stringify(r);
        texts.set(r.id, text);
        ids.push(r.id);
        if (this.built.get(r.id) !== text) upsert.push(text);
      }
      appRoutes.set(host, ids);
    }
    return { texts, upsert, appRoutes };
  }

  /**
   * The new table: made from the current one by the routes that changed (JSON) and the ids gone,
   * checked as a proxy checks a delta — what changed, against the hosts of what stays (at 10,000
   * apps a whole table took 40–80 ms of this event loop to copy and check for a change of one
   * route) — or whole from `routes` (every app's) when there is no table yet or most changed. A
   * change that does not check that way is made whole from `routes` (the same table, or the error
   * a whole one throws); without `routes`, its RouteTableError is thrown.
   */
  private async publish(upsert: string[], remove: string[], routes: RouteSpec[] | null): Promise<number> {
    const { rows } = await this.db.query<{ v: number }>(`SELECT nextval('route_table_version_seq')::bigint AS v`);
    const version = rows[0].v;
    const base = this.current;
    let table: RouteTableSpec;
    if (routes !== null && (base === null || upsert.length > routes.length / 2)) table = makeTable(version, routes);
    else {
      try {
        const delta = parseRouteDelta(`{"base":${base!.version},"version":${version},"upsert":[${upsert.join(',')}],"remove":${JSON.stringify(remove)}}`);
        table = applyRouteDeltas(base!, [delta]);
      } catch (e) {
        if (!(e instanceof RouteTableError) || routes === null) throw e;
        table = makeTable(version, routes);
      }
    }
    this.current = table;
    this.publishedAt.set(table.version, Date.now());
    if (this.publishedAt.size > 1000) this.publishedAt.delete(this.publishedAt.keys().next().value!);
    let endpoints = 0;
    for (const r of table.routes) endpoints += r.endpoints.length;
    this.log.info({ version: table.version, routes: table.routes.length, changed: upsert.length + remove.length, endpoints, proxies: this.listeners.size }, 'route table published');
    for (const l of this.listeners) {
      try { l(table); } catch (e) { this.log.warn({ err: e }, 'route table listener failed'); }
    }
    return table.version;
  }
}
