import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { ControlPlane } from '../../control-plane/app.js';
import { recordEvent } from '../../control-plane/events/outbox.js';
import { Api } from '../helpers/api.js';
import { startTestControlPlane, type TestControlPlane } from '../helpers/control-plane.js';

let t: TestControlPlane;
let cp: ControlPlane;

beforeAll(async () => {
  t = await startTestControlPlane({ env: 'development' });
  cp = t.cp;
});
afterAll(async () => {
  await t?.close();
});

describe('GET /api/events?after=', () => {
  it('never skips an event whose transaction commits after a later id', async () => {
    const api = await new Api(cp.url).signup('events@example.com');
    const me = (await api.get('/api/auth/me')).body.user.id as number;
    // transaction A takes the lower id and stays open
    const a = await cp.db.connect();
    await a.query('BEGIN');
    const low = await recordEvent(a, { type: 'test.low', userId: me });
    // transaction B takes a higher id and commits
    const high = await recordEvent(cp.db, { type: 'test.high', userId: me });
    expect(high.id).toBeGreaterThan(low.id);
    const during = (await api.get('/api/events?after=0')).body;
    // the higher id is held back while a lower one may still appear
    expect(during.events.map((e: { type: string }) => e.type)).not.toContain('test.high');
    await a.query('COMMIT');
    a.release();
    const after = (await api.get(`/api/events?after=${during.next_after}`)).body;
    expect(after.events.map((e: { type: string }) => e.type)).toEqual(['test.low', 'test.high']);
  });

  it('rejects bad paging parameters', async () => {
    const api = await new Api(cp.url).signup('events2@example.com');
    expect((await api.get('/api/events?after=-1')).status).toBe(400);
    expect((await api.get('/api/events?limit=0')).status).toBe(400);
    expect((await api.get('/api/events?limit=5000')).status).toBe(400);
  });
});
