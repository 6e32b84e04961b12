/**
 * Upstream timeouts without a timer per request: a coarse clock and one sweep every 50 ms over the
 * connections that can time out (connecting, or carrying a request). Deadlines are plain numbers
 * on the connection; a timeout fires within 50 ms of its due time, which is all connect, header
 * and idle timeouts of hundreds of milliseconds and more need.
 */
export const SWEEP_MS = 50;

export const clock = { now: Date.now() };

interface Expirable {
  expire(now: number): void;
}

const watched = new Set<Expirable>();
let timer: NodeJS.Timeout | null = null;

function sweep(): void {
  const now = Date.now();
  clock.now = now;
  for (const c of watched) c.expire(now);
  if (watched.size === 0 && timer !== null) {
    clearInterval(timer);
    timer = null;
  }
}

export function watch(c: Expirable): void {
  watched.add(c);
  if (timer === null) {
    clock.now = Date.now();
    timer = setInterval(sweep, SWEEP_MS);
    timer.unref();
  }
}

export function unwatch(c: Expirable): void {
  watched.delete(c);
}

/** Things that expire while idle (pools closing idle connections) register here too. */
export function keepTicking(c: Expirable): void {
  watch(c);
}
