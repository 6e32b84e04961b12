import { Worker } from 'node:worker_threads';
import type { RouteDelta, RouteTableSpec } from '../../shared/routes/schema.js';
import type { MeterEntry } from '../../shared/metering/schema.js';
import type { StatsSnapshot } from '../metrics/prometheus.js';
import type { ReportCounts } from '../metrics/report-counts.js';
import type { TlsConfig } from '../server/tls.js';

export interface WorkerInit {
  host: string;
  port: number;
  accessLogRate: number;
  upstreamConnections: number;
  ownNames?: readonly string[];
  /** the main thread can wake scaled-to-zero routes (it talks to a control plane) */
  canActivate?: boolean;
  /** an HTTPS listener too, on every worker (SO_REUSEPORT, as the plain one) */
  tls?: { host: string; port: number; config: TlsConfig; redirect?: boolean };
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
  | { type: 'activate'; route: string };

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

/**
 * N data planes on worker threads sharing one port (uWS listens with SO_REUSEPORT, the kernel
 * spreads connections). The main thread owns the table and posts it to every worker.
 */
export class WorkerPool {
  /** a worker holds requests for a scaled-to-zero route: wake it (set by the proxy) */
  onActivate: ((routeId: string) => void) | null = null;
  private workers: Worker[] = [];
  private seq = 0;
  private waiters = new Map<string, (m: Msg) => void>();
  private reportIds: readonly string[] = [];

  async start(n: number, init: WorkerInit): Promise<{ port: number; tlsPort: number }> {
    const url = new URL('./worker.js', import.meta.url);
    let port = init.port;
    let tlsPort = init.tls?.port ?? 0;
    for (let i = 0; i < n; i++) {
      // the first worker may be given port 0: the others take the port it got
      const w = new Worker(url, { workerData: { ...init, port, ...(init.tls ? { tls: { ...init.tls, port: tlsPort } } : {}), index: i } });
      this.workers.push(w);
      w.on('message', (m: Msg) => this.onMessage(i, m));
      w.on('error', (e) => { process.stderr.write(`berth proxy worker ${i} crashed: ${e.stack}\n`); process.exit(1); });
      const m = await new Promise<Msg & { type: 'listening' }>((resolve, reject) => {
        this.waiters.set(`${i}:listen`, (r) => (r.type === 'listening' ? resolve(r) : reject(new Error((r as { message: string }).message))));
      });
      port = m.port;
      tlsPort = m.tlsPort ?? 0;
    }
    return { port, tlsPort };
  }

  private onMessage(i: number, m: Msg): void {
    if (m.type === 'activate') {
      this.onActivate?.(m.route);
      return;
    }
    const key = m.type === 'listening' || m.type === 'error' ? `${i}:listen` : m.type === 'closed' ? `${i}:closed` : `${i}:${m.seq}`;
    const w = this.waiters.get(key);
    if (w) { this.waiters.delete(key); w(m); }
  }

  private request<T extends Msg>(i: number, msg: object): Promise<T> {
    const seq = ++this.seq;
    return new Promise((resolve) => {
      this.waiters.set(`${i}:${seq}`, (m) => resolve(m as T));
      this.workers[i].postMessage({ ...msg, seq });
    });
  }

  apply(spec: RouteTableSpec): Promise<{ version: number; routes: number; ms: number }> {
    return this.applyEach({ type: 'apply', spec });
  }

  /**
   * Deltas to the table every worker serves (DataPlane.applyDeltas): a few routes posted, not
   * 10,000 copied to each thread. Throws when a worker could not (the caller sends the table).
   */
  applyDeltas(deltas: readonly RouteDelta[]): Promise<{ version: number; routes: number; ms: number }> {
    return this.applyEach({ type: 'apply-deltas', deltas });
  }

  private async applyEach(msg: object): Promise<{ version: number; routes: number; ms: number }> {
    const res = await Promise.all(this.workers.map((_, i) => this.request<Extract<Msg, { type: 'applied' }>>(i, msg)));
    const failed = res.find((r) => r.error !== undefined);
    if (failed !== undefined) throw new Error(`a worker could not apply the table: ${failed.error}`);
    return { version: res[0].version, routes: res[0].routes, ms: Math.max(...res.map((r) => r.ms)) };
  }

  /**
   * Every worker's report counts (merged by the caller: metrics/report-counts.ts mergeCounts). An
   * id list equal to the one before is that very array (the reporter compares by identity first).
   */
  async reportCounts(): Promise<ReportCounts[]> {
    const res = await Promise.all(this.workers.map((_, i) => this.request<Extract<Msg, { type: 'report-counts' }>>(i, { type: 'report-counts' })));
    const last = this.reportIds;
    return res.map(({ counts }) => {
      const ids = counts.ids;
      if (ids.length === last.length && ids.every((id, k) => id === last[k])) return { ...counts, ids: last };
      this.reportIds = ids;
      return counts;
    });
  }

  async stats(): Promise<StatsSnapshot[]> {
    const res = await Promise.all(this.workers.map((_, i) => this.request<Extract<Msg, { type: 'stats' }>>(i, { type: 'stats' })));
    return res.map((r) => r.stats);
  }

  /** Metering deltas of every worker (each worker's counters restart at zero). */
  async drainMeters(): Promise<MeterEntry[]> {
    const res = await Promise.all(this.workers.map((_, i) => this.request<Extract<Msg, { type: 'meters' }>>(i, { type: 'meters' })));
    return res.flatMap((r) => r.entries);
  }

  /**
   * New certificates on every worker's HTTPS listener (DataPlane.reloadTls), all or none: when
   * one worker fails, those that took them go back to `previous` (still on disk until a reload
   * succeeds). Throws the first failure, saying what the threads serve now.
   */
  async reloadTls(config: TlsConfig, previous: TlsConfig): Promise<void> {
    const problem = await allOrNone(this.workers.length, async (i, c) =>
      (await this.request<Extract<Msg, { type: 'tls-reloaded' }>>(i, { type: 'tls', config: c })).error, config, previous);
    if (problem !== null) throw new Error(problem);
  }

  /**
   * Close every worker's listener and let in-flight requests finish; answers their last metering
   * counts. The threads stay until `terminate()` (the caller persists the counts first).
   */
  async close(): Promise<MeterEntry[]> {
    const last = await Promise.all(this.workers.map((w, i) => new Promise<MeterEntry[]>((resolve) => {
      const t = setTimeout(() => resolve([]), 7000);
      this.waiters.set(`${i}:closed`, (m) => { clearTimeout(t); resolve((m as { entries?: MeterEntry[] }).entries ?? []); });
      w.postMessage({ type: 'close' });
    })));
    return last.flat();
  }

  async terminate(): Promise<void> {
    await Promise.all(this.workers.map((w) => w.terminate()));
  }
}
