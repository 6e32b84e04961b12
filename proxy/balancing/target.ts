import type { Endpoint } from '../upstream/endpoint.js';

/** One endpoint as seen by one route: weight and per-route balancing state. */
export interface Target {
  readonly id: string;
  readonly endpoint: Endpoint;
  readonly weight: number;
  /** smooth weighted round-robin running weight */
  current: number;
  /** most requests this route sends the endpoint at once (0: no limit; the app's container_concurrency) */
  readonly cap: number;
  /** its id as the session-affinity cookie carries it (URI-encoded); '' when the route has no affinity */
  readonly key: string;
}

/** Can this target take a request now: its breaker admits traffic and it is below its cap? */
export function available(t: Target, now: number): boolean {
  return (t.cap === 0 || t.endpoint.inflight < t.cap) && t.endpoint.breaker.admits(now);
}

/**
 * Session affinity: the target the client's cookie key names, while it can take a request and is
 * not `exclude` (the endpoint an attempt just failed on); null: let the balancer pick.
 */
export function stickyTarget(byKey: Map<string, Target> | null, key: string, now: number, exclude: Endpoint | null): Target | null {
  if (byKey === null || key === '') return null;
  const t = byKey.get(key);
  return t !== undefined && t.endpoint !== exclude && available(t, now) ? t : null;
}

/** A picker chooses a target whose breaker admits traffic, skipping `exclude` (a failed attempt). */
export interface Balancer {
  pick(now: number, exclude: Endpoint | null): Target | null;
}
