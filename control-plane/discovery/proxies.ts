import { EventEmitter } from 'node:events';

export interface RouteReport { id: string; requests: number; inflight: number; concurrency?: number }
export interface EndpointReport { address: string; inflight: number; requests?: number; state?: string }

/** What a proxy POSTs to /v1/proxy/report. */
export interface ProxyReport {
  proxyId: string;
  tableVersion: number | null;
  /** concurrency: the route's in-flight average over the proxy's last second (autoscaler input) */
  routes: RouteReport[];
  endpoints: EndpointReport[];
  /** only the routes that changed since the proxy's last report: laid over it */
  partial?: boolean;
  /** (with partial) only the endpoints that changed too, and the addresses of those `gone` */
  endpointsPartial?: boolean;
  gone?: string[];
  /** the report's number (it grows with each report of the proxy), and a partial one's: the report it follows */
  seq?: number;
  base?: number;
}

/** The most routes, or endpoints, one proxy's entry holds (the schema's limit for one report). */
const MAX_ENTRIES = 200_000;

/** A proxy as its reports add up: the last whole one with every partial one laid over it. */
export interface ProxyEntry {
  proxyId: string;
  tableVersion: number | null;
  routes: Map<string, RouteReport>;
  endpoints: Map<string, EndpointReport>;
  /** the last report's number (none: a proxy that does not number them) */
  seq: number | undefined;
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
 * reported within `staleMs`. A partial report is laid over the proxy's entry in place: what it
 * costs is what it carries (at 10,000 routes a proxy's whole report is ~1 MB; its partial ones,
 * with traffic on a few apps, a few hundred bytes).
 */
export class ProxyRegistry {
  private entries = new Map<string, ProxyEntry>();
  private emitter = new EventEmitter();

  constructor(private readonly staleMs = 15_000) {
    this.emitter.setMaxListeners(0);
  }

  /**
   * Take a report. False (not taken; the proxy sends a whole one next) for a numbered one older
   * than the last, and for a partial one that does not follow the last report taken here (this
   * control plane restarted, or another one behind the same address took reports in between:
   * laid over another base, its changes would not add up — a drain could find an endpoint idle
   * that is not) or that would hold more than MAX_ENTRIES.
   */
  record(report: ProxyReport, remoteAddress: string, token = 'current'): boolean {
    const prev = this.entries.get(report.proxyId);
    if (report.seq !== undefined && prev?.seq !== undefined && report.seq <= prev.seq) return false;
    if (report.endpointsPartial && report.base === undefined) return false;
    if (report.partial && report.base !== undefined && (prev === undefined || prev.seq !== report.base || Date.now() - prev.receivedAt > this.staleMs)) return false;
    // (an older proxy's partial reports, not numbered, are held to it too)
    if (report.partial && prev !== undefined && (prev.routes.size + report.routes.length > MAX_ENTRIES ||
      (report.endpointsPartial && prev.endpoints.size + report.endpoints.length > MAX_ENTRIES))) return false;
    let routes: Map<string, RouteReport>;
    let endpoints: Map<string, EndpointReport>;
    if (report.partial && prev !== undefined) {
      routes = prev.routes;
      for (const r of report.routes) routes.set(r.id, r);
    } else {
      // (a partial route list with nothing to lay it over — an older proxy's, with every endpoint —
      // is what it has until the next whole one, at most its idleMs later)
      routes = new Map();
      for (const r of report.routes) routes.set(r.id, r);
    }
    if (report.partial && report.endpointsPartial && prev !== undefined) {
      endpoints = prev.endpoints;
      for (const e of report.endpoints) endpoints.set(e.address, e);
      for (const address of report.gone ?? []) endpoints.delete(address);
    } else {
      endpoints = new Map();
      for (const e of report.endpoints) endpoints.set(e.address, e);
    }
    this.entries.set(report.proxyId, { proxyId: report.proxyId, tableVersion: report.tableVersion, routes, endpoints, seq: report.seq, receivedAt: Date.now(), remoteAddress, token });
    this.emitter.emit('report');
    return true;
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

  list(): ProxyEntry[] {
    return this.live();
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
      const acked = live.every((e) => e.tableVersion !== null && e.tableVersion >= version);
      const drained = acked && live.every((e) => !((e.endpoints.get(address)?.inflight ?? 0) > 0));
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
