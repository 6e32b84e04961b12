import { existsSync } from 'node:fs';
import { freePort } from '../../shared/net.js';
import { fileURLToPath } from 'node:url';
import { Worker } from 'node:worker_threads';
import type { RouteDelta, RouteTableSpec } from '../../shared/routes/schema.js';
import type { MeterEntry } from '../../shared/metering/schema.js';
import { merge, type StatsSnapshot } from '../metrics/prometheus.js';
import type { ReportCounts } from '../metrics/report-counts.js';
import type { TlsConfig } from '../server/tls.js';
import type { Logger } from '../../shared/logging.js';

export interface WorkerInit {
  host: string;
  port: number;
  accessLogRate: number;
  /** the proxy's log level (its logger's: `silent` when the caller's is) */
  logLevel?: string;
  upstreamConnections: number;
  ownNames?: readonly string[];
  /** the main thread can wake scaled-to-zero routes (it talks to a control plane) */
  canActivate?: boolean;
  /** an HTTPS listener too, on every worker (SO_REUSEPORT, as the plain one) */
  tls?: { host: string; port: number; config: TlsConfig; redirect?: boolean };
  /** served before it listens (a worker started again in a dead one's place) */
  table?: RouteTableSpec;
  /** ACME HTTP-01 answers of an order under way, by token (the same) */
  challenges?: Array<[string, string]>;
}

type Msg =
  | { type: 'listening'; port: number; tlsPort?: number }
  | { type: 'error'; message: string }
  | { type: 'applied'; seq: number; version: number; routes: number; ms: number; error?: string }
  | { type: 'stats'; seq: number; stats: StatsSnapshot }
  | { type: 'report-counts'; seq: number; counts: ReportCounts }
  | { type: 'meters'; seq: number; entries: MeterEntry[] }
  | { type: 'closed'; entries?: MeterEntry[] }
  | { type: 'tls-reloaded'; seq: number; error?: string }
  | { type: 'activate'; route: string }
  | { type: 'acme-set'; seq: number }
  | { type: 'fatal'; error: string; entries?: MeterEntry[]; stats?: StatsSnapshot };

/**
 * Apply `next` on threads 0..n-1 at once; when any fails, the threads that took it apply
 * `previous` again, so they never serve different configurations unless that fails too. Answers
 * null, or the first failure and where the threads stand.
 */
export async function allOrNone<C>(n: number, apply: (i: number, c: C) => Promise<string | undefined>, next: C, previous: C): Promise<string | null> {
  const res = await Promise.all(Array.from({ length: n }, (_, i) => apply(i, next)));
  const failed = res.find((e) => e !== undefined);
  if (failed === undefined) return null;
  const took = res.flatMap((e, i) => (e === undefined ? [i] : []));
  const back = await Promise.all(took.map((i) => apply(i, previous)));
  const stuck = back.filter((e) => e !== undefined).length;
  return stuck === 0
    ? `${failed} (every thread kept or went back to the certificates in use)`
    : `${failed}; ${stuck} of ${n} threads could not go back and serve the new certificates, the others the ones in use: reload again`;
}

/** How soon a worker that died is started again: at once, unless it lived less than this. */
const SHORT_LIFE_MS = 10_000;
const RESPAWN_MAX_DELAY_MS = 30_000;

/**
 * N data planes on worker threads sharing one port (uWS listens with SO_REUSEPORT, the kernel
 * spreads connections). The main thread owns the table and posts it to every worker.
 *
 * A worker that dies of an exception nothing caught is started again in its place, as nginx's
 * master starts a dead worker process again: the others go on serving, the new one takes the
 * table served now before it listens, and one that keeps dying soon after its start waits longer
 * each time (at once, then 1 s doubling to 30 s). What it had in flight is lost (its requests'
 * connections); what it counted is not: its metering counts go out with the next drain, and its
 * counters are added to its successor's in stats(), so sums in /metrics do not fall back.
 */
export class WorkerPool {
  /** a worker holds requests for a scaled-to-zero route: wake it (set by the proxy) */
  onActivate: ((routeId: string) => void) | null = null;
  /** workers started again since the pool started */
  restarts = 0;
  private workers: Worker[] = [];
  private seq = 0;
  private waiters = new Map<string, (m: Msg | null) => void>();
  private reportIds: readonly string[] = [];
  /** how many times in a row each worker died young (its next start waits longer each time) */
  private youngDeaths: number[] = [];
  /** worker i's thread has ended (until the one in its place starts) */
  private gone: boolean[] = [];
  /** worker i listens (from its `listening` to its exit) */
  private listening: boolean[] = [];
  /** metering counts of workers that died, for the next drain */
  private leftMeters: MeterEntry[] = [];
  /** the counters of workers that died (gauges zeroed), added to the live ones' in stats() */
  private carried: StatsSnapshot | null = null;
  /** a TLS reload under way: a worker started again waits for it, to listen with what it leaves */
  private reloading: Promise<unknown> = Promise.resolve();
  private init: WorkerInit | null = null;
  /** ACME answers on every worker now (a worker started again is given them) */
  private challenges = new Map<string, string>();
  /** the table the workers were last told to serve (a worker started again is given it) */
  private table: RouteTableSpec | null = null;
  private closing = false;

  /** `script`: the worker's module (tests run it with a way to crash it beside it) */
  constructor(private readonly log: Logger | null = null, private readonly script = workerScript()) {}

  async start(n: number, init: WorkerInit): Promise<{ port: number; tlsPort: number }> {
    // uWS sets SO_REUSEPORT only on a port it is given, so port 0 cannot be shared as is: the
    // kernel picks one first (another process could take it in between: tried again then)
    const pick = n > 1 && (init.port === 0 || init.tls?.port === 0);
    for (let attempt = 1; ; attempt++) {
      const port = pick && init.port === 0 ? await freePort(init.host) : init.port;
      const tlsPort = init.tls ? (pick && init.tls.port === 0 ? await freePort(init.tls.host) : init.tls.port) : 0;
      const with_ = { ...init, port, ...(init.tls ? { tls: { ...init.tls, port: tlsPort } } : {}) };
      try {
        let got = { port, tlsPort };
        for (let i = 0; i < n; i++) {
          const m = await this.spawn(i, with_);
          got = { port: m.port, tlsPort: m.tlsPort ?? 0 };
        }
        this.init = { ...with_, port: got.port, ...(init.tls ? { tls: { ...init.tls, port: got.tlsPort } } : {}) };
        // (one that died while the others were starting is started again now)
        for (let i = 0; i < n; i++) if (this.gone[i]) this.respawn(i);
        return got;
      } catch (e) {
        // the threads that listen close first: one ending with uWS's sockets open aborts the process
        await this.close();
        await this.terminate();
        this.closing = false;
        this.workers = [];
        if (!pick || attempt >= 3 || !/could not listen/.test((e as Error).message)) throw e;
      }
    }
  }

  /** Worker i started (again) with `init`; answers when it listens, throws when it could not. */
  private spawn(i: number, init: WorkerInit): Promise<Msg & { type: 'listening' }> {
    const w = new Worker(this.script, { workerData: { ...init, index: i } });
    const born = Date.now();
    this.workers[i] = w;
    this.gone[i] = false;
    this.listening[i] = false;
    w.on('message', (m: Msg) => { if (this.workers[i] === w) this.onMessage(i, m); });
    w.on('error', (e) => this.report({ worker: i, err: e.stack ?? String(e) }, 'proxy worker crashed'));
    w.on('exit', (code) => {
      if (this.workers[i] !== w) return;
      this.gone[i] = true;
      this.listening[i] = false;
      // whatever waited for it is answered now, not after a timeout (or never)
      for (const [key, resolve] of this.waiters) {
        if (key.startsWith(`${i}:`)) { this.waiters.delete(key); resolve(null); }
      }
      if (this.closing || this.init === null) return;
      // a worker that keeps dying soon after its start waits longer each time: at once, 1 s, 2 s… 30 s
      const young = Date.now() - born < SHORT_LIFE_MS ? (this.youngDeaths[i] ?? 0) + 1 : 0;
      this.youngDeaths[i] = young;
      const delay = young <= 1 ? 0 : Math.min(RESPAWN_MAX_DELAY_MS, 1000 * 2 ** (young - 2));
      this.report({ worker: i, code, restartInMs: delay }, 'proxy worker exited; starting it again');
      setTimeout(() => this.respawn(i), delay).unref();
    });
    return new Promise((resolve, reject) => {
      this.waiters.set(`${i}:listen`, (r) => {
        if (r?.type === 'listening') {
          this.listening[i] = true;
          resolve(r);
        }
        else reject(new Error(r?.type === 'error' ? r.message : `worker ${i} exited before it listened`));
      });
    });
  }

  /** Worker i again, given the table served now; one that cannot listen goes (its exit tries again later). */
  private respawn(i: number): void {
    void this.reloading.then(() => this.spawnAgain(i));
  }

  private spawnAgain(i: number): void {
    if (this.closing || this.init === null || !this.gone[i]) return;
    const table = this.table;
    this.restarts++;
    this.spawn(i, { ...this.init, ...(table ? { table } : {}), ...(this.challenges.size > 0 ? { challenges: [...this.challenges] } : {}) }).then(
      () => this.log?.info({ worker: i, tableVersion: table?.version ?? null }, 'proxy worker started again'),
      (e: Error) => {
        this.report({ worker: i, err: e.message }, 'proxy worker could not start again');
        void this.workers[i].terminate();
      },
    );
  }

  private report(fields: Record<string, unknown>, msg: string): void {
    if (this.log) this.log.error(fields, msg);
    else process.stderr.write(`berth proxy: ${msg} ${JSON.stringify(fields)}\n`);
  }

  private onMessage(i: number, m: Msg): void {
    if (m.type === 'activate') {
      this.onActivate?.(m.route);
      return;
    }
    if (m.type === 'fatal') {
      this.report({ worker: i, err: m.error }, 'proxy worker crashed (an uncaught exception); it exits and is started again');
      if (m.entries) for (const e of m.entries) this.leftMeters.push(e);
      if (m.stats) this.carry(m.stats);
      return;
    }
    const key = m.type === 'listening' || m.type === 'error' ? `${i}:listen` : m.type === 'closed' ? `${i}:closed` : `${i}:${m.seq}`;
    const w = this.waiters.get(key);
    if (w) { this.waiters.delete(key); w(m); }
  }

  /** Worker i's answer, or null when it died first (it is being started again). */
  private request<T extends Msg>(i: number, msg: object): Promise<T | null> {
    const seq = ++this.seq;
    return new Promise((resolve) => {
      // (a message to a thread that has ended is dropped: nothing would answer)
      if (this.gone[i]) return resolve(null);
      this.waiters.set(`${i}:${seq}`, (m) => resolve(m as T | null));
      this.workers[i].postMessage({ ...msg, seq });
    });
  }

  /** The control plane cannot wake this route now: every thread answers the requests it holds for it (DataPlane.refuseWake). */
  refuseWake(routeId: string): void {
    for (let i = 0; i < this.workers.length; i++) if (!this.gone[i]) this.workers[i].postMessage({ type: 'wake-refused', route: routeId });
  }

  apply(spec: RouteTableSpec): Promise<{ version: number; routes: number; ms: number }> {
    return this.applyEach({ type: 'apply', spec }, spec);
  }

  /**
   * Deltas to the table every worker serves (DataPlane.applyDeltas): a few routes posted, not
   * 10,000 copied to each thread; `spec` is the table they make (a worker started again is given
   * it whole). Throws when a worker could not (the caller sends the table).
   */
  applyDeltas(deltas: readonly RouteDelta[], spec: RouteTableSpec): Promise<{ version: number; routes: number; ms: number }> {
    return this.applyEach({ type: 'apply-deltas', deltas }, spec);
  }

  private async applyEach(msg: object, spec: RouteTableSpec): Promise<{ version: number; routes: number; ms: number }> {
    const before = this.table;
    // from here a worker started again is given this table: one that dies meanwhile serves it too
    this.table = spec;
    const res = (await Promise.all(this.workers.map((_, i) => this.request<Extract<Msg, { type: 'applied' }>>(i, msg))))
      .filter((r) => r !== null);
    const failed = res.find((r) => r.error !== undefined);
    if (failed !== undefined) {
      this.table = before;
      throw new Error(`a worker could not apply the table: ${failed.error}`);
    }
    return res.length === 0
      ? { version: spec.version, routes: spec.routes.length, ms: 0 }
      : { version: res[0].version, routes: res[0].routes, ms: Math.max(...res.map((r) => r.ms)) };
  }

  /**
   * Every worker's report counts (merged by the caller: metrics/report-counts.ts mergeCounts). An
   * id list equal to the one before is that very array (the reporter compares by identity first).
   * A worker started again counts from zero.
   */
  async reportCounts(): Promise<ReportCounts[]> {
    const res = (await Promise.all(this.workers.map((_, i) => this.request<Extract<Msg, { type: 'report-counts' }>>(i, { type: 'report-counts' }))))
      .filter((r) => r !== null);
    if (res.length === 0) throw new Error('no worker answered (they are starting again)');
    const last = this.reportIds;
    return res.map(({ counts }) => {
      const ids = counts.ids;
      if (ids.length === last.length && ids.every((id, k) => id === last[k])) return { ...counts, ids: last };
      this.reportIds = ids;
      return counts;
    });
  }

  /**
   * Every live worker's stats, and the counters of those that died (their routes and endpoints
   * that live ones still list: one the table dropped is forgotten as a live thread forgets it).
   */
  async stats(): Promise<StatsSnapshot[]> {
    const res = await Promise.all(this.workers.map((_, i) => this.request<Extract<Msg, { type: 'stats' }>>(i, { type: 'stats' })));
    const stats = res.flatMap((r) => (r === null ? [] : [r.stats]));
    const c = this.carried;
    if (c === null) return stats;
    if (stats.length === 0) return [c];
    const routes = new Set<string>();
    const addresses = new Set<string>();
    for (const s of stats) {
      for (const r of s.routes) routes.add(r.id);
      for (const e of s.endpoints) addresses.add(e.address);
    }
    this.carried = { global: c.global, routes: c.routes.filter((r) => routes.has(r.id)), endpoints: c.endpoints.filter((e) => addresses.has(e.address)) };
    return [...stats, this.carried];
  }

  /** A dead worker's last stats, kept as counters: its gauges (in flight, concurrency, cache) are no more. */
  private carry(s: StatsSnapshot): void {
    const counters: StatsSnapshot = {
      global: { ...s.global, inflight: 0 },
      routes: s.routes.map((r) => ({ ...r, inflight: 0, concurrency: 0, cacheEntries: 0, cacheBytes: 0 })),
      endpoints: s.endpoints.map((e) => ({ ...e, inflight: 0, state: 'closed' })),
    };
    this.carried = this.carried === null ? counters : merge([this.carried, counters]);
  }

  /** Metering deltas of every worker (each worker's counters restart at zero), and those a dead one left. */
  async drainMeters(): Promise<MeterEntry[]> {
    const res = await Promise.all(this.workers.map((_, i) => this.request<Extract<Msg, { type: 'meters' }>>(i, { type: 'meters' })));
    const left = this.leftMeters;
    this.leftMeters = [];
    return left.concat(res.flatMap((r) => (r === null ? [] : r.entries)));
  }

  /**
   * An ACME HTTP-01 answer on every worker (null: dropped), resolved once each has it; a worker
   * started again meanwhile is given those of the order under way before it listens.
   */
  async setChallenge(token: string, answer: string | null): Promise<void> {
    if (answer === null) this.challenges.delete(token);
    else this.challenges.set(token, answer);
    await Promise.all(this.workers.map((_, i) => this.request(i, { type: 'acme', token, answer })));
  }

  /** How many workers listen now (none: the proxy is not ready). */
  get serving(): number {
    let n = 0;
    for (let i = 0; i < this.workers.length; i++) if (this.listening[i]) n++;
    return n;
  }

  /**
   * New certificates on every worker's HTTPS listener (DataPlane.reloadTls), all or none: when
   * one worker fails, those that took them go back to `previous` (still on disk until a reload
   * succeeds). Throws the first failure, saying what the threads serve now. A worker that dies
   * meanwhile fails it (it starts again with the certificates in use: reload again).
   */
  reloadTls(config: TlsConfig, previous: TlsConfig): Promise<void> {
    const p = this.reloadEach(config, previous);
    this.reloading = p.catch(() => {});
    return p;
  }

  private async reloadEach(config: TlsConfig, previous: TlsConfig): Promise<void> {
    const problem = await allOrNone(this.workers.length, async (i, c) => {
      const r = await this.request<Extract<Msg, { type: 'tls-reloaded' }>>(i, { type: 'tls', config: c });
      return r === null ? `worker ${i} exited` : r.error;
    }, config, previous);
    if (problem !== null) throw new Error(problem);
    // a worker started again from here listens with them
    if (this.init?.tls) this.init = { ...this.init, tls: { ...this.init.tls, config } };
  }

  /**
   * Close every worker's listener and let in-flight requests finish; answers their last metering
   * counts. The threads stay until `terminate()` (the caller persists the counts first).
   */
  async close(): Promise<MeterEntry[]> {
    this.closing = true;
    const last = await Promise.all(this.workers.map((w, i) => new Promise<MeterEntry[]>((resolve) => {
      if (this.gone[i]) return resolve([]);
      const t = setTimeout(() => resolve([]), 7000);
      this.waiters.set(`${i}:closed`, (m) => { clearTimeout(t); resolve((m as { entries?: MeterEntry[] } | null)?.entries ?? []); });
      w.postMessage({ type: 'close' });
    })));
    const left = this.leftMeters;
    this.leftMeters = [];
    return left.concat(last.flat());
  }

  async terminate(): Promise<void> {
    this.closing = true;
    await Promise.all(this.workers.map((w) => w.terminate()));
  }
}

/**
 * The worker's module beside this one (dist/proxy/workers/worker.js), or — when this module runs
 * from its TypeScript source (tests that start `berth up` in their own process) — the built one:
 * a worker thread cannot load TypeScript.
 */
function workerScript(): URL {
  const here = new URL('./worker.js', import.meta.url);
  if (!import.meta.url.endsWith('.ts')) return here;
  const built = new URL('../../dist/proxy/workers/worker.js', import.meta.url);
  if (!existsSync(built)) throw new Error(`the proxy's worker threads need the build (${fileURLToPath(built)} is missing): npm run build`);
  return built;
}
