import type { Route } from './route.js';

/**
 * Traffic split between the routes (revisions) that share one host: smooth weighted round robin,
 * nginx's algorithm, over the routes' `trafficWeight`s reduced by their greatest common divisor,
 * so 90/10 is exact over every 10 requests and 50/50 alternates. The pick is by weight only: a
 * revision with no endpoint left still gets its share (it answers 503, or holds and wakes), as a
 * split is the user's decision, not the balancer's. State is per worker thread.
 */
export class Split {
  private readonly weights: Int32Array;
  private readonly current: Int32Array;
  private readonly total: number;

  constructor(readonly routes: Route[], weights: number[]) {
    let g = 0;
    for (const w of weights) g = gcd(g, w);
    this.weights = Int32Array.from(weights, (w) => w / g);
    this.current = new Int32Array(weights.length);
    let t = 0;
    for (const w of this.weights) t += w;
    this.total = t;
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
