import type { Balancer, Target } from '../balancing/target.js';
import type { FallbackCache } from '../resilience/fallback-cache.js';
import type { RouteStats } from '../metrics/route-stats.js';
import type { RouteQueue } from './queue.js';
import type { RouteHome } from './table.js';

/** A route ready for the hot path: hosts resolved, balancer built, settings flattened. */
export interface Route {
  readonly id: string;
  readonly hosts: string[];
  readonly targets: Target[];
  readonly balancer: Balancer;
  readonly cache: FallbackCache;
  readonly stats: RouteStats;
  /** what its id keeps across tables; `home.route` is the newest table's route for it */
  readonly home: RouteHome;
  readonly failOn5xx: boolean;
  readonly headersTimeoutMs: number;
  readonly idleTimeoutMs: number;
  /** extra attempts on another endpoint after a connect failure (idempotent, bodiless requests) */
  readonly retries: number;
  /** requests waiting for an endpoint (below its concurrency cap, or waking); null: neither applies */
  readonly queue: RouteQueue | null;
  /** scaled to zero: hold requests and ask for an instance when no endpoint can take them */
  readonly wake: boolean;
  /** its share of a host it shares with other routes (revisions of one app; see Split) */
  readonly trafficWeight: number;
  /** session affinity (RouteSpec.affinity): targets by their cookie key; null without it */
  readonly byKey: Map<string, Target> | null;
  /** a private route: the SHA-256 (hex) of every token that may call it; null: public */
  readonly auth: Set<string> | null;
  /** most bodiless GET requests per upstream connection at once (RouteSpec.pipeline; 1: off) */
  readonly pipeline: number;
}
