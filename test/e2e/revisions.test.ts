/**
 * Revisions and traffic splitting, end to end (real Docker, real proxy process): a second upload
 * under the same hostname is revision 2 and takes all traffic once healthy, under load, with zero
 * failed requests, and revision 1's instances are drained and removed; splits are exact; a
 * no-traffic revision with a tag answers at its tag host only; promote and roll back by PUT.
 */
import { randomBytes } from 'node:crypto';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { Agent, request } from 'undici';
import { Api } from '../helpers/api.js';
import { makeTar } from '../helpers/archives.js';
import { startTestControlPlane, type TestControlPlane } from '../helpers/control-plane.js';
import { describeWithDocker, docker } from '../helpers/docker.js';
import type { ProxyProc } from '../proxy/harness.js';
import { httpdApp, startSubscribedProxy, teardownStack, waitFor } from './support.js';

const HOST = `rev-${randomBytes(3).toString('hex')}.example.com`;
let t: TestControlPlane;
let px: ProxyProc;
let user: Api;
let bob: Api;
const ids: number[] = [];
const dockerImages: string[] = [];
let clusterId = '';
const figures: Record<string, number> = {};
const agent = new Agent({ connections: 32, keepAliveTimeout: 4000 });

/** busybox httpd answering its version at /v.txt */
function versionApp(v: string) {
  return makeTar(httpdApp([{ name: 'v.txt', content: `${v}\n` }]));
}

async function deploy(v: string, fields: Record<string, string | number> = {}): Promise<number> {
  const up = await user.upload({ app_hostname: HOST, ...fields }, await versionApp(v));
  expect(up.status, up.text).toBe(201);
  ids.push(up.body.id);
  dockerImages.push(up.body.docker_image);
  const img = await user.waitForBuild(up.body.id, 90_000);
  expect(img.status, img.status_reason).toBe('ready');
  return up.body.id;
}

async function hit(host = HOST): Promise<{ status: number; body: string }> {
  const r = await request(`${px.url}/v.txt`, { headers: { host }, dispatcher: agent, headersTimeout: 30_000, bodyTimeout: 30_000 });
  return { status: r.statusCode, body: (await r.body.text()).trim() };
}

async function tally(n: number, host = HOST): Promise<Record<string, number>> {
  const out: Record<string, number> = {};
  for (let i = 0; i < n; i++) {
    const r = await hit(host);
    const k = r.status === 200 ? r.body : `HTTP ${r.status} ${r.body.slice(0, 60)}`;
    out[k] = (out[k] ?? 0) + 1;
  }
  return out;
}

const appView = async () => (await user.get(`/api/apps/${HOST}`)).body;
const putTraffic = (traffic: unknown, as: Api = user) => as.req('PUT', `/api/apps/${HOST}/traffic`, { json: { traffic } });
/** the proxy's table splits HOST between exactly these routes (and they have endpoints) */
async function proxyHas(routeIds: string[], withEndpoints = true): Promise<boolean> {
  const table = (await (await request(`${px.admin}/routes`)).body.json()) as { routes: { id: string; hosts: string[]; endpoints: unknown[] }[] };
  const on = table.routes.filter((r) => r.hosts.includes(HOST));
  return on.length === routeIds.length && on.every((r) => routeIds.includes(r.id) && (!withEndpoints || r.endpoints.length > 0));
}

await describeWithDocker('revisions: deploy, split, tag, promote, roll back', () => {
  beforeAll(async () => {
    t = await startTestControlPlane({
      seedDefaultUser: false, health: { intervalMs: 50, healthyThreshold: 1 }, routeDebounceMs: 10, reconcileIntervalMs: 500,
    });
    clusterId = t.cp.app.platform.clusterId;
    user = await new Api(t.cp.url).signup('rev@example.com');
    bob = await new Api(t.cp.url).signup('rev-bob@example.com');
    await deploy('v1', { name: 'rev', min_instances: 1, health_path: '/v.txt' });
    px = await startSubscribedProxy(t.cp.url, t.cp.app.platform.proxyTokens.current, HOST);
    await waitFor('v1 to answer', async () => (await hit()).body === 'v1', 30_000);
  }, 180_000);

  afterAll(async () => {
    await teardownStack({ px, cp: t, clusterId, dockerImage: '' });
    for (const ref of dockerImages) await docker.getImage(ref).remove({ force: true }).catch(() => {});
    await agent.close();
    if (Object.keys(figures).length) console.log(`[revisions] ${JSON.stringify(figures)}`);
  });

  it('revision 2 takes all traffic once healthy, under load, with zero failed requests; v1 is drained and removed', async () => {
    let stop = false;
    const log: { start: number; end: number; status: number; body: string }[] = [];
    const failures: string[] = [];
    const loops = Array.from({ length: 8 }, async () => {
      while (!stop) {
        const start = Date.now();
        try {
          const r = await hit();
          log.push({ start, end: Date.now(), status: r.status, body: r.body });
          if (r.status !== 200) failures.push(`${r.status} ${r.body.slice(0, 80)}`);
        } catch (e) {
          failures.push((e as Error).message);
        }
      }
    });
    // only the file: name, min_instances and health_path are inherited from revision 1
    const v2 = await deploy('v2');
    const img = (await user.get(`/api/images/${v2}`)).body;
    expect(img.revision).toBe(2);
    expect(img.min_instances).toBe(1);
    expect(img.health_path).toBe('/v.txt');
    await waitFor('v2 to take the traffic', async () => log.some((l) => l.body === 'v2'), 60_000);
    // v1's instances are drained, then removed
    await waitFor('v1 to have no instances left', async () => {
      const { body } = await user.get(`/api/containers?image_id=${ids[0]}`);
      return body.containers.length === 0;
    }, 60_000);
    stop = true;
    await Promise.all(loops);

    expect(failures).toEqual([]);
    const [c2] = (await user.get(`/api/containers?image_id=${v2}`)).body.containers;
    const healthyAt = Date.parse(c2.healthy_at ?? c2.health_checked_at);
    const firstV2 = log.filter((l) => l.body === 'v2').reduce((m, l) => Math.min(m, l.end), Infinity);
    const lastV1Start = log.filter((l) => l.body === 'v1').reduce((m, l) => Math.max(m, l.start), 0);
    // before v2 was healthy every answer was v1; once one v2 answered, requests sent after it got v2
    expect(log.filter((l) => l.end < healthyAt).every((l) => l.body === 'v1')).toBe(true);
    expect(log.filter((l) => l.start > firstV2 + 50).every((l) => l.body === 'v2')).toBe(true);
    figures.requests = log.length;
    figures.failed = failures.length;
    figures.switchMs = Math.max(firstV2, lastV1Start) - healthyAt;
    const view = await appView();
    expect(view.revisions.map((r: { revision: number; traffic_percent: number }) => [r.revision, r.traffic_percent])).toEqual([[1, 0], [2, 100]]);
    expect(view.traffic).toEqual([{ latest: true, percent: 100, revision: 2 }]);
  }, 240_000);

  it('50/50 lands within 45–55 % each over 200 requests; 90/10 is exact over 100 (rolling v1 back in)', async () => {
    const [v1, v2] = ids;
    const r = await putTraffic([{ image_id: v1, percent: 50 }, { image_id: v2, percent: 50 }]);
    expect(r.status, r.text).toBe(200);
    // v1 was scaled to zero: it gets its instance back; meanwhile the proxy holds its share
    const t0 = Date.now();
    const first = await tally(20);
    figures.rollbackFirst20 = Date.now() - t0;
    expect(Object.keys(first).every((k) => k === 'v1' || k === 'v2'), JSON.stringify(first)).toBe(true);
    await waitFor('both revisions in the proxy', () => proxyHas([`img-${v1}`, `img-${v2}`]), 30_000);
    const half = await tally(200);
    expect(half.v1).toBeGreaterThanOrEqual(90);
    expect(half.v2).toBeGreaterThanOrEqual(90);
    expect(half.v1 + half.v2).toBe(200);

    expect((await putTraffic([{ image_id: v1, percent: 90 }, { image_id: v2, percent: 10 }])).status).toBe(200);
    await waitFor('the 90/10 table', async () => {
      const table = (await (await request(`${px.admin}/routes`)).body.json()) as { routes: { id: string; trafficWeight?: number }[] };
      return table.routes.find((x) => x.id === `img-${v1}`)?.trafficWeight === 90;
    }, 10_000);
    expect(await tally(100)).toEqual({ v1: 90, v2: 10 });
  }, 120_000);

  it('a no_traffic revision with a tag answers at its tag host only; a plain deploy keeps a split set by hand; promote, then roll back', async () => {
    const [v1, v2] = ids;
    const v3 = await deploy('v3', { no_traffic: 'true', traffic_tag: 'canary' });
    const view = await appView();
    // the 90/10 split survived the deploy; v3 has the tag and no share
    expect(view.traffic).toEqual([{ image_id: v1, percent: 90, revision: 1 }, { image_id: v2, percent: 10, revision: 2 }, { image_id: v3, percent: 0, tag: 'canary', revision: 3 }]);
    const rev3 = view.revisions.find((r: { image_id: number }) => r.image_id === v3);
    expect(rev3).toMatchObject({ revision: 3, traffic_percent: 0, traffic_tag: 'canary', tag_url: `http://canary---${HOST}/` });
    // the proxy gets the tag host with the next table; its first request waits for v3 to boot
    await waitFor('the tag host in the proxy', async () => {
      const table = (await (await request(`${px.admin}/routes`)).body.json()) as { routes: { hosts: string[] }[] };
      return table.routes.some((r) => r.hosts.includes(`canary---${HOST}`));
    }, 10_000);
    expect(await tally(10, `canary---${HOST}`)).toEqual({ v3: 10 });
    const viaPath = await request(`${px.url}/apps/canary---${HOST}/v.txt`, { headers: { host: 'localhost' }, dispatcher: agent });
    expect((await viaPath.body.text()).trim()).toBe('v3');
    const main = await tally(20);
    expect(main.v3).toBeUndefined();

    // a plain deploy over this split set by hand keeps it, as Cloud Run does: v4 gets no share
    // (the newer canary none either), but it is started once to prove it can serve
    const up4 = await user.upload({ app_hostname: HOST }, await versionApp('v4'));
    expect(up4.status, up4.text).toBe(201);
    expect(up4.body.joins_traffic).toBe('none');
    const v4 = up4.body.id as number;
    ids.push(v4);
    dockerImages.push(up4.body.docker_image);
    expect(Object.keys(await tally(20)).sort()).toEqual(['v1', 'v2']);
    expect((await user.waitForBuild(v4, 90_000)).status).toBe('ready');
    const rev4 = async () => (await appView()).revisions.find((r: { image_id: number }) => r.image_id === v4);
    await waitFor('v4 proven', async () => {
      const r = await rev4();
      return r.proving === false && r.start_failure === null && (await user.get(`/api/images/${v4}/containers`)).body.containers.some((c: { health: string }) => c.health === 'healthy') ? true : undefined;
    }, 60_000);
    expect((await appView()).traffic.filter((e: { percent: number }) => e.percent > 0)).toEqual([{ image_id: v1, percent: 90, revision: 1 }, { image_id: v2, percent: 10, revision: 2 }]);
    expect(Object.keys(await tally(20)).sort()).toEqual(['v1', 'v2']);
    // proven, it runs nothing until a split names it (scaled to zero by the reconcile loop)
    await waitFor('v4 scaled to zero', async () => ((await rev4()).instances === 0 ? true : undefined), 30_000);
    // `latest` (v4 now: it served) follows deploys again; the canary tag kept
    expect((await putTraffic([{ latest: true, percent: 100 }, { image_id: v3, percent: 0, tag: 'canary' }])).status).toBe(200);
    await waitFor('v4 to take the traffic', async () => (await hit()).body === 'v4', 30_000);
    expect(await tally(10)).toEqual({ v4: 10 });
    expect(await tally(5, `canary---${HOST}`)).toEqual({ v3: 5 });

    // promote: everything to v3 (the tag stays)
    expect((await putTraffic([{ image_id: v3, percent: 100, tag: 'canary' }])).status).toBe(200);
    await waitFor('v3 alone on the host', () => proxyHas([`img-${v3}`]), 10_000);
    expect(await tally(20)).toEqual({ v3: 20 });
    // roll back to v2 (scaled to zero, or being drained, since the promotion): it boots again and
    // the proxy holds its requests meanwhile
    const t0 = Date.now();
    expect((await putTraffic([{ image_id: v2, percent: 100 }])).status).toBe(200);
    await waitFor('the rollback table in the proxy', () => proxyHas([`img-${v2}`], false), 10_000);
    expect(await tally(20)).toEqual({ v2: 20 });
    figures.rollbackMs = Date.now() - t0;
    await waitFor('v2 alone on the host', () => proxyHas([`img-${v2}`]), 30_000);
    // the tag went with the PUT: the tag host is unknown now
    expect((await hit(`canary---${HOST}`)).status).toBe(404);
  }, 180_000);

  it('refuses bad splits with a 400 naming the entry; other users see 404 and cannot take the hostname', async () => {
    const [v1, v2] = ids;
    const sum = await putTraffic([{ image_id: v1, percent: 50 }, { image_id: v2, percent: 40 }]);
    expect(sum.status).toBe(400);
    expect(sum.body.error.message).toMatch(/sum to 100, not 90/);
    const bobsHost = `bob-${randomBytes(3).toString('hex')}.example.com`;
    const bobs = await bob.upload({ name: 'bobs', app_hostname: bobsHost }, await versionApp('bob'));
    expect(bobs.status).toBe(201);
    dockerImages.push(bobs.body.docker_image);
    const foreign = await putTraffic([{ image_id: bobs.body.id, percent: 100 }]);
    expect(foreign.status).toBe(400);
    expect(foreign.body.error.message).toMatch(/traffic\[0\].*not a revision/);
    const both = await putTraffic([{ image_id: v1, percent: 100, latest: true }]);
    expect(both.status).toBe(400);
    expect(both.body.error.message).toMatch(/traffic\[0\]/);
    const frac = await putTraffic([{ image_id: v1, percent: 99.5 }, { image_id: v2, percent: 0.5 }]);
    expect(frac.status).toBe(400);
    const tag = await putTraffic([{ image_id: v1, percent: 100, tag: 'Bad--Tag' }]);
    expect(tag.status).toBe(400);
    // an unready revision: a build that fails never takes traffic
    const broken = await user.upload({ app_hostname: HOST, no_traffic: 'true' }, await makeTar([{ name: 'Dockerfile', content: 'FROM berth-test/busybox:1\nRUN exit 3\n' }]));
    expect(broken.status).toBe(201);
    const failed = await user.waitForBuild(broken.body.id, 90_000);
    expect(failed.status).toBe('build_failed');
    const unready = await putTraffic([{ image_id: v2, percent: 50 }, { image_id: broken.body.id, percent: 50 }]);
    expect(unready.status).toBe(400);
    expect(unready.body.error.message).toMatch(/traffic\[1\].*build_failed/);
    expect((await user.req('PUT', '/api/apps/nope.example.com/traffic', { json: { traffic: [{ latest: true, percent: 100 }] } })).status).toBe(404);
    // isolation
    expect((await bob.get(`/api/apps/${HOST}`)).status).toBe(404);
    expect((await putTraffic([{ latest: true, percent: 100 }], bob)).status).toBe(404);
    expect((await bob.del(`/api/apps/${HOST}`)).status).toBe(404);
    expect((await bob.get('/api/apps')).body.apps.map((a: { app_hostname: string }) => a.app_hostname)).toEqual([bobsHost]);
    const steal = await bob.upload({ name: 'steal', app_hostname: HOST }, await versionApp('x'));
    expect(steal.status).toBe(409);
    // the traffic is untouched by all of the above
    expect(await tally(10)).toEqual({ v2: 10 });
  }, 180_000);

  it('DELETE /api/apps/:host drains and removes its running instances, then every revision', async () => {
    const cs = (await user.get('/api/containers')).body.containers as { id: number; image_id: number; desired: string; docker_id: string | null }[];
    const mine = cs.filter((c) => ids.includes(c.image_id));
    expect(mine.some((c) => c.desired === 'running')).toBe(true);
    expect(await tally(5)).toEqual({ v2: 5 });
    const r = await user.del(`/api/apps/${HOST}`);
    expect(r.status, r.text).toBe(204);
    // the proxy no longer routes the hostname (the table without it was pushed before the drain)
    const after = await hit();
    expect(after.status).not.toBe(200);
    expect((await user.get(`/api/apps/${HOST}`)).status).toBe(404);
    for (const id of ids) expect((await user.get(`/api/images/${id}`)).status).toBe(404);
    expect((await user.get('/api/containers')).body.containers.filter((c: { image_id: number }) => ids.includes(c.image_id))).toEqual([]);
    for (const c of mine) if (c.docker_id) expect(await docker.getContainer(c.docker_id).inspect().then(() => 'exists', () => 'gone')).toBe('gone');
    const types = ((await user.get('/api/events?limit=1000')).body.events as { type: string; app_hostname: string }[])
      .filter((e) => e.app_hostname === HOST).map((e) => e.type);
    expect(types).toContain('app.deleting');
    expect(types).toContain('app.deleted');
    expect(types).toContain('app.traffic_changed');
    expect(types.indexOf('app.deleting')).toBeLessThan(types.indexOf('app.deleted'));
    // the hostname stays its owner's a while (BERTH_HOSTNAME_HOLD_DAYS): not bob's, the owner's again
    const squat = await bob.upload({ name: 'again', app_hostname: HOST }, await versionApp('b2'));
    expect(squat.status).toBe(409);
    expect(squat.body.error.code).toBe('hostname_held');
    const again = await user.upload({ name: 'again', app_hostname: HOST }, await versionApp('b2'));
    expect(again.status).toBe(201);
    expect(again.body.revision).toBe(1);
    dockerImages.push(again.body.docker_image);
  }, 60_000);
});
