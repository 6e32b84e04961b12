/**
 * Private apps (control-plane/apps/access.ts): PATCH /api/apps/:host {"private": true}, invoker
 * tokens made, listed and revoked per app, the route table carrying their digests, and a real
 * proxy subscribed to the control plane letting only token holders through. Another user can do
 * none of it; a proxy that does not ask for `auth` never gets a private app's routes.
 */
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { BIN } from '../e2e/support.js';
import { tokenDigest } from '../../control-plane/apps/access.js';
import { withoutAuth } from '../../control-plane/discovery/route-table.js';
import { Api } from '../helpers/api.js';
import { insertReadyImage, startTestControlPlane, type TestControlPlane } from '../helpers/control-plane.js';
import { get, startProxy, startUpstream, waitFor, type ProxyProc, type Upstream } from '../proxy/harness.js';

const TOKEN = 'private-apps-proxy-token';
const HOST = 'vault.example.com';
let t: TestControlPlane;
let alice: Api;
let bob: Api;
let up: Upstream;
let px: ProxyProc;
let imageId = 0;

beforeAll(async () => {
  // no Docker: the container row below stays as written (the reconcile loop skips its passes)
  t = await startTestControlPlane({ seedDefaultUser: false, proxyToken: TOKEN, dockerHost: 'unix:///nonexistent/docker.sock', routeDebounceMs: 10 });
  alice = await new Api(t.cp.url).signup('private-a@example.com');
  bob = await new Api(t.cp.url).signup('private-b@example.com');
  const aliceId = Number((await alice.get('/api/auth/me')).body.user.id);
  up = await startUpstream('vault');
  imageId = await insertReadyImage(t.cp, aliceId, HOST);
  await t.cp.db.query(`UPDATE images SET min_instances = 1, min_instances_provisioned = true, routable_at = now() WHERE id = $1`, [imageId]);
  await t.cp.db.query(`INSERT INTO containers (user_id, image_id, name, status, health, internal_port, desired, host_port)
                       VALUES ($1, $2, 'vault-1', 'running', 'healthy', 8080, 'running', $3)`, [aliceId, imageId, Number(up.address.split(':')[1])]);
  await t.cp.app.platform.hub.rebuild();
  px = await startProxy(null, ['--control-plane', t.cp.url, '--token', TOKEN]);
  await waitFor(async () => (await get(px, HOST, '/')).status === 200, 15_000);
}, 60_000);
afterAll(async () => {
  await px?.stop();
  await up?.close();
  await t?.close();
});

const call = (headers: Record<string, string> = {}) => get(px, HOST, '/', { headers });

describe('private apps', () => {
  it('a private app answers only invoker tokens; revoking one shuts it out; public again answers anyone', async () => {
    const on = await alice.req('PATCH', `/api/apps/${HOST}`, { json: { private: true } });
    expect(on.status, on.text).toBe(200);
    expect(on.body.private).toBe(true);
    // no token yet: nobody gets in
    await waitFor(async () => (await call()).status === 401, 10_000);

    const made = await alice.post(`/api/apps/${HOST}/invokers`, { name: 'ci job' });
    expect(made.status, made.text).toBe(201);
    expect(made.body.token).toMatch(/^bi_[A-Za-z0-9_-]{43}$/);
    const other = (await alice.post(`/api/apps/${HOST}/invokers`, { name: 'cron' })).body;
    await waitFor(async () => (await call({ authorization: `Bearer ${made.body.token}` })).status === 200, 10_000);
    await waitFor(async () => (await call({ 'x-berth-authorization': `Bearer ${other.token}` })).status === 200, 10_000);
    const r = await call({ 'x-berth-authorization': `Bearer ${other.token}` });
    expect(r.status).toBe(200);
    expect(JSON.parse(r.body).headers['x-berth-authorization']).toBeUndefined();
    expect((await call({ authorization: 'Bearer bi_guess' })).status).toBe(401);
    const before = up.hits;
    expect((await call()).status).toBe(401);
    expect(up.hits).toBe(before);

    // listed without the tokens; the database keeps digests only
    const list = await alice.get(`/api/apps/${HOST}/invokers`);
    expect(list.body.invokers.map((i: { name: string }) => i.name)).toEqual(['ci job', 'cron']);
    expect(JSON.stringify(list.body)).not.toContain(made.body.token);
    const { rows } = await t.cp.db.query<{ token_sha256: string }>('SELECT token_sha256 FROM app_invokers ORDER BY id');
    expect(rows.map((x) => x.token_sha256)).toEqual([tokenDigest(made.body.token), tokenDigest(other.token)]);
    const events = await t.cp.db.query<{ payload: unknown }>('SELECT payload FROM events WHERE app_hostname = $1', [HOST]);
    expect(JSON.stringify(events.rows)).not.toContain(made.body.token);

    // revoked: refused within a push
    expect((await alice.req('DELETE', `/api/apps/${HOST}/invokers/${made.body.id}`)).status).toBe(204);
    await waitFor(async () => (await call({ authorization: `Bearer ${made.body.token}` })).status === 401, 10_000);
    expect((await call({ authorization: `Bearer ${other.token}` })).status).toBe(200);
    expect((await alice.req('DELETE', `/api/apps/${HOST}/invokers/${made.body.id}`)).status).toBe(404);

    // a proxy predating `auth` never gets the route (it would serve it to anyone)
    const table = t.cp.app.platform.hub.table!;
    expect(table.routes.find((x) => x.id === `img-${imageId}`)?.auth?.tokens).toEqual([tokenDigest(other.token)]);
    expect(withoutAuth(table).routes.some((x) => x.id === `img-${imageId}`)).toBe(false);

    // public again
    expect((await alice.req('PATCH', `/api/apps/${HOST}`, { json: { private: false } })).body.private).toBe(false);
    await waitFor(async () => (await call()).status === 200, 10_000);
  });

  it("another user can neither change the app's access nor see, make or revoke its tokens", async () => {
    expect((await bob.req('PATCH', `/api/apps/${HOST}`, { json: { private: true } })).status).toBe(404);
    expect((await bob.get(`/api/apps/${HOST}/invokers`)).status).toBe(404);
    expect((await bob.post(`/api/apps/${HOST}/invokers`, { name: 'x' })).status).toBe(404);
    const mine = (await alice.get(`/api/apps/${HOST}/invokers`)).body.invokers[0];
    expect((await bob.req('DELETE', `/api/apps/${HOST}/invokers/${mine.id}`)).status).toBe(404);
    expect((await alice.get(`/api/apps/${HOST}/invokers`)).body.invokers).toHaveLength(1);
  });

  it('berth access: private with a new token, shown once; revoked; public again', async () => {
    const env = { ...process.env, BERTH_API: t.cp.url, BERTH_TOKEN: alice.token!, HOME: '/nonexistent-home', NO_COLOR: '1' };
    const berth = (...a: string[]) => promisify(execFile)(process.execPath, [BIN, 'access', HOST, ...a], { env }).then((r) => r.stdout, (e) => Promise.reject(Object.assign(e, { out: e.stdout + e.stderr })));
    const made = JSON.parse(await berth('--private', '--add-invoker', 'from cli', '--json'));
    expect(made).toMatchObject({ app_hostname: HOST, private: true, created: { name: 'from cli' } });
    await waitFor(async () => (await call({ authorization: `Bearer ${made.created.token}` })).status === 200, 10_000);
    const text = await berth();
    expect(text).toContain(`${HOST} is private`);
    expect(text).toContain('from cli');
    expect(text).not.toContain(made.created.token);
    await berth('--revoke-invoker', String(made.created.id), '--public');
    await waitFor(async () => (await call()).status === 200, 10_000);
    await expect(berth('--private', '--public')).rejects.toMatchObject({ code: 2 });
    await expect(berth('--revoke-invoker', 'x1')).rejects.toMatchObject({ code: 2 });
  });

  it('refuses malformed input with 400', async () => {
    for (const body of [{}, { private: 'yes' }, { private: true, extra: 1 }]) {
      expect((await alice.req('PATCH', `/api/apps/${HOST}`, { json: body })).status, JSON.stringify(body)).toBe(400);
    }
    for (const body of [{}, { name: '' }, { name: 'x'.repeat(64) }, { name: '../etc' }, { name: 'ok', token: 'mine' }]) {
      expect((await alice.post(`/api/apps/${HOST}/invokers`, body)).status, JSON.stringify(body)).toBe(400);
    }
    expect((await alice.req('DELETE', `/api/apps/${HOST}/invokers/abc`)).status).toBe(400);
  });
});
