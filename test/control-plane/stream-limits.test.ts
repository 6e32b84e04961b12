/**
 * Open streams (log reads and follows, build-log follows, workload live views) are capped per
 * user, in all, and per client address: accounts made by the dozen from one host must not fill
 * the control plane's total and lock every other tenant out of their logs.
 */
import { describe, expect, it } from 'vitest';
import { ApiError } from '../../control-plane/http/errors.js';
import { StreamLimits } from '../../control-plane/http/stream-limits.js';

const refused = (f: () => unknown) => {
  try {
    f();
  } catch (e) {
    return e instanceof ApiError && e.status === 429 ? e.message : `not a 429: ${(e as Error).message}`;
  }
  return 'not refused';
};

describe('StreamLimits', () => {
  it('one address holds at most its share, whatever the accounts; other addresses are not held back; a release frees its places', () => {
    const l = new StreamLimits(20, 500, 3);
    const held = [1, 2, 3].map((user) => l.acquire(user, 'log follow', '203.0.113.7'));
    expect(refused(() => l.acquire(4, 'log follow', '203.0.113.7'))).toMatch(/your address already has 3 open streams/);
    const other = l.acquire(4, 'log follow', '198.51.100.1');
    held[0]();
    held[0](); // idempotent
    const again = l.acquire(5, 'log follow', '203.0.113.7');
    expect(l.count()).toBe(4);
    for (const r of [again, other, held[1], held[2]]) r();
    expect(l.count()).toBe(0);
  });

  it('an IPv6 client is counted by its /64, and its /48 holds at most twice an address\'s share', () => {
    const l = new StreamLimits(20, 500, 3);
    const held: (() => void)[] = [];
    for (let i = 0; i < 3; i++) held.push(l.acquire(10 + i, 'log follow', `2001:db8:5:1::${i + 1}`));
    expect(refused(() => l.acquire(20, 'log follow', '2001:db8:5:1:ffff::9'))).toMatch(/your address already has 3/);
    for (let i = 0; i < 3; i++) held.push(l.acquire(30 + i, 'log follow', `2001:db8:5:2::${i + 1}`));
    expect(refused(() => l.acquire(40, 'log follow', '2001:db8:5:3::1'))).toMatch(/your network \(2001:db8:5::\/48\) already has 6/);
    // the refusal took nothing: another network is free, and releases bring it all back to zero
    held.push(l.acquire(41, 'log follow', '2001:db8:6::1'));
    for (const r of held) r();
    expect(l.count()).toBe(0);
    expect(l.acquire(42, 'log follow', '2001:db8:5:3::1')).toBeTypeOf('function');
  });

  it('a refusal by the user or total cap gives the address place back', () => {
    const l = new StreamLimits(1, 500, 2);
    const a = l.acquire(1, 'log read', '203.0.113.7');
    expect(refused(() => l.acquire(1, 'log read', '203.0.113.7'))).toMatch(/you already have 1 open log read streams/);
    // the refused one took no address place: a second user from there still gets one
    const b = l.acquire(2, 'log read', '203.0.113.7');
    a();
    b();
    expect(l.count()).toBe(0);
  });

  it('the default share is a fifth of the total (at least the per-user cap)', () => {
    expect(new StreamLimits(20, 500).maxPerAddress).toBe(100);
    expect(new StreamLimits(20, 50).maxPerAddress).toBe(20);
  });
});
