import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startControlPlane } from '../../control-plane/app.js';
import { Api } from '../helpers/api.js';
import { startTestControlPlane, type TestControlPlane } from '../helpers/control-plane.js';

const CODE = 'invite-code-0123456789';

describe('who may sign up: BERTH_SIGNUP open, invite or closed', () => {
  let invite: TestControlPlane;
  let closed: TestControlPlane;
  beforeAll(async () => {
    [invite, closed] = await Promise.all([
      startTestControlPlane({ seedDefaultUser: false, signup: 'invite', signupInvite: CODE }),
      startTestControlPlane({ seedDefaultUser: false, signup: 'closed' }),
    ]);
  });
  afterAll(async () => { await Promise.all([invite?.close(), closed?.close()]); });

  const signup = (t: TestControlPlane, body: Record<string, unknown>) =>
    new Api(t.cp.url).req('POST', '/api/auth/signup', { json: { email: `u${Math.random().toString(36).slice(2)}@example.com`, password: 'correct-horse-1', ...body }, token: null });

  it('invite: no code or a wrong one is 403 invite_required, the code signs up', async () => {
    for (const body of [{}, { invite: '' }, { invite: CODE.slice(0, -1) }, { invite: CODE + 'x' }, { invite: CODE.toUpperCase() }]) {
      const r = await signup(invite, body);
      expect(r.status, JSON.stringify(body)).toBe(403);
      expect(r.body.error.code).toBe('invite_required');
    }
    expect((await signup(invite, { invite: 'x'.repeat(257) })).status).toBe(400);
    const ok = await signup(invite, { invite: CODE });
    expect(ok.status, ok.text).toBe(201);
    expect(ok.body.token).toBeTruthy();
  });

  it('closed: 403 signup_closed, whatever is sent', async () => {
    for (const body of [{}, { invite: CODE }]) {
      const r = await signup(closed, body);
      expect(r.status).toBe(403);
      expect(r.body.error.code).toBe('signup_closed');
    }
  });

  it('refuses to start on an invite policy without a code worth the name, or an unknown policy', async () => {
    await expect(startControlPlane({ port: 0, quiet: true, signup: 'invite', signupInvite: 'short' })).rejects.toThrow(/at least 16 characters/);
    await expect(startControlPlane({ port: 0, quiet: true, signup: 'ajar' as never })).rejects.toThrow(/open, invite or closed/);
  });
});
