import { describe, expect, it } from 'vitest';
import { HeavyQueries } from '../../control-plane/http/heavy-queries.js';

describe('heavy queries: a few history sums at once per user and in all', () => {
  const gate = () => { let open!: () => void; const p = new Promise<void>((r) => (open = r)); return { p, open }; };

  it('refuses a user past its share and everyone past the total with 429 busy, and frees a slot when a query ends, even by throwing', async () => {
    const h = new HeavyQueries(2, 3);
    const g = gate();
    const a1 = h.run(1, () => g.p);
    const a2 = h.run(1, () => g.p);
    await expect(h.run(1, async () => 'x')).rejects.toMatchObject({ status: 429, code: 'busy', headers: { 'retry-after': '1' } });
    const b1 = h.run(2, () => g.p);
    expect(h.count()).toBe(3);
    // another user: the control plane's total is reached
    await expect(h.run(3, async () => 'x')).rejects.toMatchObject({ status: 429, code: 'busy' });
    g.open();
    await Promise.all([a1, a2, b1]);
    expect([h.count(), h.count(1), h.count(2)]).toEqual([0, 0, 0]);
    await expect(h.run(1, async () => { throw new Error('statement timeout'); })).rejects.toThrow('statement timeout');
    expect(h.count(1)).toBe(0);
    expect(await h.run(1, async () => 'ok')).toBe('ok');
  });
});
