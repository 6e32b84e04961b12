/**
 * POST /api/apps/:host/revisions (a revision without a build): the checks that come before
 * Docker is asked for anything. The path that tags an image and serves it is in
 * test/e2e/cli-client.test.ts (berth deploy --no-build).
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Api } from '../helpers/api.js';
import { insertApp, insertReadyImage, startTestControlPlane, type TestControlPlane } from '../helpers/control-plane.js';

let t: TestControlPlane;
let alice: Api;
let bob: Api;
let aliceId = 0;

beforeAll(async () => {
  t = await startTestControlPlane({ seedDefaultUser: false, dockerHost: 'unix:///nonexistent/docker.sock' });
  alice = await new Api(t.cp.url).signup('revise-alice@example.com');
  bob = await new Api(t.cp.url).signup('revise-bob@example.com');
  aliceId = (await alice.get('/api/auth/me')).body.user.id;
}, 60_000);
afterAll(async () => { await t?.close(); });

const revise = (api: Api, host: string, body: unknown) => api.req('POST', `/api/apps/${host}/revisions`, { json: body });

describe('POST /api/apps/:host/revisions', () => {
  it('needs a built revision to start from; another user\'s app and unknown revisions are 404', async () => {
    const host = 'unbuilt.example.com';
    const rev = await insertApp(t.cp.db, aliceId, host);
    await t.cp.db.query(`INSERT INTO images (user_id, name, tag, app_hostname, revision, container_port, min_instances, max_instances, status, docker_image)
                          VALUES ($1, 'x', 'latest', $2, $3, 8080, 1, 1, 'build_failed', 'berth-x:latest')`, [aliceId, host, rev]);
    const r = await revise(alice, host, { env: { A: '1' } });
    expect(r.status, r.text).toBe(409);
    expect(r.body.error.code).toBe('no_ready_revision');
    expect((await revise(alice, host, { from_revision: 7 })).status).toBe(404);
    expect((await revise(bob, host, {})).status).toBe(404);
    expect((await revise(alice, 'nobody.example.com', {})).status).toBe(404);
  });

  it('Docker away is a 503 naming it, not a 500', async () => {
    const host = 'dockerless.example.com';
    await insertReadyImage(t.cp, aliceId, host);
    const r = await revise(alice, host, { env: { A: '1' } });
    expect(r.status, r.text).toBe(503);
    expect(r.body.error.code).toBe('docker_unavailable');
    // nothing was created
    expect((await alice.get(`/api/apps/${host}`)).body.revisions).toHaveLength(1);
  });

  it('refuses what an upload refuses, with a 400 naming it, before anything is tagged', async () => {
    const host = 'built.example.com';
    await insertReadyImage(t.cp, aliceId, host);
    for (const [body, word] of [
      [{ env: { PORT: '1' } }, 'set by berth'],
      [{ env: { '1A': 'x' } }, '1A'],
      [{ env: { A: { b: 1 } } }, 'env'],
      [{ request_timeout_s: 0 }, 'request_timeout_s'],
      [{ min_instances: 5, max_instances: 2 }, 'min_instances'],
      [{ cpu_limit: 'lots' }, 'cpu_limit'],
      [{ traffic_tag: '1bad' }, 'traffic_tag'],
      [{ name: 'x' }, 'name'],
      [{ from_revision: 0 }, 'from_revision'],
    ] as [unknown, string][]) {
      // (a failure here after the checks would be Docker's: this control plane has none, so any
      // request that got past them would be a 5xx, not a 400)
      const r = await revise(alice, host, body);
      expect(r.status, JSON.stringify(body)).toBe(400);
      expect(r.text).toContain(word);
    }
  });
});
