/**
 * Autoscaling of an app with a floor (min_instances 1, max 4): it grows under load beyond its
 * floor and shrinks back to it (never to zero). An instance its user stops stays stopped: the
 * autoscaler takes it out of the floor instead of starting it again, until the user starts it.
 */
import { randomBytes } from 'node:crypto';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { request } from 'undici';
import { USER_STOPPED } from '../../control-plane/containers/service.js';
import { Api } from '../helpers/api.js';
import { makeTar } from '../helpers/archives.js';
import { startTestControlPlane, type TestControlPlane } from '../helpers/control-plane.js';
import { describeWithDocker } from '../helpers/docker.js';
import type { ProxyProc } from '../proxy/harness.js';
import { httpdApp, load, runningOf, sleep, startSubscribedProxy, teardownStack, waitFor } from './support.js';

const HOST = `floor-${randomBytes(3).toString('hex')}.example.com`;
let t: TestControlPlane;
let px: ProxyProc;
let user: Api;
let imageId = 0;
let dockerImage = '';
let clusterId = '';

const slowApp = () => httpdApp([
  { name: 'index.html', content: 'ok\n' },
  { name: 'cgi-bin/' },
  { name: 'cgi-bin/slow', content: '#!/bin/sh\nsleep 0.2\nprintf "Content-Type: text/plain\\n\\n"; hostname\n', mode: 0o755 },
]);

type C = { id: number; desired: string; status: string; status_reason: string | null };
const containers = async () => (await user.get(`/api/containers?image_id=${imageId}`)).body.containers as C[];
const running = () => runningOf<C>(user, imageId);

await describeWithDocker('autoscaling an app with a floor', () => {
  beforeAll(async () => {
    t = await startTestControlPlane({
      seedDefaultUser: false, health: { intervalMs: 50, healthyThreshold: 1 }, routeDebounceMs: 10, reconcileIntervalMs: 500,
      autoscale: { enabled: true, tickMs: 250, stableWindowMs: 3000, scaleToZeroGraceMs: 500 },
    });
    clusterId = t.cp.app.platform.clusterId;
    user = await new Api(t.cp.url).signup('floor@example.com');
    const up = await user.upload({ name: 'floor', app_hostname: HOST, min_instances: 1, max_instances: 4, container_concurrency: 10, health_path: '/' }, await makeTar(slowApp()));
    expect(up.status, up.text).toBe(201);
    imageId = up.body.id;
    dockerImage = up.body.docker_image;
    expect((await user.waitForBuild(imageId, 90_000)).status).toBe('ready');
    px = await startSubscribedProxy(t.cp.url, t.cp.app.platform.proxyTokens.current, HOST);
    await waitFor('its one instance', async () => (await running()).length === 1, 30_000);
  }, 120_000);

  afterAll(() => teardownStack({ px, cp: t, clusterId, dockerImage }));

  it('grows past its floor under load with zero failed requests, and shrinks back to exactly its floor', async () => {
    const l = load(Number(new URL(px.url).port), HOST, 30, { path: '/cgi-bin/slow', timeoutMs: 30_000 });
    try {
      await waitFor('≥ 3 instances', async () => (await running()).length >= 3, 30_000, 200);
      // (a quick scale-up may beat the load: it goes on until enough requests went through)
      await waitFor('50 answers under load', async () => l.stats.ok > 50, 30_000, 100);
    } finally {
      await l.stop();
    }
    expect(l.stats.failures).toEqual([]);
    expect(l.stats.ok).toBeGreaterThan(50);
    // exactly one instance meant to run, and running: an instance started late in the load (a
    // busy machine can take seconds) must not still be on its way up when the next test stops one
    const atFloor = async () => (await containers()).filter((c) => c.desired === 'running').length === 1 && (await running()).length === 1;
    await waitFor('back to its floor', atFloor, 40_000, 250);
    await sleep(1500); // past the stable window and the grace: the floor holds
    expect(await atFloor()).toBe(true);
    const st = (await user.get(`/api/images/${imageId}/autoscaling`)).body;
    expect(st).toMatchObject({ autoscaled: true, desired: 1, actual: 1 });
  }, 120_000);

  it('an instance its user stops stays stopped; starting it gives the app its floor back', async () => {
    const [c] = await running();
    const stopping = user.post(`/api/containers/${c.id}/stop`);
    // its user's stop from the moment it is no longer wanted running (the autoscaler takes such
    // instances out of the floor: marked only once stopped, the floor looked one short while it
    // drained, and another instance was started)
    const seen = await waitFor('the stop to begin', async () => {
      const { rows: [r] } = await t.cp.db.query<{ desired: string; status_reason: string | null }>('SELECT desired, status_reason FROM containers WHERE id = $1', [c.id]);
      return r?.desired === 'stopped' ? r : undefined;
    }, 10_000, 5);
    expect(seen.status_reason).toBe(USER_STOPPED);
    expect((await stopping).status).toBe(200);
    await sleep(2000); // eight autoscaler ticks, four reconcile passes
    expect(await running()).toEqual([]);
    const stopped = (await containers()).find((x) => x.id === c.id)!;
    expect(stopped.status_reason).toBe('stopped by its user');
    // a floor app with no instance answers 503 (it is not woken behind its user's back)
    const r = await request(`${px.url}/`, { headers: { host: HOST } });
    expect(r.statusCode).toBe(503);
    await r.body.dump();
    expect((await user.post(`/api/containers/${c.id}/start`)).status).toBe(200);
    await waitFor('its instance again', async () => (await running()).length === 1, 30_000);
    await sleep(1000);
    expect((await running()).length).toBe(1);
  }, 60_000);

  it('the only instance of a revision at its max_instances deleted: the floor\'s replacement starts while it drains', async () => {
    // revision 2, no build: a floor of 1 and a max of 1
    const r2 = await user.post(`/api/apps/${HOST}/revisions`, { min_instances: 1, max_instances: 1 });
    expect(r2.status, r2.text).toBe(201);
    const id2 = Number(r2.body.id);
    const [c] = await waitFor('revision 2 serving on its instance', async () => {
      const cs = await runningOf<C & { health: string }>(user, id2);
      const app = (await user.get(`/api/apps/${HOST}`)).body;
      return cs.length === 1 && cs[0].health === 'healthy' && app.revisions.find((r: { image_id: number }) => r.image_id === id2)?.traffic_percent === 100 && cs;
    }, 60_000, 200);
    const t0 = Date.now();
    const deleting = user.del(`/api/containers/${c.id}`);
    // (its row still there, draining; it counted against max_instances 1, and nothing could start
    // until it went — then the autoscaler's same move waited 30 s)
    const next = await waitFor('another instance', async () => (await runningOf<C>(user, id2)).find((x) => x.id !== c.id), 15_000, 100);
    expect(Date.now() - t0).toBeLessThan(10_000);
    expect((await deleting).status).toBe(204);
    await waitFor('it serves', async () => {
      const r = await request(`${px.url}/`, { headers: { host: HOST } });
      await r.body.dump();
      return r.statusCode === 200;
    }, 30_000, 200);
    expect((await runningOf<C>(user, id2)).map((x) => x.id)).toEqual([next.id]);
  }, 120_000);
});
