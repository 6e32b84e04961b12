import { Agent, request } from 'undici';
import type { Logger } from '../../shared/logging.js';
import type { RouteTableSpec } from '../../shared/routes/schema.js';

/** Resend an activation this long after the last one while requests are still held. */
export const ACTIVATE_EVERY_MS = 2000;

/**
 * Connections to the control plane for wake calls, at most: a burst over hundreds of
 * scaled-to-zero routes queues here instead of opening a connection each (the API closes those
 * past its per-address cap, BERTH_API_CONNECTIONS_PER_ADDRESS).
 */
export const ACTIVATE_CONNECTIONS = 16;

/**
 * Wakes scaled-to-zero apps: `POST /v1/routes/:id/activate` (proxy token) to the control plane,
 * at most once per route every ACTIVATE_EVERY_MS however many requests are waiting — one call
 * per burst, not per request. Held requests are released by the route table that brings the new
 * endpoint, and time out (504 queue_timeout) if it never comes; a wake the control plane refuses
 * for want of room (409 container_quota_exceeded) has them answered at once (onRefused).
 */
export class Activator {
  /** the control plane answered that it cannot start an instance for the route now (its owner's quota is full) */
  onRefused: ((routeId: string) => void) | null = null;
  private readonly last = new Map<string, number>();
  private readonly deferred = new Map<string, NodeJS.Timeout>();
  private readonly dispatcher = new Agent({ connections: ACTIVATE_CONNECTIONS });

  constructor(private readonly baseUrl: string, private readonly token: string, private readonly logger: Logger) {}

  /** Stop: deferred asks are dropped, calls under way are cut, the connections close. */
  async close(): Promise<void> {
    for (const t of this.deferred.values()) clearTimeout(t);
    this.deferred.clear();
    await this.dispatcher.destroy();
  }

  activate(routeId: string): void {
    const now = Date.now();
    const prev = this.last.get(routeId);
    if (prev !== undefined && now - prev < ACTIVATE_EVERY_MS) {
      // asked a moment ago (maybe for an instance that has stopped since): ask again when the
      // window ends, once, for every request held in between
      if (!this.deferred.has(routeId)) {
        this.deferred.set(routeId, setTimeout(() => {
          this.deferred.delete(routeId);
          this.activate(routeId);
        }, prev + ACTIVATE_EVERY_MS - now).unref());
      }
      return;
    }
    this.last.set(routeId, now);
    if (this.last.size > 10_000) this.last.clear();
    void this.post(routeId);
  }

  /**
   * A table arrived: a route that has an endpoint again is awake, so the next time it goes to zero
   * its first request asks at once (the once-per-window limit is for one burst, not across wakes).
   */
  served(table: RouteTableSpec): void {
    if (this.last.size === 0) return;
    for (const r of table.routes) {
      if (r.endpoints.length === 0 || !this.last.has(r.id)) continue;
      this.last.delete(r.id);
      const t = this.deferred.get(r.id);
      if (t) { clearTimeout(t); this.deferred.delete(r.id); }
    }
  }

  private async post(routeId: string): Promise<void> {
    try {
      const res = await request(new URL(`/v1/routes/${encodeURIComponent(routeId)}/activate`, this.baseUrl), {
        method: 'POST',
        dispatcher: this.dispatcher,
        headers: { authorization: `Bearer ${this.token}` },
        headersTimeout: 5000,
        bodyTimeout: 5000,
      });
      const text = await res.body.text();
      // no room for an instance: the held requests are answered now, not at the hold's timeout
      if (res.statusCode === 409 && errorCode(text) === 'container_quota_exceeded') {
        this.logger.warn({ route: routeId }, 'the app cannot be woken now: its owner\'s container quota is full');
        // (the ask already due for this burst would only be refused again: a later request asks
        // anew, once per window as before)
        const t = this.deferred.get(routeId);
        if (t) { clearTimeout(t); this.deferred.delete(routeId); }
        this.onRefused?.(routeId);
        return;
      }
      if (res.statusCode >= 400) this.logger.warn({ route: routeId, status: res.statusCode, body: text.slice(0, 300) }, 'control plane refused to wake the app');
      else this.logger.info({ route: routeId }, 'asked the control plane to wake the app');
    } catch (e) {
      this.logger.warn({ route: routeId, err: (e as Error).message }, 'could not reach the control plane to wake the app');
    }
  }
}

/** The API error's code in a body, or null (not the hot path: a wake call answered). */
function errorCode(text: string): string | null {
  try {
    const code = (JSON.parse(text) as { error?: { code?: unknown } }).error?.code;
    return typeof code === 'string' ? code : null;
  } catch {
    return null;
  }
}
