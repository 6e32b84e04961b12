/**
 * The workload API on `berth up` with a real app (Docker): `up` tells the control plane where its
 * proxy is, and a run started with POST /api/workloads reaches the app's container through that
 * proxy — every request answered 200 by busybox httpd, at the scheduled rate.
 */
import { randomBytes } from 'node:crypto';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { up, type UpHandle } from '../../control-plane/up.js';
import { Api } from '../helpers/api.js';
import { makeTar } from '../helpers/archives.js';
import { describeWithDocker, docker, ensureBaseImage } from '../helpers/docker.js';
import { freePort } from '../helpers/ports.js';
import { tempDir } from '../helpers/tmp.js';
import { idApp, removeClusterContainers, viaProxy, waitFor } from './support.js';

const HOST = `load-${randomBytes(3).toString('hex')}.example.com`;
let h: UpHandle;
let dir: { dir: string; cleanup(): Promise<void> };
let api: Api;
let dockerImage = '';
let clusterId = '';

await describeWithDocker('workloads through berth up (real proxy, real container)', () => {
  beforeAll(async () => {
    await ensureBaseImage();
    dir = await tempDir('berth-wl-up-');
    const [a, p, m] = [await freePort(), await freePort(), await freePort()];
    h = await up({ apiListen: `127.0.0.1:${a}`, proxyListen: `127.0.0.1:${p}`, adminListen: `127.0.0.1:${m}`, dataDir: `${dir.dir}/data`, quiet: true });
    clusterId = h.cp.app.platform.clusterId;
    api = await new Api(h.cp.url).signup(`wl-up-${randomBytes(3).toString('hex')}@example.com`);
    const u = await api.upload({ name: 'load', app_hostname: HOST, min_instances: 1, max_instances: 1, health_path: '/health.txt' }, await makeTar(idApp()));
    expect(u.status, u.text).toBe(201);
    dockerImage = u.body.docker_image;
    expect((await api.waitForBuild(u.body.id, 120_000)).status).toBe('ready');
    await waitFor('the app answers through the proxy', async () => (await viaProxy(h.proxy.port, HOST, '/index.html')).status === 200, 60_000, 200);
  }, 180_000);

  afterAll(async () => {
    await h?.close();
    if (clusterId) await removeClusterContainers(clusterId);
    if (dockerImage) await docker.getImage(dockerImage).remove({ force: true }).catch(() => {});
    await dir?.cleanup();
  });

  it('POST /api/workloads sends 100 req/s for 3 s to the container through the proxy berth up started', async () => {
    expect(h.cp.config.workloads.proxyUrl).toBe(h.proxyUrl);
    const r = await api.post('/api/workloads', { app_hostname: HOST, rps: 100, duration_seconds: 3, path: '/index.html' });
    expect(r.status, r.text).toBe(201);
    const done = await waitFor('the run to end', async () => {
      const g = await api.get(`/api/workloads/${r.body.id}`);
      return g.body.status !== 'running' && g.body;
    }, 30_000, 250);
    expect(done.status).toBe('completed');
    expect(Math.abs(done.metrics.total_requests - 300)).toBeLessThanOrEqual(9);
    expect(done.metrics.status_code_distribution).toEqual({ 200: done.metrics.total_requests });
    expect(done.metrics.failed_requests).toBe(0);
    expect(done.metrics.p99_latency_ms).toBeGreaterThan(0);
  });
});
