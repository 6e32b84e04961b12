/**
 * A revision none of whose instances can be made (the user's container quota is full) says so
 * while it waits (`images.start_blocked`), is given up on past the start deadline as Knative gives
 * up a revision whose pods cannot be scheduled (apps/start-failure.ts), and starts as soon as room
 * is made before that. Before, such a deploy waited silently until its client gave up.
 */
import { randomBytes } from 'node:crypto';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { Api } from '../helpers/api.js';
import { makeTar } from '../helpers/archives.js';
import { startTestControlPlane, type TestControlPlane } from '../helpers/control-plane.js';
import { describeWithDocker, docker } from '../helpers/docker.js';
import { httpdApp, runningOf, teardownStack, waitFor } from './support.js';

const tag = randomBytes(3).toString('hex');
const DEADLINE_MS = 6000;
let t: TestControlPlane;
let user: Api;
let clusterId = '';
const dockerImages: string[] = [];

async function deploy(name: string, min: number, max = 1): Promise<number> {
  const up = await user.upload({ name, app_hostname: `${name}-${tag}.example.com`, min_instances: min, max_instances: max, health_path: '/' },
    await makeTar(httpdApp([{ name: 'index.html', content: `${name}\n` }])));
  expect(up.status, up.text).toBe(201);
  dockerImages.push(up.body.docker_image);
  expect((await user.waitForBuild(up.body.id, 90_000)).status).toBe('ready');
  return up.body.id;
}
const image = async (id: number) => (await user.get(`/api/images/${id}`)).body;
const healthy = (id: number) => waitFor(`image ${id} healthy`, async () => {
  const cs = await runningOf<{ desired: string; health: string; id: number }>(user, id);
  return cs.length === 1 && cs[0].health === 'healthy' && cs[0];
}, 30_000, 100);

await describeWithDocker('a revision none of whose instances can be made', () => {
  beforeAll(async () => {
    t = await startTestControlPlane({
      seedDefaultUser: false, health: { intervalMs: 100, healthyThreshold: 1 }, reconcileIntervalMs: 300,
      quotas: { images: 10, containers: 1, builds: 2 }, revisionStartDeadlineMs: DEADLINE_MS,
    });
    clusterId = t.cp.app.platform.clusterId;
    user = await new Api(t.cp.url).signup(`blocked-${tag}@example.com`);
  }, 60_000);

  afterAll(async () => {
    await teardownStack({ cp: t, clusterId, dockerImage: '' });
    for (const i of dockerImages) await docker.getImage(i).remove({ force: true }).catch(() => {});
  });

  it('says why while it waits, and is given up on past the start deadline', async () => {
    const a = await deploy('first', 1);
    await healthy(a); // the quota (one container) is now full
    const b = await deploy('second', 1);
    const waiting = await waitFor('blocked', async () => { const i = await image(b); return i.start_blocked ? i : undefined; }, 10_000, 100);
    expect(waiting).toMatchObject({ start_failed_at: null, start_failure: null });
    expect(waiting.start_blocked).toBe('the per-user container quota is full: you have 1 running container(s) of the 1 allowed; stop or delete some first');
    expect((await user.get(`/api/apps/second-${tag}.example.com`)).body.revisions[0]).toMatchObject({ start_blocked: waiting.start_blocked, start_failure: null });
    const t0 = Date.now();
    const failed = await waitFor('given up', async () => { const i = await image(b); return i.start_failed_at ? i : undefined; }, 20_000, 100);
    expect(Date.now() - t0).toBeGreaterThan(DEADLINE_MS - 2000);
    expect(failed.start_failure).toBe(`no instance could be started within 6 s (${waiting.start_blocked})`);
    expect((await t.cp.db.query('SELECT start_blocked, start_blocked_at FROM images WHERE id = $1', [b])).rows[0]).toEqual({ start_blocked: null, start_blocked_at: null });
    const app = (await user.get(`/api/apps/second-${tag}.example.com`)).body;
    expect(app.revisions[0]).toMatchObject({ image_id: b, start_failure: failed.start_failure, serving: false });
    const ev = (await user.get('/api/events?limit=1000')).body.events.find((e: any) => e.type === 'image.start_failed' && e.image_id === b);
    expect(ev.payload).toMatchObject({ reason: failed.start_failure, container_id: null, deploy_dropped: true });
    expect(await runningOf(user, b)).toEqual([]);
    expect((await runningOf(user, a)).length).toBe(1); // the app that runs is left alone
  }, 180_000);

  it('starts as soon as room is made before the deadline (and the note goes)', async () => {
    const [running] = await runningOf<{ desired: string; id: number }>(user, (await user.get('/api/images')).body.images.find((i: any) => i.name === 'first').id);
    const c = await deploy('third', 0); // proven with one instance (it scales from zero)
    await waitFor('blocked', async () => (await image(c)).start_blocked !== null, 10_000, 100);
    // (stopped by its user: the autoscaler leaves it so, and it no longer counts against the quota)
    expect((await user.post(`/api/containers/${running.id}/stop`)).status).toBe(200);
    await healthy(c);
    const img = await image(c);
    expect(img).toMatchObject({ start_blocked: null, start_failed_at: null });
    await waitFor('serving', async () => (await user.get(`/api/apps/third-${tag}.example.com`)).body.revisions[0].serving === true, 10_000, 100);
  }, 180_000);

  it('one no longer owed an instance (min_instances lowered to 0) is not blocked, nor given up on', async () => {
    const d = await deploy('fourth', 1); // the quota is full again ('third' runs)
    await waitFor('blocked', async () => (await image(d)).start_blocked !== null, 10_000, 100);
    expect((await user.req('PATCH', `/api/images/${d}`, { json: { min_instances: 0 } })).status).toBe(200);
    // it scales from zero now: it takes the traffic and wakes on its first request
    await waitFor('serving', async () => (await user.get(`/api/apps/fourth-${tag}.example.com`)).body.revisions[0].serving === true, 10_000, 100);
    await waitFor('the note gone', async () => (await image(d)).start_blocked === null, 10_000, 100);
    await new Promise((r) => setTimeout(r, DEADLINE_MS + 1000));
    expect(await image(d)).toMatchObject({ start_blocked: null, start_failed_at: null, start_failure: null });
  }, 180_000);

  it('one only some of whose instances can be made serves with them, says how many can run, and is not given up on', async () => {
    // room for one: every other app goes
    for (const a of (await user.get('/api/apps')).body.apps as { app_hostname: string }[]) {
      expect((await user.req('DELETE', `/api/apps/${a.app_hostname}`)).status).toBe(204);
    }
    await waitFor('no container left', async () => (await t.cp.db.query(`SELECT 1 FROM containers WHERE desired = 'running'`)).rowCount === 0, 30_000, 100);
    const p = await deploy('partial', 2, 2);
    const note = await waitFor('one healthy, the other blocked', async () => {
      const cs = await runningOf<{ desired: string; health: string }>(user, p);
      const i = await image(p);
      return cs.length === 1 && cs[0].health === 'healthy' && i.start_blocked ? i.start_blocked as string : undefined;
    }, 30_000, 100);
    expect(note).toBe('the per-user container quota is full: 1 of its 2 instances can run; you have 1 running container(s) of the 1 allowed; stop or delete some first');
    expect((await user.get(`/api/apps/partial-${tag}.example.com`)).body.revisions[0]).toMatchObject({ start_blocked: note, traffic_percent: 100, ready_instances: 1 });
    await new Promise((r) => setTimeout(r, DEADLINE_MS + 1000));
    expect(await image(p)).toMatchObject({ start_blocked: note, start_failed_at: null, start_failure: null });
  }, 180_000);
});
