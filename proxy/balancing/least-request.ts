import type { Endpoint } from '../upstream/endpoint.js';
import { available, type Balancer, type Target } from './target.js';

/**
 * Least request by power of two choices: sample two distinct admissible endpoints at random and
 * take the one with fewer in-flight requests (Envoy's default least_request behaviour).
 */
export class LeastRequest implements Balancer {
  private readonly scratch: Target[] = [];
  constructor(private readonly targets: Target[], private readonly random: () => number = Math.random) {}

  pick(now: number, exclude: Endpoint | null): Target | null {
    const t = this.targets;
    const n = t.length;
    if (n === 0) return null;
    // Fast path: two random probes without building a candidate list.
    if (n >= 2) {
      const a = t[(this.random() * n) | 0];
      const b0 = t[(this.random() * (n - 1)) | 0];
      const b = b0 === a ? t[n - 1] : b0;
      const okA = a.endpoint !== exclude && available(a, now);
      const okB = b.endpoint !== exclude && available(b, now);
      if (okA && okB) return a.endpoint.inflight <= b.endpoint.inflight ? a : b;
    }
    // Slow path: some endpoint is unavailable — sample among the admissible ones.
    const c = this.scratch;
    c.length = 0;
    for (let i = 0; i < n; i++) {
      const x = t[i];
      if (x.endpoint !== exclude && available(x, now)) c.push(x);
    }
    const m = c.length;
    if (m === 0) return null;
    if (m === 1) return c[0];
    const a = c[(this.random() * m) | 0];
    let b = c[(this.random() * (m - 1)) | 0];
    if (b === a) b = c[m - 1];
    c.length = 0;
    return a.endpoint.inflight <= b.endpoint.inflight ? a : b;
  }
}
