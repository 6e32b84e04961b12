/**
 * A revision that cannot start is given up on by the control plane (apps/start-failure.ts), as
 * Cloud Run marks a revision whose container fails to start not ready: the revision that served
 * keeps all the traffic without a failed request, the new one's instances go, and the API says
 * why (its exit and last output, or the start deadline). A new revision from its image, with
 * other settings, is a new try; the failed one cannot be given traffic by hand.
 */
import { randomBytes } from 'node:crypto';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { Api } from '../helpers/api.js';
import { makeTar, type TarEntry } from '../helpers/archives.js';
import { startTestControlPlane, type TestControlPlane } from '../helpers/control-plane.js';
import { describeWithDocker, docker } from '../helpers/docker.js';
import type { ProxyProc } from '../proxy/harness.js';
import { httpdApp, load, runningOf, startSubscribedProxy, teardownStack, viaProxy, waitFor } from './support.js';

const HOST = `startfail-${randomBytes(3).toString('hex')}.example.com`;
const DEADLINE_MS = 8000;
let t: TestControlPlane;
let px: ProxyProc;
let user: Api;
let first = 0;
let clusterId = '';
const dockerImages: string[] = [];

const crashing = (): TarEntry[] => [{
  name: 'Dockerfile',
  content: 'FROM berth-test/busybox:1\nCMD ["sh", "-c", "echo starting; sleep 0.3; echo \'config: DATABASE_URL is not set\' >&2; exit 3"]\n',
}];
/** serves, but on a port of its own: its health check (on $PORT) never passes */
const otherPort = (): TarEntry[] => [
  { name: 'Dockerfile', content: 'FROM berth-test/busybox:1\nCOPY www /www\nCMD ["sh", "-c", "exec httpd -f -p 9999 -h /www"]\n' },
  { name: 'www/', type: 'directory' },
  { name: 'www/index.html', content: 'v3\n' },
];

async function deploy(files: TarEntry[], min = 1, host = HOST): Promise<number> {
  const up = await user.upload({ name: 'startfail', app_hostname: host, min_instances: min, max_instances: 1, health_path: '/' }, await makeTar(files));
  expect(up.status, up.text).toBe(201);
  dockerImages.push(up.body.docker_image);
  expect((await user.waitForBuild(up.body.id, 90_000)).status).toBe('ready');
  return up.body.id;
}

const port = () => Number(new URL(px.url).port);
const app = async () => (await user.get(`/api/apps/${HOST}`)).body;
const givenUp = (id: number) => waitFor(`image ${id} given up`, async () => {
  const b = (await user.get(`/api/images/${id}`)).body;
  return b.start_failed_at ? b : undefined;
}, 60_000, 200);

await describeWithDocker('a revision that cannot start', () => {
  beforeAll(async () => {
    t = await startTestControlPlane({
      seedDefaultUser: false, health: { intervalMs: 100, healthyThreshold: 1, startupGraceMs: 1000 }, routeDebounceMs: 10,
      reconcileIntervalMs: 500, revisionStartDeadlineMs: DEADLINE_MS,
    });
    clusterId = t.cp.app.platform.clusterId;
    user = await new Api(t.cp.url).signup('startfail@example.com');
    first = await deploy(httpdApp([{ name: 'index.html', content: 'v1\n' }]));
    px = await startSubscribedProxy(t.cp.url, t.cp.app.platform.proxyTokens.current, HOST, (r) => !r.wake);
    await waitFor('v1 served', async () => (await viaProxy(port(), HOST, '/')).body === 'v1', 30_000);
  }, 150_000);

  afterAll(async () => {
    await teardownStack({ px, cp: t, clusterId, dockerImage: '' });
    for (const i of dockerImages) await docker.getImage(i).remove({ force: true }).catch(() => {});
  });

  it('one whose instance exits at start: given up on the third exit with its output, the old revision serving throughout', async () => {
    const l = load(port(), HOST, 4, { path: '/' });
    let id = 0;
    try {
      id = await deploy(crashing());
      const img = await givenUp(id);
      expect(img.start_failure).toMatch(/^(exited with code 3|container exited at once \(exit code 3\)), 3 times at start; its last output: .*config: DATABASE_URL is not set/);
      // its instances go; the app still serves v1
      await waitFor('its instances gone', async () => (await runningOf(user, id)).length === 0, 30_000, 200);
    } finally {
      await l.stop();
    }
    expect(l.stats.failures).toEqual([]);
    expect(l.stats.ok).toBeGreaterThan(20);
    expect((await viaProxy(port(), HOST, '/')).body).toBe('v1');
    const a = await app();
    expect(a.pending_image_id).toBeNull();
    expect(a.latest_image_id).toBe(first);
    const rev = a.revisions.find((r: { image_id: number }) => r.image_id === id);
    expect(rev).toMatchObject({ traffic_percent: 0, serving: false, start_failure: expect.stringContaining('3 times at start') });
    expect(a.revisions.find((r: { image_id: number }) => r.image_id === first)).toMatchObject({ traffic_percent: 100, start_failure: null });
    // an event says so, to its owner
    const ev = (await user.get(`/api/events?app=${HOST}`)).body.events.find((e: { type: string }) => e.type === 'image.start_failed');
    expect(ev).toMatchObject({ image_id: id, payload: { revision: rev.revision, deploy_dropped: true } });
    // it cannot be given traffic by hand
    const pin = await user.req('PUT', `/api/apps/${HOST}/traffic`, { json: { traffic: [{ image_id: id, percent: 100 }] } });
    expect([pin.status, pin.body.error?.message]).toEqual([400, expect.stringMatching(/could not start/)]);
    // a new revision from its image with other settings is a new try (pending: the split stays)
    const retry = await user.post(`/api/apps/${HOST}/revisions`, { from_revision: rev.revision, env: { DATABASE_URL: 'postgres://db/app' } });
    expect(retry.status, retry.text).toBe(201);
    expect(retry.body).toMatchObject({ status: 'ready', start_failed_at: null, start_failure: null });
    expect((await app()).pending_image_id).toBe(retry.body.id);
    await givenUp(retry.body.id); // (the app reads no DATABASE_URL: it exits again)
    expect((await viaProxy(port(), HOST, '/')).body).toBe('v1');
  }, 180_000);

  it('one whose instance runs but never passes its health check: given up at the start deadline', async () => {
    const id = await deploy(otherPort());
    const t0 = Date.now();
    const img = await givenUp(id);
    expect(Date.now() - t0).toBeGreaterThan(DEADLINE_MS - 3000);
    expect(img.start_failure).toMatch(/^no instance became healthy within 8 s \(/);
    await waitFor('its instances gone', async () => (await runningOf(user, id)).length === 0, 30_000, 200);
    expect((await viaProxy(port(), HOST, '/')).body).toBe('v1');
    expect((await app()).latest_image_id).toBe(first);
  }, 120_000);

  it('one that scales from zero, deployed over a revision that serves, is started first: a broken one never takes the traffic, a good one once healthy', async () => {
    // alone, the broken one is given up on, and the app keeps serving what it served
    const alone = await deploy(crashing(), 0);
    expect((await givenUp(alone)).start_failure).toMatch(/3 times at start; its last output: .*DATABASE_URL/);
    expect((await viaProxy(port(), HOST, '/')).body).toBe('v1');
    const l = load(port(), HOST, 4, { path: '/' });
    try {
      const bad = await deploy(crashing(), 0);
      const seen = (await app()).revisions.find((r: { image_id: number }) => r.image_id === bad);
      expect(seen.traffic_percent).toBe(0);
      expect(seen.proving || seen.start_failure !== null).toBe(true);
      // a fix deployed at once, while the broken one is still being proven: the broken one does
      // not take the traffic when the fix takes its place as the deploy waiting (it serves
      // nothing from then on: its instance goes, given up on or not)
      const good = await deploy(httpdApp([{ name: 'index.html', content: 'v4\n' }]), 0);
      await waitFor('v4 served', async () => (await viaProxy(port(), HOST, '/')).body === 'v4', 60_000, 200);
      await waitFor('the broken one\'s instance gone', async () => (await runningOf(user, bad)).length === 0, 30_000, 200);
      expect((await app()).revisions.find((r: { image_id: number }) => r.image_id === bad)).toMatchObject({ traffic_percent: 0, serving: false });
      const a = await app();
      expect(a.latest_image_id).toBe(good);
      expect(a.revisions.find((r: { image_id: number }) => r.image_id === good)).toMatchObject({ proving: false, traffic_percent: 100, start_failure: null });
    } finally {
      await l.stop();
    }
    expect(l.stats.failures).toEqual([]);
    expect(l.stats.ok).toBeGreaterThan(20);
  }, 180_000);

  it('an app\'s first revision that scales from zero is proven too: a broken one is given up on without a request, a good one serves', async () => {
    const host = `first-${HOST}`;
    const bad = await deploy(crashing(), 0, host);
    // given up on by itself (it once waited for a first request that then failed)
    expect((await givenUp(bad)).start_failure).toMatch(/3 times at start; its last output: .*DATABASE_URL/);
    await waitFor('its instances gone', async () => (await runningOf(user, bad)).length === 0, 30_000, 200);
    await waitFor('no route', async () => (await viaProxy(port(), host, '/')).status === 404, 10_000, 100);
    const good = await deploy(httpdApp([{ name: 'index.html', content: 'first\n' }]), 0, host);
    // (it serves meanwhile as the app's only revision: requests are held until it is healthy)
    await waitFor('proven', async () => {
      const r = (await user.get(`/api/apps/${host}`)).body.revisions?.find((x: { image_id: number }) => x.image_id === good);
      return r?.serving === true && r.proving === false;
    }, 60_000, 200);
    expect((await runningOf(user, good)).length).toBe(1);
    expect(await viaProxy(port(), host, '/')).toMatchObject({ status: 200, body: 'first' });
  }, 180_000);
});
