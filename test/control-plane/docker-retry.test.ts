/**
 * Retrying an unreachable Docker daemon (runtime/retry.ts) never holds up a closing control plane:
 * the wait between attempts ends when the signal aborts.
 */
import { describe, expect, it } from 'vitest';
import { withRetry, isTransientDockerError } from '../../control-plane/runtime/retry.js';
import { startTestControlPlane } from '../helpers/control-plane.js';

const enoent = () => Object.assign(new Error('connect ENOENT /nonexistent/docker.sock'), { code: 'ENOENT' });

describe('retrying Docker', () => {
  it('an aborted signal ends the wait between attempts at once, with the last error', async () => {
    const ac = new AbortController();
    let calls = 0;
    const t0 = Date.now();
    const p = withRetry(async () => { calls++; throw enoent(); }, { attempts: 5, baseMs: 5000, isTransient: isTransientDockerError, signal: ac.signal });
    setTimeout(() => ac.abort(), 50);
    await expect(p).rejects.toThrow(/ENOENT/);
    expect(Date.now() - t0).toBeLessThan(1000);
    expect(calls).toBe(1);
  });

  it('without an abort, transient errors are tried again, others are not', async () => {
    let calls = 0;
    await expect(withRetry(async () => { calls++; throw enoent(); }, { attempts: 3, baseMs: 1, isTransient: isTransientDockerError })).rejects.toThrow(/ENOENT/);
    expect(calls).toBe(3);
    calls = 0;
    await expect(withRetry(async () => { calls++; throw Object.assign(new Error('no such image'), { statusCode: 404 }); }, { attempts: 3, baseMs: 1, isTransient: isTransientDockerError })).rejects.toThrow(/no such image/);
    expect(calls).toBe(1);
  });

  it('a control plane whose reconcile pass is retrying an unreachable daemon closes at once', async () => {
    const t = await startTestControlPlane({ dockerHost: 'unix:///nonexistent/docker.sock', reconcileIntervalMs: 100 });
    // (a pass retries for some 3 s: 200, 400, 800, 1600 ms between five attempts)
    await new Promise((r) => setTimeout(r, 300));
    const t0 = Date.now();
    await t.cp.close();
    const ms = Date.now() - t0;
    await t.close();
    // (it waited up to 2 s for the pass)
    expect(ms).toBeLessThan(1500);
  });
});
