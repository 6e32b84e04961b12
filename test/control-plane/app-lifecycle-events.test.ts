import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Api } from '../helpers/api.js';
import { insertReadyImage, startTestControlPlane, type TestControlPlane } from '../helpers/control-plane.js';

/**
 * An app leaves with its last revision however it is deleted — DELETE /api/apps/:host or
 * DELETE /api/images/:id of the last image — and event consumers hear `app.deleted` either way.
 */
let t: TestControlPlane;
let api: Api;
let userId = 0;

beforeAll(async () => {
  t = await startTestControlPlane({ seedDefaultUser: false, dockerHost: 'unix:///nonexistent/docker.sock' });
  api = await new Api(t.cp.url).signup('app-events@example.com');
  userId = (await api.get('/api/auth/me')).body.user.id as number;
}, 60_000);

afterAll(async () => {
  await t?.close();
});

const events = async (host: string) =>
  (await t.cp.db.query<{ type: string }>('SELECT type FROM events WHERE app_hostname = $1 ORDER BY id', [host])).rows.map((r) => r.type);

describe('app.deleted', () => {
  it('deleting the last revision deletes the app and records app.deleted; an earlier one does not', async () => {
    const host = 'last-revision.example.com';
    const first = await insertReadyImage(t.cp, userId, host);
    const second = await insertReadyImage(t.cp, userId, host);
    expect((await api.req('DELETE', `/api/images/${first}`)).status).toBe(204);
    expect(await events(host)).not.toContain('app.deleted');
    expect((await api.get(`/api/apps/${host}`)).status).toBe(200);
    expect((await api.req('DELETE', `/api/images/${second}`)).status).toBe(204);
    expect((await api.get(`/api/apps/${host}`)).status).toBe(404);
    expect((await events(host)).filter((e) => e === 'app.deleted')).toHaveLength(1);
  });
});
