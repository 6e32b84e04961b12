import { request as httpRequest } from 'node:http';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Api } from '../helpers/api.js';
import { appFiles, makeTar } from '../helpers/archives.js';
import { insertApp, startTestControlPlane, type TestControlPlane } from '../helpers/control-plane.js';

/**
 * Per-user quotas from configuration (DESIGN.md "Security model"): concurrent builds answer 429,
 * images and running containers 409, in the API's error format. One tenant's use never counts
 * against another. The state that fills a quota is written to the database directly, so no Docker
 * is needed and nothing depends on timing.
 */
let t: TestControlPlane;
let api: Api;
let seq = 0;
const host = () => `quota${++seq}-${process.pid}.example.com`;
let app: Buffer;

async function user(email: string): Promise<{ api: Api; id: number }> {
  const u = await api.signup(email);
  return { api: u, id: Number((await u.get('/api/auth/me')).body.user.id) };
}

async function insertImage(userId: number, status: 'building' | 'ready', maxInstances = 10): Promise<number> {
  const h = host();
  const revision = await insertApp(t.cp.db, userId, h);
  const { rows: [r] } = await t.cp.db.query<{ id: number }>(
    `INSERT INTO images (user_id, name, tag, app_hostname, revision, status, docker_image, min_instances, max_instances, min_instances_provisioned)
     VALUES ($1, 'x', 'latest', $2, $5, $3, 'berth-test/none:1', 0, $4, true) RETURNING id`, [userId, h, status, maxInstances, revision]);
  return Number(r.id);
}

async function insertContainer(userId: number, imageId: number, desired: 'running' | 'stopped'): Promise<number> {
  const { rows: [r] } = await t.cp.db.query<{ id: number }>(
    `INSERT INTO containers (user_id, image_id, name, status, desired) VALUES ($1, $2, $3, $4, $5) RETURNING id`,
    [userId, imageId, `quota-test-${userId}-${++seq}`, desired === 'running' ? 'running' : 'stopped', desired]);
  return Number(r.id);
}

function expectError(r: { status: number; body: any; text: string }, status: number, code: string, message: RegExp) {
  expect(r.status, r.text).toBe(status);
  expect(Object.keys(r.body)).toEqual(['error']);
  expect(r.body.error.code).toBe(code);
  expect(r.body.error.message).toMatch(message);
  expect(typeof r.body.error.requestId).toBe('string');
}

beforeAll(async () => {
  t = await startTestControlPlane({
    seedDefaultUser: false, dockerHost: 'unix:///nonexistent/docker.sock',
    quotas: { images: 3, containers: 2, builds: 2 },
    reconcileIntervalMs: 3_600_000,
  });
  api = new Api(t.cp.url);
  app = await makeTar(appFiles());
});
afterAll(async () => {
  // the rows above name no Docker containers; remove them so the reconcile loop has nothing to do
  await t?.cp.db.query('DELETE FROM containers').catch(() => {});
  await t?.close();
});

describe('per-user quotas', () => {
  it('the configuration carries the quotas (defaults 100 images, 20 containers, 4 builds)', async () => {
    expect(t.cp.config.quotas).toEqual({ images: 3, containers: 2, builds: 2 });
    const { resolveConfig } = await import('../../control-plane/config.js');
    expect(resolveConfig({}).quotas).toEqual({ images: 100, containers: 20, builds: 4 });
    expect(resolveConfig({}).containerPidsLimit).toBe(512);
    expect(resolveConfig({}).containerMemoryDefaultBytes).toBe(512 * 1024 * 1024);
    // a build's steps: 4 GiB (no swap beyond) and 2 CPUs unless told; `none` lifts a limit; a bad value names the variable
    expect(resolveConfig({})).toMatchObject({ buildMemoryBytes: 4 * 1024 ** 3, buildCpus: 2, buildPids: 1024, buildDiskBytes: 10 * 1024 ** 3, buildMinFreeBytes: 1024 ** 3 });
    const env = (vars: Record<string, string>, fn: () => void) => {
      Object.assign(process.env, vars);
      try { fn(); } finally { for (const k of Object.keys(vars)) delete process.env[k]; }
    };
    env({ BERTH_BUILD_MEMORY: '1g', BERTH_BUILD_CPUS: 'none' }, () => expect(resolveConfig({})).toMatchObject({ buildMemoryBytes: 1024 ** 3, buildCpus: null }));
    env({ BERTH_BUILD_MEMORY: 'lots' }, () => expect(() => resolveConfig({})).toThrow(/^BERTH_BUILD_MEMORY="lots": a size like/));
    env({ BERTH_BUILD_CPUS: '0' }, () => expect(() => resolveConfig({})).toThrow(/^BERTH_BUILD_CPUS="0": .*between 0.01 and 256/));
    env({ BERTH_BUILD_PIDS: 'none' }, () => expect(resolveConfig({}).buildPids).toBeNull());
    env({ BERTH_BUILD_DISK: '500m' }, () => expect(resolveConfig({}).buildDiskBytes).toBe(500 * 1024 ** 2));
    env({ BERTH_BUILD_DISK: 'none' }, () => expect(resolveConfig({}).buildDiskBytes).toBeNull());
    env({ BERTH_BUILD_DISK: 'huge' }, () => expect(() => resolveConfig({})).toThrow(/^BERTH_BUILD_DISK="huge": a size like/));
    env({ BERTH_BUILD_PIDS: '256' }, () => expect(resolveConfig({}).buildPids).toBe(256));
    for (const bad of ['8', '1e3', '-5', '2000000', 'many']) {
      env({ BERTH_BUILD_PIDS: bad }, () => expect(() => resolveConfig({})).toThrow(new RegExp(`^BERTH_BUILD_PIDS="${bad}": a whole number from 16 to 1000000 \\(or none\\)$`)));
    }
  });

  it('concurrent builds past the quota answer 429 too_many_builds; another user is unaffected', async () => {
    const alice = await user('q-alice@example.com');
    await insertImage(alice.id, 'building');
    await insertImage(alice.id, 'building');
    const r = await alice.api.upload({ name: 'third', app_hostname: host() }, app);
    expectError(r, 429, 'too_many_builds', /2 build\(s\) queued or running.*\(2\)/);
    expect(r.headers.get('retry-after')).toBeTruthy();
    // answered before the file is sent: a request that sent its head and a first kilobyte gets it
    const u = new URL(t.cp.url);
    const early = await new Promise<number>((resolve, reject) => {
      const req = httpRequest({ host: u.hostname, port: u.port, method: 'POST', path: '/api/images',
        headers: { authorization: `Bearer ${alice.api.token}`, 'content-type': 'multipart/form-data; boundary=b', 'content-length': String(200 * 1024 * 1024) } });
      req.on('response', (res) => { resolve(res.statusCode ?? 0); req.destroy(); });
      req.on('error', reject);
      req.write(Buffer.alloc(1024));
    });
    expect(early).toBe(429);
    const bob = await user('q-bob@example.com');
    expect((await bob.api.upload({ name: 'fine', app_hostname: host(), min_instances: 0 }, app)).status).toBe(201);
  });

  it('images past the quota answer 409 image_quota_exceeded', async () => {
    const carol = await user('q-carol@example.com');
    for (let i = 0; i < 3; i++) await insertImage(carol.id, 'ready');
    const r = await carol.api.upload({ name: 'fourth', app_hostname: host() }, app);
    expectError(r, 409, 'image_quota_exceeded', /3 images.*\(3\).*delete one/);
  });

  it('containers past the quota answer 409 container_quota_exceeded, on create and on start', async () => {
    const dave = await user('q-dave@example.com');
    const img = await insertImage(dave.id, 'ready');
    // more than the quota at once
    expectError(await dave.api.post(`/api/containers/${img}`, { count: 3 }), 409, 'container_quota_exceeded', /0 running container\(s\) of the 2 allowed/);
    await insertContainer(dave.id, img, 'running');
    await insertContainer(dave.id, img, 'running');
    expectError(await dave.api.post(`/api/containers/${img}`, { count: 1 }), 409, 'container_quota_exceeded', /2 running container\(s\) of the 2 allowed/);
    // a stopped container does not count, but starting it would pass the quota
    const stopped = await insertContainer(dave.id, img, 'stopped');
    expectError(await dave.api.post(`/api/containers/${stopped}/start`), 409, 'container_quota_exceeded', /of the 2 allowed/);
    // nothing was created by the refused requests
    const { rows: [{ n }] } = await t.cp.db.query<{ n: number }>('SELECT count(*)::int AS n FROM containers WHERE user_id = $1', [dave.id]);
    expect(n).toBe(3);
  });

  it('a wake of an app at zero with no room in its owner\'s quota is refused at once (the proxies answer their held requests 503)', async () => {
    const fay = await user('q-fay@example.com');
    const asleep = await insertImage(fay.id, 'ready'); // min_instances 0, no instance: scaled to zero
    const other = await insertImage(fay.id, 'ready');
    const filled = [await insertContainer(fay.id, other, 'running'), await insertContainer(fay.id, other, 'running')];
    const wake = () => new Api(t.cp.url).req('POST', `/v1/routes/img-${asleep}/activate`, { token: t.cp.app.platform.proxyTokens.current });
    expectError(await wake(), 409, 'container_quota_exceeded', new RegExp(`^route img-${asleep} has no instance and its owner's container quota is full: none can start now$`));
    // room again: the wake is taken (Docker is away here: it fails after the answer, logged)
    await t.cp.db.query('DELETE FROM containers WHERE id = $1', [filled[0]]);
    expect((await wake()).status).toBe(202);
  });

  it('a user past a quota lowered since is told what they have', async () => {
    const erin = await user('q-erin@example.com');
    const img = await insertImage(erin.id, 'ready');
    for (let i = 0; i < 3; i++) await insertContainer(erin.id, img, 'running');
    expectError(await erin.api.post(`/api/containers/${img}`, { count: 1 }), 409, 'container_quota_exceeded', /^you have 3 running container\(s\) of the 2 allowed/);
  });
});
