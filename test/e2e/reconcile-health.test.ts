import { randomBytes } from 'node:crypto';
import { createServer } from 'node:net';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { startControlPlane, type ControlPlane } from '../../control-plane/app.js';
import { probe } from '../../control-plane/health/checker.js';
import { Leadership, RECONCILE_LOCK_KEY } from '../../control-plane/reconcile/leader.js';
import { Api } from '../helpers/api.js';
import { makeTar } from '../helpers/archives.js';
import { BASE_IMAGE, describeWithDocker, docker } from '../helpers/docker.js';
import { startTestPostgres, type TestPostgres } from '../helpers/postgres.js';
import { tempDir } from '../helpers/tmp.js';
import { idApp, removeClusterContainers, waitFor } from './support.js';

/**
 * Reconcile loop and health checks against real containers, with an in-process control plane
 * (fast intervals, no orphan grace) so each case can call `reconciler.run()` directly.
 */
let pgs: TestPostgres;
let cp: ControlPlane;
let data: { dir: string; cleanup(): Promise<void> };
let user: Api;
let httpImage: any;
let tcpImage: any;
const host = () => `rh-${randomBytes(3).toString('hex')}.example.com`;
const exec = async (dockerId: string, cmd: string[]) => {
  const e = await docker.getContainer(dockerId).exec({ Cmd: cmd, AttachStdout: true, AttachStderr: true });
  const s = await e.start({});
  await new Promise((res) => { s.on('end', res); s.on('close', res); s.resume(); });
};
const get = async (id: number) => (await user.get(`/api/containers/${id}`)).body;

await describeWithDocker('reconcile and health checks (real containers)', () => {
  beforeAll(async () => {
    pgs = await startTestPostgres();
    data = await tempDir();
    cp = await startControlPlane({
      port: 0, dataDir: data.dir, databaseUrl: await pgs.createDatabase(), quiet: true, seedDefaultUser: false,
      proxyToken: 'test-token', reconcileIntervalMs: 60_000, orphanGraceMs: 0, stopTimeoutSec: 2, drainGraceMs: 0,
      health: { intervalMs: 300, timeoutMs: 500, healthyThreshold: 1, unhealthyThreshold: 2 },
    });
    user = await new Api(cp.url).signup('rh@example.com');
    const tar = await makeTar(idApp());
    const a = await user.upload({ name: 'httpcheck', app_hostname: host(), min_instances: 0, max_instances: 2, health_path: '/health.txt' }, tar);
    const b = await user.upload({ name: 'tcpcheck', app_hostname: host(), min_instances: 2, max_instances: 3 }, tar);
    expect(a.status, a.text).toBe(201);
    httpImage = await user.waitForBuild(a.body.id, 120_000);
    tcpImage = await user.waitForBuild(b.body.id, 120_000);
    expect(httpImage.status).toBe('ready');
    expect(tcpImage.status).toBe('ready');
  });

  afterAll(async () => {
    await cp?.close();
    if (cp) await removeClusterContainers(cp.app.platform.clusterId);
    // the images it built (their names carry this cluster's id: nothing else reuses them)
    for (const img of [httpImage, tcpImage]) if (img?.docker_image) await docker.getImage(img.docker_image).remove({ force: true }).catch(() => {});
    await pgs?.stop();
    await data?.cleanup();
  });

  it('keeps min_instances: a ready image with min_instances 2 gets two containers, healthy by TCP check', async () => {
    const list = await waitFor('two containers of the min_instances image', async () => {
      await cp.app.platform.reconciler.run();
      const l = (await user.get(`/api/containers?image_id=${tcpImage.id}`)).body.containers;
      return l.length === 2 && l.every((c: any) => c.status === 'running' && c.health === 'healthy') && l;
    }, 30_000, 300);
    expect(list).toHaveLength(2);
    const ev = (await user.get('/api/events?limit=1000')).body.events;
    expect(ev.filter((e: any) => e.type === 'container.created' && e.image_id === tcpImage.id)).toHaveLength(2);
    // one more pass changes nothing
    const rep = await cp.app.platform.reconciler.run();
    expect(rep.created).toBe(0);
  });

  it('takes an unhealthy container out of the route table within seconds and brings it back when it recovers', async () => {
    const r = await user.post(`/api/containers/${httpImage.id}`, { count: 1 });
    expect(r.status, r.text).toBe(201);
    const id = r.body.containers[0].id;
    const c = await waitFor('healthy', async () => { const x = await get(id); return x.health === 'healthy' && x; }, 15_000);
    const inTable = () => cp.app.platform.hub.table?.routes.find((x) => x.id === `img-${httpImage.id}`)?.endpoints.some((e) => e.id === `c-${id}`) ?? false;
    await waitFor('in the route table', async () => inTable(), 5000, 20);
    const t0 = Date.now();
    await exec(c.docker_id, ['/bin/busybox', 'rm', '/www/health.txt']);
    await waitFor('unhealthy', async () => (await get(id)).health === 'unhealthy', 10_000, 50);
    await waitFor('out of the table', async () => !inTable(), 5000, 20);
    const outMs = Date.now() - t0;
    expect(outMs).toBeLessThan(5000);
    await exec(c.docker_id, ['sh', '-c', 'echo ok > /www/health.txt']);
    await waitFor('healthy again', async () => (await get(id)).health === 'healthy', 10_000, 50);
    await waitFor('back in the table', async () => inTable(), 5000, 20);
    const types = (await user.get('/api/events?limit=1000')).body.events.filter((e: any) => e.container_id === id).map((e: any) => e.type);
    expect(types.filter((t: string) => t === 'container.unhealthy')).toHaveLength(1);
    expect(types.filter((t: string) => t === 'container.healthy')).toHaveLength(2);
  });

  it('replaces a container whose Docker container vanished (docker rm -f) and corrects a stopped row whose container is gone', async () => {
    const [a, b] = (await user.get(`/api/containers?image_id=${tcpImage.id}`)).body.containers;
    await docker.getContainer(a.docker_id).remove({ force: true });
    await cp.app.platform.reconciler.run();
    const fixed = await waitFor('replacement', async () => { const x = await get(a.id); return x.status === 'running' && x.docker_id !== a.docker_id && x; }, 15_000);
    expect(fixed.restart_count).toBe(1);
    const ev = (await user.get('/api/events?limit=1000')).body.events.filter((e: any) => e.container_id === a.id);
    expect(ev.find((e: any) => e.type === 'container.stopped' && e.payload.reason === 'container vanished')).toBeTruthy();

    const stopped = await user.post(`/api/containers/${b.id}/stop`);
    expect(stopped.body.status).toBe('stopped');
    await docker.getContainer(b.docker_id).remove({ force: true });
    // the Docker 'destroy' event triggers a pass by itself; run one more to be sure
    await cp.app.platform.reconciler.run();
    const row = await waitFor('row corrected', async () => { const x = await get(b.id); return x.docker_id === null && x; }, 5000, 50);
    expect(row.docker_id).toBe(null);
    expect(row.status).toBe('stopped');
    // it can still be started: a fresh container is created for it
    const st = await user.post(`/api/containers/${b.id}/start`);
    expect(st.status, st.text).toBe(200);
    expect(st.body.status).toBe('running');
    expect(st.body.docker_id).not.toBe(b.docker_id);
  });

  it('removes labelled containers the database does not know, and leaves other clusters alone', async () => {
    // (the orphan's Docker 'create' event may trigger a reconcile pass that removes it before it
    // starts: a start refused with 404 or 409 "marked for removal" is that pass doing its job)
    const mk = async (name: string, labels: Record<string, string>, mayVanish = false) => {
      const c = await docker.createContainer({ name, Image: BASE_IMAGE, Cmd: ['sleep', '300'], Labels: labels });
      await c.start().catch((e: { statusCode?: number }) => {
        if (!(mayVanish && (e.statusCode === 404 || e.statusCode === 409))) throw e;
      });
      return c;
    };
    const suffix = randomBytes(3).toString('hex');
    const orphan = await mk(`berth-u1-i999-${suffix}`, { 'berth.managed': 'true', 'berth.container': '999999', 'berth.cluster': cp.app.platform.clusterId }, true);
    const foreign = await mk(`berth-u1-i998-${suffix}`, { 'berth.managed': 'true', 'berth.container': '999998', 'berth.cluster': 'someone-else' });
    try {
      // (their Docker 'start' events may already have triggered a pass that removed the orphan)
      await cp.app.platform.reconciler.run();
      // (a pass an event started may still be removing it)
      await waitFor('the orphan to be removed', async () => orphan.inspect().then(() => false, (e: { statusCode?: number }) => e.statusCode === 404), 10_000);
      expect((await foreign.inspect()).State.Running).toBe(true);
      // berth's own containers are untouched
      for (const c of (await user.get('/api/containers')).body.containers) if (c.docker_id) expect((await docker.getContainer(c.docker_id).inspect()).Id).toBe(c.docker_id);
    } finally {
      await foreign.remove({ force: true }).catch(() => {});
      await orphan.remove({ force: true }).catch(() => {});
    }
  });

  it('only one control plane holds the reconcile lock', async () => {
    expect(cp.app.platform.leader.isLeader).toBe(true);
    const other = new Leadership(cp.db, cp.log, 100);
    await other.start();
    expect(other.isLeader).toBe(false);
    await other.stop();
    expect((await cp.app.platform.reconciler.run()).skipped).toBeUndefined();
  });

  it('another control plane takes over when the holder\'s database session dies, and leadership comes back', async () => {
    const other = new Leadership(cp.db, cp.log, 100);
    await other.start();
    expect(other.isLeader).toBe(false);
    // what Postgres does to a holder whose host vanished (once keepalives give up)
    const killHolder = () => cp.db.query(`SELECT pg_terminate_backend(pid) FROM pg_locks WHERE locktype = 'advisory' AND objid = $1 AND granted`, [RECONCILE_LOCK_KEY]);
    await killHolder();
    // Under a loaded machine the first holder's reconnect can win the race for the freed lock
    // (seen with the whole suite on 2 cores); its session dying again must hand it over too.
    let lastKill = Date.now();
    await waitFor('the other control plane to take the lock', async () => {
      if (other.isLeader) return true;
      if (Date.now() - lastKill > 3000) { lastKill = Date.now(); await killHolder(); }
      return false;
    }, 20_000);
    await waitFor('the first to notice it lost the lock', async () => !cp.app.platform.leader.isLeader, 15_000);
    await other.stop();
    await waitFor('the first to lead again', async () => cp.app.platform.leader.isLeader, 10_000);
  });

  it('probes: HTTP status decides, TCP needs a listener, timeouts fail', async () => {
    const srv = createServer((s) => s.destroy());
    await new Promise<void>((r) => srv.listen(0, '127.0.0.1', r));
    const port = (srv.address() as { port: number }).port;
    expect((await probe({ host: '127.0.0.1', port, containerIp: '127.0.0.1', internalPort: port, path: null }, 500)).ok).toBe(true);
    srv.close();
    const closed = await probe({ host: '127.0.0.1', port, containerIp: '127.0.0.1', internalPort: port, path: null }, 500);
    expect(closed.ok).toBe(false);
    const c = (await user.get(`/api/containers?image_id=${httpImage.id}`)).body.containers[0];
    expect((await probe({ host: '127.0.0.1', port: c.host_port, containerIp: null, internalPort: null, path: '/health.txt' }, 1000)).ok).toBe(true);
    const missing = await probe({ host: '127.0.0.1', port: c.host_port, containerIp: null, internalPort: null, path: '/nope' }, 1000);
    expect(missing).toMatchObject({ ok: false });
    expect(missing.detail).toMatch(/404/);
  });

  it('adopts a container restarted outside berth (docker restart): new host port in the row and the route table, served again', async () => {
    const c = (await user.get(`/api/containers?image_id=${httpImage.id}`)).body.containers.find((x: any) => x.status === 'running');
    await waitFor('healthy', async () => (await get(c.id)).health === 'healthy', 10_000, 50);
    const before = await get(c.id);
    await docker.getContainer(before.docker_id).restart({ t: 1 });
    const st = await docker.getContainer(before.docker_id).inspect();
    const newPort = Number(st.NetworkSettings.Ports[`${httpImage.container_port}/tcp`][0].HostPort);
    // the reconcile interval is 60 s here: Docker's start/restart events must trigger the pass
    const row = await waitFor('row adopts the new incarnation', async () => {
      const x = await get(c.id);
      return x.host_port === newPort && x.started_at !== before.started_at && x.health === 'healthy' && x;
    }, 15_000, 50);
    expect(row.status).toBe('running');
    const endpoints = () => cp.app.platform.hub.table?.routes.find((x) => x.id === `img-${httpImage.id}`)?.endpoints ?? [];
    await waitFor('route table has the new address', async () => endpoints().some((e) => e.id === `c-${c.id}` && e.address.endsWith(`:${newPort}`)), 5000, 20);
    expect(endpoints().some((e) => e.address.endsWith(`:${before.host_port}`) && before.host_port !== newPort)).toBe(false);
    const res = await fetch(`http://127.0.0.1:${newPort}/health.txt`);
    expect(res.status).toBe(200);
    const ev = (await user.get('/api/events?limit=1000')).body.events.filter((e: any) => e.container_id === c.id && e.type === 'container.started');
    expect(ev.at(-1).payload).toMatchObject({ reason: 'restarted outside berth', host_port: newPort });
  });

  it('a stale probe of an earlier port never marks the container healthy', async () => {
    const c = (await user.get(`/api/containers?image_id=${httpImage.id}`)).body.containers.find((x: any) => x.status === 'running');
    await cp.db.query(`UPDATE containers SET health = 'unhealthy' WHERE id = $1`, [c.id]);
    expect(await cp.app.platform.service.setHealth(c.id, 'healthy', 'stale', c.host_port + 1)).toBeUndefined();
    expect((await get(c.id)).health).toBe('unhealthy');
    expect(await cp.app.platform.service.setHealth(c.id, 'healthy', 'fresh', c.host_port)).toBeTruthy();
  });

  it('min_instances does not fight the user: a deleted container is not recreated, and the image can then be deleted', async () => {
    const r = await user.upload({ name: 'minone', app_hostname: host(), min_instances: 1, max_instances: 2 }, await makeTar(idApp()));
    expect(r.status, r.text).toBe(201);
    const img = await user.waitForBuild(r.body.id, 120_000);
    const [c] = await waitFor('min_instances container', async () => {
      await cp.app.platform.reconciler.run();
      const l = (await user.get(`/api/containers?image_id=${img.id}`)).body.containers;
      return l.length === 1 && l[0].status === 'running' && l;
    }, 30_000, 200);
    expect((await user.del(`/api/images/${img.id}`)).status).toBe(409);
    // a user stop is respected too: it stays stopped and still counts
    expect((await user.post(`/api/containers/${c.id}/stop`)).body.status).toBe('stopped');
    for (let i = 0; i < 3; i++) await cp.app.platform.reconciler.run();
    const l1 = (await user.get(`/api/containers?image_id=${img.id}`)).body.containers;
    expect(l1.map((x: any) => [x.id, x.status])).toEqual([[c.id, 'stopped']]);
    expect((await user.del(`/api/containers/${c.id}`)).status).toBe(204);
    for (let i = 0; i < 3; i++) { await cp.app.platform.reconciler.run(); await new Promise((res) => setTimeout(res, 300)); }
    expect((await user.get(`/api/containers?image_id=${img.id}`)).body.containers).toEqual([]);
    expect((await user.del(`/api/images/${img.id}`)).status).toBe(204);
  });
});
