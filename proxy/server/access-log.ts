import type { Logger } from '../../shared/logging.js';

/**
 * Access log: one pino line per (sampled) request. `rate` 1 logs everything, 0 nothing,
 * 0.01 one request in a hundred (deterministic counter, no Math.random per request).
 */
export class AccessLog {
  private every: number;
  private n = 0;
  constructor(private readonly logger: Logger, rate: number) {
    this.every = rate <= 0 ? 0 : Math.max(1, Math.round(1 / rate));
  }

  get enabled(): boolean {
    return this.every > 0;
  }

  /** Returns true when this request should be logged. */
  sample(): boolean {
    if (this.every === 0) return false;
    if (++this.n >= this.every) {
      this.n = 0;
      return true;
    }
    return false;
  }

  /** `traceparent`: the W3C trace context forwarded upstream (its trace id is logged), '' when none. */
  write(requestId: string, method: string, host: string, path: string, status: number, route: string, endpoint: string, ms: number, reason: string, traceparent = ''): void {
    this.logger.info({
      requestId, traceId: traceparent.length === 55 ? traceparent.slice(3, 35) : undefined,
      method, host, path, status, route, endpoint, ms: Math.round(ms * 1000) / 1000, reason: reason || undefined,
    }, 'request');
  }
}

/** Parse `--access-log` values: on | off | a sampling rate in (0,1]. */
export function parseAccessLogRate(v: string | undefined): number {
  if (v === undefined || v === 'on' || v === 'true' || v === '1') return 1;
  if (v === 'off' || v === 'false' || v === '0') return 0;
  const n = Number(v.startsWith('sample=') ? v.slice(7) : v);
  if (!Number.isFinite(n) || n < 0 || n > 1) throw new Error(`access log setting "${v}" must be on, off or a rate between 0 and 1`);
  return n;
}
