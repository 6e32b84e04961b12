import { EventEmitter } from 'node:events';

/** What a proxy POSTs to /v1/proxy/report. */
export interface ProxyReport {
  proxyId: string;
  tableVersion: number | null;
  /** concurrency: the route's in-flight average over the proxy's last second (autoscaler input) */
  routes: { id: string; requests: number; inflight: number; concurrency?: number }[];
  endpoints: { address: string; inflight: number; requests: number; state: string }[];
  /** only the routes that changed since the proxy's last report: laid over it (endpoints are whole) */
  partial?: boolean;
}

export interface ProxyEntry {
  report: ProxyReport;
  receivedAt: number;
  remoteAddress: string;
  /** which accepted proxy token it reports with: "current", or "retiring #n" (see BearerTokens) */
  token: string;
}

export interface DrainResult {
  /** every live proxy reported the version (or none reports at all) */
  acked: boolean;
  /** every live proxy reports zero in-flight requests to the address */
  drained: boolean;
  proxies: number;
  waitedMs: number;
}

/**
 * The latest report of every proxy (in memory: reports arrive every few seconds, so a restarted
 * control plane knows its proxies again within one interval). A proxy is live while it has
 * reported within `staleMs`.
 */
export class ProxyRegistry {
  private entries = new Map<string, ProxyEntry>();
  private emitter = new EventEmitter();

  constructor(private readonly staleMs = 15_000) {
    this.emitter.setMaxListeners(0);
  }

  record(report: ProxyReport, remoteAddress: string, token = 'current'): void {
    const prev = this.entries.get(report.proxyId);
    if (report.partial && prev) {
      const routes = new Map(prev.report.routes.map((r) => [r.id, r]));
      for (const r of report.routes) routes.set(r.id, r);
      report = { ...report, routes: [...routes.values()], partial: false };
    }
    // a partial report with nothing to lay it over (this control plane restarted): what it has
    // until the next whole one, at most idleMs later
    this.entries.set(report.proxyId, { report, receivedAt: Date.now(), remoteAddress, token });
    this.emitter.emit('report');
  }

  /** Live proxies (stale ones are forgotten). */
  live(now = Date.now()): ProxyEntry[] {
    const out: ProxyEntry[] = [];
    for (const [id, e] of this.entries) {
      if (now - e.receivedAt > this.staleMs) { this.entries.delete(id); continue; }
      out.push(e);
    }
    return out;
  }

  list(): (ProxyEntry & { proxyId: string })[] {
    return this.live().map((e) => ({ proxyId: e.report.proxyId, ...e }));
  }

  /**
   * Wait until every live proxy has applied `version` (tableVersion ≥ version) and reports no
   * in-flight request to `address` — or `timeoutMs` passes. Proxies that do not list the address
   * count as drained for it.
   */
  async waitDrained(version: number, address: string, timeoutMs: number): Promise<DrainResult> {
    const started = Date.now();
    const check = () => {
      const live = this.live();
      const acked = live.every((e) => e.report.tableVersion !== null && e.report.tableVersion >= version);
      const drained = acked && live.every((e) => !e.report.endpoints.some((ep) => ep.address === address && ep.inflight > 0));
      return { acked, drained, proxies: live.length };
    };
    let s = check();
    if (s.drained) return { ...s, waitedMs: Date.now() - started };
    await new Promise<void>((resolve) => {
      const done = () => { clearTimeout(t); clearInterval(poll); this.emitter.off('report', onReport); resolve(); };
      const onReport = () => { s = check(); if (s.drained) done(); };
      const t = setTimeout(done, timeoutMs);
      // proxies may go stale while we wait: re-check now and then
      const poll = setInterval(onReport, 250);
      this.emitter.on('report', onReport);
    });
    s = check();
    return { ...s, waitedMs: Date.now() - started };
  }
}
