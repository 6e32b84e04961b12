import type { BalancingPolicy } from '../../shared/routes/schema.js';
import { LeastRequest } from './least-request.js';
import { RoundRobin } from './round-robin.js';
import type { Balancer, Target } from './target.js';
import { Weighted } from './weighted.js';

export function createBalancer(policy: BalancingPolicy, targets: Target[]): Balancer {
  switch (policy) {
    case 'least_request': return new LeastRequest(targets);
    case 'weighted': return new Weighted(targets);
    default: return new RoundRobin(targets);
  }
}
export type { Balancer, Target };
