import { randomBytes } from 'node:crypto';
import { afterAll, beforeAll, expect, it } from 'vitest';
import pg from 'pg';
import { Api } from '../helpers/api.js';
import { makeTar } from '../helpers/archives.js';
import { describeWithDocker, docker } from '../helpers/docker.js';
import { freePort } from '../helpers/ports.js';
import { startTestPostgres, type TestPostgres } from '../helpers/postgres.js';
import { tempDir } from '../helpers/tmp.js';
import { Proc, built, idApp, load, removeClusterContainers, sleep, viaProxy, waitFor } from './support.js';

/**
 * The whole loop with real processes: `berth control-plane` and `berth proxy` as child processes
 * (so they can be SIGKILLed), real Docker, one embedded Postgres. Steps run in order and share
 * state: upload → build → the instance that proves it and two more → healthy → spread by Host →
 * stop one under load → start it → docker kill one → control plane killed → proxy restarted
 * while it is down → control plane back with its state → image delete blocked.
 */
const HOST = `app-${randomBytes(3).toString('hex')}.example.com`;
const TOKEN = `t_${randomBytes(12).toString('hex')}`;

let pgs: TestPostgres;
let dbUrl: string;
let cpDir: { dir: string; cleanup(): Promise<void> };
let pxDir: { dir: string; cleanup(): Promise<void> };
let cp: Proc | undefined;
let px: Proc | undefined;
let cpPort: number;
let pxPort: number;
let adminPort: number;
let api: Api;
let user: Api;
let imageId: number;
let clusterId = '';
let ids: number[] = [];
const figures: Record<string, number | string> = {};

const startCp = async () => {
  cp = new Proc(['control-plane', '--listen', `127.0.0.1:${cpPort}`, '--data-dir', cpDir.dir], {
    DATABASE_URL: dbUrl, BERTH_PROXY_TOKEN: TOKEN, BERTH_LOG_LEVEL: 'warn', BERTH_ENV: 'test',
  });
  await waitFor('control plane /readyz', async () => (await fetch(`http://127.0.0.1:${cpPort}/readyz`)).status === 200, 60_000, 200)
    .catch((e) => { throw new Error(`${e.message}\n${cp!.out}`); });
};
const startPx = async () => {
  px = new Proc(['proxy', '--listen', `127.0.0.1:${pxPort}`, '--admin', `127.0.0.1:${adminPort}`, '--control-plane', `http://127.0.0.1:${cpPort}`,
    '--token', TOKEN, '--data-dir', pxDir.dir, '--access-log', 'off'], { BERTH_LOG_LEVEL: 'warn' });
  await waitFor('proxy admin /healthz', async () => (await fetch(`http://127.0.0.1:${adminPort}/healthz`)).status === 200, 20_000, 100)
    .catch((e) => { throw new Error(`${e.message}\n${px!.out}`); });
};
const containers = async () => (await user.get(`/api/containers?image_id=${imageId}`)).body.containers as any[];
const distinctIds = async (n: number) => {
  const seen = new Map<string, number>();
  for (let i = 0; i < n; i++) {
    const r = await viaProxy(pxPort, HOST);
    expect(r.status, r.body).toBe(200);
    seen.set(r.body, (seen.get(r.body) ?? 0) + 1);
  }
  return seen;
};
const dockerShort = (c: any) => String(c.docker_id).slice(0, 12);

await describeWithDocker('e2e: upload → build → run → route', () => {
  beforeAll(async () => {
    if (!built()) throw new Error('dist/ is missing: run `npx tsc -p .` (npm test builds first)');
    pgs = await startTestPostgres();
    dbUrl = await pgs.createDatabase();
    cpDir = await tempDir('berth-e2e-cp-');
    pxDir = await tempDir('berth-e2e-px-');
    [cpPort, pxPort, adminPort] = [await freePort(), await freePort(), await freePort()];
    await startCp();
    await startPx();
    api = new Api(`http://127.0.0.1:${cpPort}`);
    user = await api.signup(`e2e-${randomBytes(3).toString('hex')}@example.com`);
    const c = new pg.Client({ connectionString: dbUrl });
    await c.connect();
    clusterId = (await c.query(`SELECT value FROM berth_settings WHERE key = 'cluster_id'`)).rows[0].value;
    await c.end();
  });

  afterAll(async () => {
    if (Object.keys(figures).length) process.stdout.write(`[e2e figures] ${JSON.stringify(figures)}\n`);
    await px?.kill('SIGKILL');
    await cp?.kill('SIGTERM');
    if (clusterId) await removeClusterContainers(clusterId);
    await pgs?.stop();
    await cpDir?.cleanup();
    await pxDir?.cleanup();
  });

  it('uploads and builds the app; containers of a building or unknown image are refused', async () => {
    const up = await user.upload({ name: 'idapp', app_hostname: `https://${HOST.toUpperCase()}/`, min_instances: 0, max_instances: 3, health_path: '/health.txt', memory_limit: '64m', cpu_limit: '0.5' }, await makeTar(idApp()));
    expect(up.status, up.text).toBe(201);
    expect(up.body.app_hostname).toBe(HOST);
    imageId = up.body.id;
    const early = await user.post(`/api/containers/${imageId}`, { count: 1 });
    if (early.status !== 201) expect(early.body.error.code).toBe('image_not_ready'); // unless the build already finished
    else await user.del(`/api/containers/${early.body.containers[0].id}`);
    const img = await user.waitForBuild(imageId, 120_000);
    expect(img.status, JSON.stringify(img)).toBe('ready');
    expect((await user.post('/api/containers/999999', { count: 1 })).status).toBe(404);
  });

  it('runs three containers with labels, PORT, limits, a loopback port and no restart policy; 409 past max_instances', async () => {
    // the reconcile loop starts one to prove the revision (it scales from zero: docs/revisions.md)
    const [first] = await waitFor('the proving instance', async () => { const l = await containers(); return l.length === 1 && l; }, 30_000, 100);
    const r = await user.post(`/api/containers/${imageId}`, { count: 2 });
    expect(r.status, r.text).toBe(201);
    expect(r.body.containers).toHaveLength(2);
    ids = [first.id, ...r.body.containers.map((c: any) => c.id)];
    const all = (await containers()).sort((x, y) => x.id - y.id);
    expect(all.map((c) => c.id)).toEqual(ids);
    for (const c of all) {
      expect(c).toMatchObject({ image_id: imageId, status: 'running', internal_port: 8080 });
      expect(c.host_port).toBeGreaterThan(0);
      // opaque: Docker's DNS answers reverse lookups with it (no user or app ids for other tenants)
      expect(c.name).toMatch(/^berth-[0-9a-f]{16}$/);
      const info = await docker.getContainer(c.docker_id).inspect();
      expect(info.Config.Labels).toMatchObject({ 'berth.managed': 'true', 'berth.image': String(imageId), 'berth.app_hostname': HOST, 'berth.user': String(c.user_id) });
      expect(info.Config.Env).toContain('PORT=8080');
      expect(info.HostConfig.RestartPolicy?.Name).toBe('no');
      expect(info.HostConfig.Memory).toBe(64 * 1024 * 1024);
      expect(info.HostConfig.NanoCpus).toBe(0.5e9);
      expect(info.HostConfig.PortBindings?.['8080/tcp']?.[0]?.HostIp).toBe('127.0.0.1');
    }
    const over = await user.post(`/api/containers/${imageId}`, { count: 1 });
    expect(over.status).toBe(409);
    expect(over.body.error.code).toBe('max_instances_exceeded');
    const other = await api.signup(`other-${randomBytes(3).toString('hex')}@example.com`);
    expect((await other.get(`/api/containers/${ids[0]}`)).status).toBe(404);
    expect((await other.post(`/api/containers/${ids[0]}/stop`)).status).toBe(404);
    expect((await other.post(`/api/containers/${imageId}`, { count: 1 })).status).toBe(404);
  });

  it('all three become healthy and the proxy spreads requests across them by Host header', async () => {
    const cs = await waitFor('three healthy containers', async () => { const l = await containers(); return l.every((c) => c.health === 'healthy') && l; }, 30_000);
    const healthyAt = Math.max(...cs.map((c: any) => Date.parse(c.health_checked_at)));
    await waitFor('proxy serving all three', async () => (await distinctIds(12)).size === 3, 20_000, 20);
    figures.healthyToProxyServingMs = Date.now() - healthyAt;
    const seen = await distinctIds(90);
    expect([...seen.keys()].sort()).toEqual(cs.map(dockerShort).sort());
    for (const n of seen.values()) expect(n).toBeGreaterThanOrEqual(15);
    // unknown host → 404 from the proxy
    expect((await viaProxy(pxPort, 'nobody.example.com')).status).toBe(404);
    const h = await user.get(`/api/services/healthy?website_url=${encodeURIComponent(`https://${HOST.toUpperCase()}:443/x`)}`);
    expect(h.status, h.text).toBe(200);
    expect(h.body.count).toBe(3);
    expect(h.body.services.map((s: any) => s.port).sort()).toEqual(cs.map((c: any) => c.host_port).sort());
    const proxies = await user.get('/v1/proxies');
    expect(proxies.body.count).toBe(1);
    expect(proxies.body.proxies[0].table_version).toBe(proxies.body.current_version);
  });

  it('stops one of three under load with zero failed requests', async () => {
    const victim = (await containers()).find((c) => c.id === ids[0]);
    const l = load(pxPort, HOST, 8);
    await sleep(700);
    const t0 = Date.now();
    const r = await user.post(`/api/containers/${victim.id}/stop`);
    figures.stopMs = Date.now() - t0;
    expect(r.status, r.text).toBe(200);
    expect(r.body).toMatchObject({ status: 'stopped', health: 'unknown', desired: 'stopped' });
    await sleep(700);
    const s = await l.stop();
    figures.stopUnderLoadRequests = s.ok + s.failed;
    figures.stopUnderLoadFailures = s.failed;
    expect(s.failures, s.failures.join('\n')).toEqual([]);
    expect(s.ok).toBeGreaterThan(100);
    expect(s.byBody.get(dockerShort(victim))).toBeGreaterThan(0); // it did serve before the stop
    const after = await distinctIds(30);
    expect(after.size).toBe(2);
    expect(after.has(dockerShort(victim))).toBe(false);
    expect((await docker.getContainer(victim.docker_id).inspect()).State.Running).toBe(false);
    const again = await user.post(`/api/containers/${victim.id}/stop`);
    expect(again.status).toBe(409);
    expect(again.body.error.code).toBe('already_stopped');
    // the stopped one still counts against max_instances, and the refusal says how to use it
    const full = await user.post(`/api/containers/${imageId}`, { count: 1 });
    expect([full.status, full.body.error.message]).toEqual([409, `image ${imageId} has 3 of max_instances 3 containers (1 of them stopped: POST /api/containers/:id/start starts one); 1 more would pass it`]);
  });

  it('starts it again and it returns to the rotation once healthy', async () => {
    const r = await user.post(`/api/containers/${ids[0]}/start`);
    expect(r.status, r.text).toBe(200);
    expect(r.body.status).toBe('running');
    expect((await user.post(`/api/containers/${ids[0]}/start`)).status).toBe(409);
    const c = await waitFor('restarted container healthy', async () => { const x = (await user.get(`/api/containers/${ids[0]}`)).body; return x.health === 'healthy' && x; });
    await waitFor('proxy serving it again', async () => (await distinctIds(12)).has(dockerShort(c)), 15_000, 20);
  });

  it('replaces a container killed with docker kill', async () => {
    const before = (await user.get(`/api/containers/${ids[1]}`)).body;
    const t0 = Date.now();
    await docker.getContainer(before.docker_id).kill();
    const after = await waitFor('replacement running and healthy', async () => {
      const x = (await user.get(`/api/containers/${ids[1]}`)).body;
      return x.docker_id !== before.docker_id && x.status === 'running' && x.health === 'healthy' && x;
    }, 30_000, 100);
    figures.killToReplacementHealthyMs = Date.now() - t0;
    expect(after.restart_count).toBe(before.restart_count + 1);
    expect(after.host_port).not.toBe(null);
    await waitFor('proxy serving the replacement', async () => (await distinctIds(12)).has(dockerShort(after)), 15_000, 20);
    const ev = (await user.get('/api/events?limit=1000')).body.events as any[];
    const mine = ev.filter((e) => e.container_id === ids[1]);
    const types = mine.map((e) => e.type);
    for (const t of ['container.created', 'container.started', 'container.healthy', 'container.stopped', 'container.replaced']) expect(types).toContain(t);
    const replaced = mine.find((e) => e.type === 'container.replaced');
    expect(replaced).toMatchObject({ image_id: imageId, app_hostname: HOST });
    expect(replaced.payload.old_docker_id).toBe(before.docker_id);
    const started = mine.filter((e) => e.type === 'container.started').pop();
    expect(started.payload.host_port).toBe(after.host_port);
    expect(ev.some((e) => e.type === 'container.stopped' && e.container_id === ids[0] && e.payload.reason === 'api')).toBe(true);
    // its logs are the new run's (Docker's went with the old container): how the last run ended comes first
    const logs = await user.get(`/api/containers/${ids[1]}/logs`);
    expect(logs.status).toBe(200);
    expect(logs.text).toMatch(new RegExp(`^berth: container ${ids[1]} was restarted 1 time\\(s\\); its last run ended: \\S`));
    // (not for lines asked after the new run began)
    expect((await user.get(`/api/containers/${ids[1]}/logs?since=${Math.floor(Date.now() / 1000) + 60}`)).text).not.toContain('was restarted');
  });

  it('keeps serving while the control plane is killed, and after a proxy restart while it is down', async () => {
    await cp!.kill('SIGKILL');
    let ok = 0;
    for (let i = 0; i < 30; i++) { const r = await viaProxy(pxPort, HOST); expect(r.status).toBe(200); ok++; }
    expect(ok).toBe(30);
    await px!.kill('SIGTERM');
    await startPx(); // same data dir: serves the persisted table, control plane still down
    const seen = await waitFor('restarted proxy serving', async () => { const s = await distinctIds(12); return s.size === 3 && s; }, 10_000, 50);
    expect(seen.size).toBe(3);
    const status = await (await fetch(`http://127.0.0.1:${adminPort}/stats`)).json().catch(() => null);
    if (status && status.controlPlane) expect(status.controlPlane.connected).toBe(false);
  });

  it('comes back with its state intact: same containers, no replacements, proxy resubscribed', async () => {
    const c = new pg.Client({ connectionString: dbUrl });
    await c.connect();
    const before = (await c.query('SELECT id::int AS id, docker_id, status, health, restart_count FROM containers ORDER BY id')).rows;
    await c.end();
    await startCp();
    await sleep(3500); // a reconcile pass and several health rounds
    const now = (await containers()).map((x) => ({ id: x.id, docker_id: x.docker_id, status: x.status, health: x.health, restart_count: x.restart_count }));
    expect(now).toEqual(before);
    expect(now.every((x) => x.status === 'running' && x.health === 'healthy')).toBe(true);
    await waitFor('proxy resubscribed and reporting', async () => {
      const p = (await user.get('/v1/proxies')).body;
      return p.count >= 1 && p.proxies.some((x: any) => x.table_version === p.current_version);
    }, 20_000, 200);
    expect((await distinctIds(12)).size).toBe(3);
  });

  it('blocks deleting an image while it has containers; deleting containers removes them from Docker', async () => {
    const d = await user.del(`/api/images/${imageId}`);
    expect(d.status).toBe(409);
    expect(d.body.error.code).toBe('image_in_use');
    // with min_instances 0 the proxy would hold the next request and wake the app; an app that
    // does not scale to zero answers 503 when it has no instance (PATCH applies at once)
    expect((await user.req('PATCH', `/api/images/${imageId}`, { json: { min_instances: 1 } })).status).toBe(200);
    const cs = await containers();
    for (const c of cs) expect((await user.del(`/api/containers/${c.id}`)).status).toBe(204);
    for (const c of cs) await expect(docker.getContainer(c.docker_id).inspect()).rejects.toMatchObject({ statusCode: 404 });
    expect((await user.get(`/api/containers/${cs[0].id}`)).status).toBe(404);
    // a path never fetched (the fallback cache would answer /id.txt for a while): 503, no endpoint
    await waitFor('route without endpoints', async () => (await viaProxy(pxPort, HOST, '/never-fetched.txt')).status === 503, 5000, 50);
    const ev = (await user.get('/api/events?limit=1000')).body.events as any[];
    expect(ev.filter((e) => e.type === 'container.deleted')).toHaveLength(3);
    expect((await user.del(`/api/images/${imageId}`)).status).toBe(204);
    await waitFor('route gone', async () => (await viaProxy(pxPort, HOST, '/never-fetched.txt')).status === 404, 5000, 50);
  });
});
