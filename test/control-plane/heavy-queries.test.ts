import { afterAll, describe, expect, it } from 'vitest';
import { HeavyQueries, heavyQueries } from '../../control-plane/http/heavy-queries.js';
import { Api } from '../helpers/api.js';
import { startTestControlPlane, type TestControlPlane } from '../helpers/control-plane.js';

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

describe('heavy queries: the routes that sum a user\'s history take a slot each', () => {
  let t: TestControlPlane;
  afterAll(async () => { await t?.close(); });

  it('metrics, series, billing, an image\'s billing and invoices answer 429 busy while the user\'s slots are held; others are not held back', async () => {
    t = await startTestControlPlane({ seedDefaultUser: false, dockerHost: 'unix:///nonexistent/docker.sock' });
    const alice = await new Api(t.cp.url).signup('alice-heavy@example.com');
    const bob = await new Api(t.cp.url).signup('bob-heavy@example.com');
    const aliceId = (await alice.get('/api/auth/me')).body.user.id as number;
    const month = new Date().toISOString().slice(0, 7);
    const paths = ['/api/metrics', '/api/metrics/series', '/api/billing', '/api/billing/images/999999', `/api/billing/invoices/${month}`];
    const limits = heavyQueries(t.cp.app);
    let open!: () => void;
    const gate = new Promise<void>((r) => (open = r));
    const held = Array.from({ length: limits.maxPerUser }, () => limits.run(aliceId, () => gate));
    for (const p of paths) {
      const r = await alice.get(p);
      expect([r.status, r.body.error?.code, r.headers.get('retry-after')], p).toEqual([429, 'busy', '1']);
      expect((await bob.get(p)).status, p).not.toBe(429);
    }
    open();
    await Promise.all(held);
    for (const p of paths) expect((await alice.get(p)).status, p).toBe(p.includes('999999') ? 404 : 200);
  }, 60_000);
});
