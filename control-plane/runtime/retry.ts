import { setTimeout as sleep } from 'node:timers/promises';

/**
 * Retry `fn` with exponential backoff (plus jitter) while `isTransient(err)` says so. An aborted
 * `signal` ends a wait between attempts at once, with the last error.
 */
export async function withRetry<T>(
  fn: (attempt: number) => Promise<T>,
  opts: { attempts?: number; baseMs?: number; maxMs?: number; isTransient: (e: unknown) => boolean; onRetry?: (e: unknown, attempt: number, delayMs: number) => void; signal?: AbortSignal },
): Promise<T> {
  const attempts = opts.attempts ?? 4;
  const base = opts.baseMs ?? 200;
  const max = opts.maxMs ?? 3000;
  for (let attempt = 1; ; attempt++) {
    try {
      return await fn(attempt);
    } catch (e) {
      if (attempt >= attempts || !opts.isTransient(e) || opts.signal?.aborted) throw e;
      const delay = Math.min(max, base * 2 ** (attempt - 1)) * (0.75 + Math.random() * 0.5);
      opts.onRetry?.(e, attempt, delay);
      // (an abort ends the wait early: rejected, and thrown below with the last error)
      await sleep(delay, undefined, { signal: opts.signal }).catch(() => {});
      if (opts.signal?.aborted) throw e;
    }
  }
}

const TRANSIENT_CODES = new Set(['ECONNRESET', 'ECONNREFUSED', 'ENOENT', 'EPIPE', 'ETIMEDOUT', 'EAI_AGAIN', 'ESOCKETTIMEDOUT', 'UND_ERR_SOCKET']);

/**
 * Connection-level failures and 5xx answers that typically pass (daemon restarting, socket
 * reset, "connection refused" while dockerd comes up). 4xx and build errors are not transient.
 * ENOENT counts because the socket file disappears while dockerd restarts.
 */
export function isTransientDockerError(e: unknown): boolean {
  const err = e as { code?: string; statusCode?: number; message?: string };
  if (!err) return false;
  if (err.code && TRANSIENT_CODES.has(err.code)) return true;
  if (typeof err.statusCode === 'number') return err.statusCode === 502 || err.statusCode === 503 || err.statusCode === 504;
  return /socket hang up|connection reset/i.test(err.message ?? '');
}
