import type { Endpoint } from '../upstream/endpoint.js';

/** One endpoint as seen by one route: weight and per-route balancing state. */
export interface Target {
  readonly id: string;
  readonly endpoint: Endpoint;
  readonly weight: number;
  /** smooth weighted round-robin running weight */
  current: number;
}

/** A picker chooses a target whose breaker admits traffic, skipping `exclude` (a failed attempt). */
export interface Balancer {
  pick(now: number, exclude: Endpoint | null): Target | null;
}
