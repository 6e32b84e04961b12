import { hostname } from 'node:os';
import { request } from 'undici';
import type { Logger } from '../../shared/logging.js';
import type { ReportCounts, ReportEndpoint } from '../metrics/report-counts.js';

/**
 * Reports this proxy's view back to the control plane: the table version it serves (an ack the
 * control plane waits for before stopping a removed container) and per-route / per-endpoint
 * request and in-flight counts (for draining, autoscaling and billing).
 * Sent right after every applied control-plane table, every second while a route has traffic
 * (each route's `concurrency` is its average over the last second: the autoscaler's input), and
 * every `idleMs` otherwise. A report is whole every `idleMs`; in between it carries only the
 * routes and endpoints that changed (`partial: true`; endpoints no longer counted by address in
 * `gone`, with `endpointsPartial: true`), from the last report the control plane accepted: each
 * report has a number (`seq`), a partial one names the one it follows (`base`), and a control
 * plane whose last report of this proxy is not that one — it restarted, or another control plane
 * behind the same address took it — answers 409: the next report, at once, is whole. One too old
 * to read these fields (400) gets reports as it knew them (partial routes, every endpoint) for
 * the next 5 minutes.
 */
export class Reporter {
  readonly proxyId = `${hostname()}-${process.pid}-${Math.random().toString(36).slice(2, 8)}`;
  private timer: NodeJS.Timeout | null = null;
  private sending = false;
  private again = false;

  constructor(
    private readonly baseUrl: string,
    private readonly token: string,
    private readonly collect: () => Promise<{ tableVersion: number | null; counts: ReportCounts }>,
    private readonly logger: Logger,
    private readonly intervalMs = 1000,
    private readonly idleMs = 5000,
  ) {}

  private lastSent = 0;
  private busy = false;
  private lastFull = 0;
  /** what the control plane has since the last report it accepted: the ids and counts then (concurrency rounded as sent) */
  private sent: ReportCounts | null = null;
  /** the endpoints as of that report */
  private sentEndpoints: readonly ReportEndpoint[] = [];
  /** the last report's number, and the one of the last report accepted (0: none) */
  private seq = 0;
  private acceptedSeq = 0;
  /** until when reports go as a control plane that refused `seq` and partial endpoints reads them */
  private plainUntil = 0;

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
      const { tableVersion, counts } = await this.collect();
      const { ids, counts: c } = counts;
      const now = Date.now();
      this.lastSent = now;
      // (sent rounded to 1/100: compared as sent, so a jitter below that is no change)
      for (let i = 2; i < c.length; i += 3) c[i] = Math.round(c[i] * 100) / 100;
      // report every second while any route carries traffic (or still has requests in flight)
      let busy = false;
      for (let i = 0; i < c.length && !busy; i += 3) busy = c[i + 1] > 0 || c[i + 2] > 0;
      this.busy = busy;
      // Between full reports (every idleMs) only the routes whose counters moved are sent
      // (`partial`): with 10,000 routes and traffic on a few, a report is a few hundred bytes, not
      // half a megabyte a second. The control plane lays a partial report over the last full one.
      // Endpoints always go whole: a drain waits on them.
      // (numbered reports: whole until one was accepted, as after a plain one)
      const extended = now >= this.plainUntil;
      const full = now - this.lastFull >= this.idleMs || this.sent === null || (extended && this.acceptedSeq === 0);
      const routes = [];
      // where each id was in the counts last sent: the same places while the ids are the same array
      const before = full ? null : this.sent!;
      let at: Map<string, number> | null = null;
      if (before !== null && before.ids !== ids) {
        at = new Map();
        for (let i = 0; i < before.ids.length; i++) at.set(before.ids[i], i);
      }
      for (let i = 0; i < ids.length; i++) {
        const k = i * 3;
        if (before !== null) {
          const j = at === null ? i : at.get(ids[i]);
          if (j !== undefined && before.counts[j * 3] === c[k] && before.counts[j * 3 + 1] === c[k + 1] && before.counts[j * 3 + 2] === c[k + 2]) continue;
        }
        routes.push({ id: ids[i], requests: c[k], inflight: c[k + 1], concurrency: c[k + 2] });
      }
      // the endpoints: every one in a whole report; else those whose counts or state moved, and
      // the addresses no longer counted (a drained endpoint: the control plane waits on it)
      // (compared place by place while the list has the same addresses in the same places, as a
      // rule — the registry's order —, else by address: no map per report at 10,000 endpoints)
      const all = counts.endpoints;
      const partialEndpoints = !full && extended;
      const seq = ++this.seq;
      let endpoints = all;
      const gone: string[] = [];
      if (partialEndpoints) {
        endpoints = [];
        const was = this.sentEndpoints;
        let same = was.length === all.length;
        for (let i = 0; i < all.length && same; i++) same = was[i].address === all[i].address;
        const byAddress = same ? null : new Map(was.map((e) => [e.address, e]));
        for (let i = 0; i < all.length; i++) {
          const e = all[i];
          const w = byAddress === null ? was[i] : byAddress.get(e.address);
          if (w === undefined || w.inflight !== e.inflight || w.requests !== e.requests || w.state !== e.state) endpoints.push(e);
          byAddress?.delete(e.address);
        }
        if (byAddress !== null) for (const address of byAddress.keys()) gone.push(address);
      }
      const body = JSON.stringify({
        proxyId: this.proxyId,
        tableVersion,
        ...(extended ? { seq } : {}),
        ...(full ? {} : { partial: true }),
        ...(partialEndpoints ? { base: this.acceptedSeq, endpointsPartial: true, gone } : {}),
        routes,
        endpoints,
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
        this.sent = counts;
        this.sentEndpoints = all;
        this.acceptedSeq = extended ? seq : 0;
        if (full) this.lastFull = now;
      } else {
        this.lastFull = 0; // not taken: the next report is whole
      }
      // While removed endpoints still have requests in flight, report often: the control plane
      // waits for them to reach zero before it stops the container.
      if (all.some((e) => e.state === 'draining')) setTimeout(() => this.send(), 200).unref();
      if (res.statusCode === 409) {
        // (it has nothing to lay this one over: the whole one goes now)
        this.again = true;
      } else if (res.statusCode === 400 && extended) {
        this.plainUntil = now + 5 * 60_000;
        this.again = true;
        this.logger.warn('the control plane refused a report with numbers and partial endpoint lists (an older version?): reports carry every endpoint for the next 5 minutes');
      } else if (res.statusCode >= 400 && res.statusCode !== 404) this.logger.warn({ status: res.statusCode }, 'control plane refused the proxy report');
    } catch (e) {
      this.lastFull = 0; // not delivered: the next report is whole
      this.logger.debug({ err: (e as Error).message }, 'proxy report not delivered');
    }
  }

  stop(): void {
    if (this.timer) clearInterval(this.timer);
  }
}
