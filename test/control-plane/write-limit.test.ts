import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Api } from '../helpers/api.js';
import { startTestControlPlane, type TestControlPlane } from '../helpers/control-plane.js';

// BERTH_WRITES_PER_MINUTE: changes per user and minute (each a transaction, an event, often a
// route table for every proxy); reads are not counted, nor other users' changes.
describe('writes per user and minute', () => {
  let t: TestControlPlane;
  beforeAll(async () => {
    process.env.BERTH_WRITES_PER_MINUTE = '5';
    try {
      t = await startTestControlPlane({ seedDefaultUser: false });
    } finally {
      delete process.env.BERTH_WRITES_PER_MINUTE;
    }
  });
  afterAll(async () => { await t?.close(); });

  it('past the limit a write is 429 with Retry-After; reads and another user go on', async () => {
    const a = await new Api(t.cp.url).signup('writes-a@example.com');
    const b = await new Api(t.cp.url).signup('writes-b@example.com');
    for (let i = 0; i < 5; i++) expect((await a.post('/api/auth/tokens', { name: `t${i}` })).status).toBe(201);
    const over = await a.post('/api/auth/tokens', { name: 'one too many' });
    expect(over.status).toBe(429);
    expect(over.body.error.code).toBe('too_many_requests');
    expect(Number(over.headers.get('retry-after'))).toBeGreaterThan(0);
    expect((await a.get('/api/auth/tokens')).status).toBe(200);
    expect((await b.post('/api/auth/tokens', { name: 'mine' })).status).toBe(201);
  });
});
