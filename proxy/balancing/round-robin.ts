import type { Endpoint } from '../upstream/endpoint.js';
import { available, type Balancer, type Target } from './target.js';

/** Even, deterministic rotation; endpoints whose breaker refuses traffic are skipped. */
export class RoundRobin implements Balancer {
  private next = 0;
  constructor(private readonly targets: Target[]) {}

  pick(now: number, exclude: Endpoint | null): Target | null {
    const t = this.targets;
    const n = t.length;
    for (let i = 0; i < n; i++) {
      let idx = this.next + i;
      if (idx >= n) idx -= n;
      const c = t[idx];
      if (c.endpoint !== exclude && available(c, now)) {
        this.next = idx + 1 === n ? 0 : idx + 1;
        return c;
      }
    }
    return null;
  }
}
