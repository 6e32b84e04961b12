import type { Route } from './route.js';

/**
 * Traffic split between the routes (revisions) that share one host: smooth weighted round robin,
 * nginx's algorithm, over the routes' `trafficWeight`s reduced by their greatest common divisor,
 * so 90/10 is exact over every 10 requests and 50/50 alternates. The pick is by weight only: a
 * revision with no endpoint left still gets its share (it answers 503, or holds and wakes), as a
 * split is the user's decision, not the balancer's. State is per worker thread and survives
 * table swaps (RouteState.splits).
 */
export class Split {
  private readonly weights: Float64Array;
  private readonly current: Float64Array;
  private readonly total: number;
  /** route ids and weights: a split with the same one in the next table carries on from this one */
  readonly signature: string;
  /**
   * Some route of the split has session affinity: a request whose cookie names one of its
   * endpoints goes to that route (stick), so a session stays on its revision while the revision
   * keeps a share; the weights then count only the requests they place.
   */
  readonly byKey: Map<string, Route> | null;

  readonly routes: Route[];

  /**
   * `routes` and their `weights` in any order: a split keeps them by route id, so the same routes
   * make the same split (and carry its running weights on) however the table listing them was
   * made — compiled whole, or patched by a delta (which adds a host's new owner last).
   */
  constructor(routes: Route[], weights: number[], previous?: Split) {
    const order = routes.map((_, i) => i).sort((a, b) => (routes[a].id < routes[b].id ? -1 : routes[a].id > routes[b].id ? 1 : 0));
    this.routes = order.map((i) => routes[i]);
    weights = order.map((i) => weights[i]);
    routes = this.routes;
    let g = 0;
    for (const w of weights) g = gcd(g, w);
    this.weights = Float64Array.from(weights, (w) => w / g);
    this.signature = routes.map((r, i) => `${r.id}:${weights[i]}`).join(',');
    // Table swaps happen all the time (any instance anywhere starting or stopping): a split that
    // started over at each one would favour its first, larger share, and a 1 % canary on a busy
    // cluster would get nothing. The same split carries its running weights on.
    this.current = previous !== undefined && previous.signature === this.signature ? previous.current : new Float64Array(weights.length);
    let t = 0;
    for (const w of this.weights) t += w;
    this.total = t;
    let byKey: Map<string, Route> | null = null;
    for (const r of routes) {
      if (r.byKey === null) continue;
      byKey ??= new Map();
      for (const k of r.byKey.keys()) if (!byKey.has(k)) byKey.set(k, r);
    }
    this.byKey = byKey;
  }

  /** The route whose endpoint the affinity cookie names (when it is in the split), else pick() ('' or no affinity: pick()). */
  stick(key: string): Route {
    const r = key === '' || this.byKey === null ? undefined : this.byKey.get(key);
    return r === undefined ? this.pick() : r;
  }

  pick(): Route {
    const w = this.weights;
    const c = this.current;
    let best = 0;
    for (let i = 0; i < w.length; i++) {
      c[i] += w[i];
      if (c[i] > c[best]) best = i;
    }
    c[best] -= this.total;
    return this.routes[best];
  }
}

function gcd(a: number, b: number): number {
  while (b !== 0) [a, b] = [b, a % b];
  return a;
}
