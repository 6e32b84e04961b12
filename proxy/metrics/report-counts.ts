import type { RouteStats } from './route-stats.js';
import type { EndpointRegistry } from '../upstream/endpoint.js';
import { worseState } from './prometheus.js';

/**
 * What the proxy reports to the control plane (sync/reporter.ts): per route its requests,
 * in-flight count and last second's average concurrency, and every endpoint's counts. Flat, so a
 * thread serving 10,000 routes makes it every second (and after every table) without an object
 * or array per route: the stats snapshot (prometheus.ts, for /stats and /metrics) copies each
 * route's histogram and status classes, 12–30 ms at 10,000 routes on the serving thread.
 */
export interface ReportCounts {
  /** route ids; the same array while the thread's set of route ids is (the reporter compares by identity first) */
  ids: readonly string[];
  /** per id, three numbers: requests, in flight, concurrency */
  counts: Float64Array;
  endpoints: ReportEndpoint[];
}

export interface ReportEndpoint {
  address: string;
  inflight: number;
  requests: number;
  state: string;
}

/** The counts of `stats` (in the order of `ids`, their ids) and of every endpoint of `registry`. */
export function reportCounts(ids: readonly string[], stats: readonly RouteStats[], registry: EndpointRegistry): ReportCounts {
  const counts = new Float64Array(stats.length * 3);
  for (let i = 0; i < stats.length; i++) {
    const s = stats[i];
    counts[i * 3] = s.requests;
    counts[i * 3 + 1] = s.inflight;
    counts[i * 3 + 2] = s.concurrency;
  }
  registry.pruneDraining();
  const now = Date.now();
  const endpoints: ReportEndpoint[] = [];
  for (const e of registry.byAddress.values()) endpoints.push({ address: e.address, inflight: e.inflight, requests: e.requests, state: e.breaker.stateName(now) });
  for (const e of registry.draining.values()) endpoints.push({ address: e.address, inflight: e.inflight, requests: e.requests, state: 'draining' });
  return { ids, counts, endpoints };
}

/** Several worker threads' counts as one proxy's: summed by route id and by address (an endpoint's worst state wins). */
export function mergeCounts(all: readonly ReportCounts[]): ReportCounts {
  if (all.length === 1) return all[0];
  const first = all[0];
  // (the threads apply the same tables in the same order: their ids are the same, as a rule)
  const same = all.every((c) => c.ids === first.ids || (c.ids.length === first.ids.length && c.ids.every((id, i) => id === first.ids[i])));
  let ids: readonly string[];
  let counts: Float64Array;
  if (same) {
    ids = first.ids;
    counts = new Float64Array(first.counts.length);
    for (const c of all) for (let i = 0; i < counts.length; i++) counts[i] += c.counts[i];
  } else {
    const at = new Map<string, number>();
    const list: string[] = [];
    for (const c of all) for (const id of c.ids) if (!at.has(id)) at.set(id, list.push(id) - 1);
    ids = list;
    counts = new Float64Array(list.length * 3);
    for (const c of all) {
      for (let i = 0; i < c.ids.length; i++) {
        const j = at.get(c.ids[i])! * 3;
        counts[j] += c.counts[i * 3];
        counts[j + 1] += c.counts[i * 3 + 1];
        counts[j + 2] += c.counts[i * 3 + 2];
      }
    }
  }
  const eps = new Map<string, ReportEndpoint>();
  for (const c of all) {
    for (const e of c.endpoints) {
      const m = eps.get(e.address);
      if (m === undefined) {
        eps.set(e.address, { ...e });
        continue;
      }
      m.inflight += e.inflight;
      m.requests += e.requests;
      m.state = worseState(m.state, e.state);
    }
  }
  return { ids, counts, endpoints: [...eps.values()] };
}
