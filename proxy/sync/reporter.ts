import { hostname } from 'node:os';
import { request } from 'undici';
import type { Logger } from '../../shared/logging.js';
import type { StatsSnapshot } from '../metrics/prometheus.js';

/**
 * Reports this proxy's view back to the control plane: the table version it serves (an ack the
 * control plane waits for before stopping a removed container) and per-route / per-endpoint
 * request and in-flight counts (for draining, autoscaling and billing).
 * Sent right after every applied control-plane table, every second while a route has traffic
 * (each route's `concurrency` is its average over the last second: the autoscaler's input), and
 * every `idleMs` otherwise. A report is whole every `idleMs`; in between it carries only the
 * routes that changed (`partial: true`).
 */
export class Reporter {
  readonly proxyId = `${hostname()}-${process.pid}-${Math.random().toString(36).slice(2, 8)}`;
  private timer: NodeJS.Timeout | null = null;
  private sending = false;
  private again = false;

  constructor(
    private readonly baseUrl: string,
    private readonly token: string,
    private readonly collect: () => Promise<{ tableVersion: number | null; stats: StatsSnapshot }>,
    private readonly logger: Logger,
    private readonly intervalMs = 1000,
    private readonly idleMs = 5000,
  ) {}

  private lastSent = 0;
  private busy = false;
  private lastFull = 0;
  /** what the control plane has of each route since the last report it accepted: "requests|inflight|concurrency" */
  private sentRoutes = new Map<string, string>();

  start(): void {
    this.timer = setInterval(() => {
      if (this.busy || Date.now() - this.lastSent >= this.idleMs) this.send();
    }, this.intervalMs);
    this.timer.unref();
  }

  /** Send now (coalesced: at most one request in flight, one queued). */
  send(): void {
    if (this.sending) {
      this.again = true;
      return;
    }
    this.sending = true;
    void this.post().finally(() => {
      this.sending = false;
      if (this.again) {
        this.again = false;
        this.send();
      }
    });
  }

  private async post(): Promise<void> {
    try {
      const { tableVersion, stats } = await this.collect();
      const now = Date.now();
      this.lastSent = now;
      // report every second while any route carries traffic (or still has requests in flight)
      this.busy = stats.routes.some((r) => r.concurrency > 0 || r.inflight > 0);
      // Between full reports (every idleMs) only the routes whose counters moved are sent
      // (`partial`): with 10,000 routes and traffic on a few, a report is a few hundred bytes, not
      // half a megabyte a second. The control plane lays a partial report over the last full one.
      // Endpoints always go whole: a drain waits on them.
      const full = now - this.lastFull >= this.idleMs;
      const next = new Map<string, string>();
      const routes = [];
      for (const r of stats.routes) {
        const concurrency = Math.round(r.concurrency * 100) / 100;
        const key = `${r.requests}|${r.inflight}|${concurrency}`;
        next.set(r.id, key);
        if (full || this.sentRoutes.get(r.id) !== key) routes.push({ id: r.id, requests: r.requests, inflight: r.inflight, concurrency });
      }
      const body = JSON.stringify({
        proxyId: this.proxyId,
        tableVersion,
        ...(full ? {} : { partial: true }),
        routes,
        endpoints: stats.endpoints.map((e) => ({ address: e.address, inflight: e.inflight, requests: e.requests, state: e.state })),
      });
      const res = await request(new URL('/v1/proxy/report', this.baseUrl), {
        method: 'POST',
        headers: { authorization: `Bearer ${this.token}`, 'content-type': 'application/json' },
        body,
        headersTimeout: 5000,
        bodyTimeout: 5000,
      });
      await res.body.dump();
      if (res.statusCode < 300) {
        this.sentRoutes = next;
        if (full) this.lastFull = now;
      } else {
        this.lastFull = 0; // not taken: the next report is whole
      }
      // While removed endpoints still have requests in flight, report often: the control plane
      // waits for them to reach zero before it stops the container.
      if (stats.endpoints.some((e) => e.state === 'draining')) setTimeout(() => this.send(), 200).unref();
      if (res.statusCode >= 400 && res.statusCode !== 404) this.logger.warn({ status: res.statusCode }, 'control plane refused the proxy report');
    } catch (e) {
      this.lastFull = 0; // not delivered: the next report is whole
      this.logger.debug({ err: (e as Error).message }, 'proxy report not delivered');
    }
  }

  stop(): void {
    if (this.timer) clearInterval(this.timer);
  }
}
