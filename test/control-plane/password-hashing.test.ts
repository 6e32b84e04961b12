import { describe, expect, it } from 'vitest';
import { hashingNow, hashPassword, MAX_HASHING, MAX_WAITING, verifyPassword } from '../../control-plane/auth/passwords.js';

describe('password hashing takes a bounded share of the thread pool', () => {
  it(`hashes at most ${MAX_HASHING} at once, queues ${MAX_WAITING}, and answers 503 busy past that; every queued one completes`, async () => {
    let peak = 0;
    const watch = setInterval(() => { peak = Math.max(peak, hashingNow().running); }, 1);
    const n = MAX_HASHING + MAX_WAITING + 6;
    const results = await Promise.allSettled(Array.from({ length: n }, (_, i) => hashPassword(`pw-${i}`)));
    clearInterval(watch);
    const refused = results.filter((r) => r.status === 'rejected');
    expect(refused).toHaveLength(6);
    for (const r of refused) expect((r as PromiseRejectedResult).reason).toMatchObject({ status: 503, code: 'busy', headers: { 'retry-after': '1' } });
    const done = results.filter((r): r is PromiseFulfilledResult<string> => r.status === 'fulfilled');
    expect(done).toHaveLength(MAX_HASHING + MAX_WAITING);
    expect(peak).toBeLessThanOrEqual(MAX_HASHING);
    expect(hashingNow()).toEqual({ running: 0, waiting: 0 });
    // the hashes are real
    expect(await verifyPassword(done[3].value, 'pw-3')).toBe(true);
    expect(await verifyPassword(done[3].value, 'pw-4')).toBe(false);
  }, 60_000);
});
