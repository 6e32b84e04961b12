/**
 * Upstream timeouts without a timer per request: a coarse clock and one sweep every 50 ms over
 * the open connections and the pools holding idle ones. Deadlines are plain numbers on the
 * connection; a timeout fires within 50 ms of its due time, which is all connect, header and idle
 * timeouts of hundreds of milliseconds and more need. The hot path reads `clock.now` instead of
 * calling Date.now() (breaker timing is fine at 50 ms resolution). The sweep always runs
 * (unref'd), so the clock is never staler than one period.
 */
import { reportInternalError } from '../resilience/internal-errors.js';

export const SWEEP_MS = 50;

export const clock = { now: Date.now() };

interface Expirable {
  expire(now: number): void;
}

const watched = new Set<Expirable>();

function sweep(): void {
  const now = Date.now();
  clock.now = now;
  for (const c of watched) {
    try {
      c.expire(now);
    } catch (e) {
      // a bug in one timeout must not stop the sweep (nor, in a timer callback, kill the process)
      reportInternalError('in the timeout sweep', e);
    }
  }
}

setInterval(sweep, SWEEP_MS).unref();

export function watch(c: Expirable): void {
  watched.add(c);
}

export function unwatch(c: Expirable): void {
  watched.delete(c);
}
