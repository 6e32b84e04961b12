import type { Endpoint } from '../upstream/endpoint.js';
import { available, type Balancer, type Target } from './target.js';

/**
 * Smooth weighted round robin (nginx's algorithm): each pick adds every admissible target's
 * weight to its running weight, selects the highest, and subtracts the total from it.
 * Weights 5,1,1 give a a b a c a a — spread out, not bursts. Weight 0 means drained.
 */
export class Weighted implements Balancer {
  constructor(private readonly targets: Target[]) {}

  pick(now: number, exclude: Endpoint | null): Target | null {
    const t = this.targets;
    let best: Target | null = null;
    let total = 0;
    for (let i = 0; i < t.length; i++) {
      const c = t[i];
      if (c.weight <= 0 || c.endpoint === exclude || !available(c, now)) continue;
      c.current += c.weight;
      total += c.weight;
      if (best === null || c.current > best.current) best = c;
    }
    if (best !== null) best.current -= total;
    return best;
  }
}
