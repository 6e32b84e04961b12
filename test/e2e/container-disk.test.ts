/**
 * BERTH_CONTAINER_DISK with real Docker: an instance that writes more than the limit to its own
 * filesystem is stopped (container.stopped names the limit) and replaced by a fresh container,
 * its writable layer removed with the old one; an instance under the limit is left alone.
 */
import { randomBytes } from 'node:crypto';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { Api } from '../helpers/api.js';
import { makeTar } from '../helpers/archives.js';
import { startTestControlPlane, type TestControlPlane } from '../helpers/control-plane.js';
import { describeWithDocker, docker } from '../helpers/docker.js';
import { removeClusterContainers, waitFor } from './support.js';

const tag = randomBytes(3).toString('hex');
const MiB = 1024 * 1024;
let t: TestControlPlane;
let alice: Api;
let clusterId = '';
const dockerImages: string[] = [];
const ids: Record<'filler' | 'quiet', number> = { filler: 0, quiet: 0 };

const app = (writeMiB: number) => [
  {
    name: 'Dockerfile',
    // writes before it serves: healthy means the bytes are on disk
    content: `FROM berth-test/busybox:1\nCOPY www /www\nCMD ["sh", "-c", "dd if=/dev/zero of=/fill bs=1048576 count=${writeMiB} 2>/dev/null; exec httpd -f -p \${PORT:-8080} -h /www"]\n`,
  },
  { name: 'www/', type: 'directory' as const },
  { name: 'www/index.html', content: 'ok\n' },
];

await describeWithDocker('container disk: what an instance may write to its own filesystem', () => {
  beforeAll(async () => {
    t = await startTestControlPlane({
      seedDefaultUser: false, health: { intervalMs: 100 }, autoscale: { enabled: false }, reconcileIntervalMs: 500,
      containerDiskBytes: 16 * MiB, containerStoppedDiskBytes: 24 * MiB, containerDiskPollMs: 3_600_000, // looked at by hand below
    });
    clusterId = t.cp.app.platform.clusterId;
    alice = await new Api(t.cp.url).signup(`alice-disk-${tag}@example.com`);
    // no traffic: nothing starts on its own (a revision that scales from zero deployed with traffic is
    // started once to prove it can serve); the containers are made by hand below
    const ups = await Promise.all([
      alice.upload({ name: 'filler', app_hostname: `filler-${tag}.example.com`, min_instances: 0, no_traffic: 'true', max_instances: 1, health_path: '/' }, await makeTar(app(32))),
      alice.upload({ name: 'quiet', app_hostname: `quiet-${tag}.example.com`, min_instances: 0, no_traffic: 'true', max_instances: 1, health_path: '/' }, await makeTar(app(1))),
    ]);
    for (const u of ups) { expect(u.status, u.text).toBe(201); dockerImages.push(u.body.docker_image); }
    [ids.filler, ids.quiet] = ups.map((u) => u.body.id);
    for (const id of Object.values(ids)) expect((await alice.waitForBuild(id, 120_000)).status).toBe('ready');
  }, 180_000);

  afterAll(async () => {
    await t?.close();
    if (clusterId) await removeClusterContainers(clusterId);
    for (const i of dockerImages) await docker.getImage(i).remove({ force: true }).catch(() => {});
  });

  it('an instance past the limit is stopped with the reason and replaced by a fresh container; one under it is left alone', async () => {
    const started = await Promise.all(Object.values(ids).map(async (id) => {
      const r = await alice.post(`/api/containers/${id}`, { count: 1 });
      expect(r.status, r.text).toBe(201);
      return r.body.containers[0] as { id: number; docker_id: string };
    }));
    const [filler, quiet] = started;
    const get = async (id: number) => (await alice.get(`/api/containers/${id}`)).body;
    for (const c of started) await waitFor('healthy', async () => (await get(c.id)).health === 'healthy', 30_000, 100);
    const before = await get(filler.id);

    expect(await t.cp.app.platform.diskWatch.once()).toEqual([filler.id]);

    const ev = await waitFor('container.stopped names the limit', async () => {
      const e = (await alice.get('/api/events?limit=1000')).body.events.filter((x: any) => x.container_id === filler.id && x.type === 'container.stopped');
      return e.length > 0 && e.at(-1);
    }, 10_000, 100);
    expect(ev.payload.reason).toMatch(/^wrote 3\d\.\d MiB|^wrote 3\d MiB/);
    expect(ev.payload.reason).toContain('BERTH_CONTAINER_DISK');
    // the reconcile loop replaces it: a new Docker container, the old one (and its writes) removed
    const after = await waitFor('replaced and running', async () => {
      const c = await get(filler.id);
      return c.status === 'running' && c.docker_id !== before.docker_id && c;
    }, 30_000, 200);
    expect(after.restart_count).toBe(before.restart_count + 1);
    await expect(docker.getContainer(before.docker_id).inspect()).rejects.toMatchObject({ statusCode: 404 });
    // the quiet one kept running as it was
    expect(await get(quiet.id)).toMatchObject({ status: 'running', docker_id: quiet.docker_id });
  }, 120_000);

  it('a stopped instance keeps at most BERTH_CONTAINER_STOPPED_DISK of what it wrote: a larger layer goes with its container, and the next start makes a fresh one', async () => {
    const get = async (id: number) => (await alice.get(`/api/containers/${id}`)).body;
    const filler = (await alice.get(`/api/containers?image_id=${ids.filler}`)).body.containers.find((c: any) => c.status === 'running')
      ?? (await get((await alice.get(`/api/containers?image_id=${ids.filler}`)).body.containers[0].id));
    const quiet = (await alice.get(`/api/containers?image_id=${ids.quiet}`)).body.containers[0];
    await waitFor('both running', async () => (await get(filler.id)).status === 'running' && (await get(quiet.id)).status === 'running', 30_000, 200);
    const fillerBefore = await get(filler.id);
    const quietBefore = await get(quiet.id);
    // stopped by their user: 32 MiB written (past the 24 MiB a stopped one keeps), and 1 MiB
    for (const c of [fillerBefore, quietBefore]) expect((await alice.post(`/api/containers/${c.id}/stop`)).status).toBe(200);
    expect(await t.cp.app.platform.diskWatch.trimStopped()).toEqual([filler.id]);
    await expect(docker.getContainer(fillerBefore.docker_id).inspect()).rejects.toMatchObject({ statusCode: 404 });
    expect(await get(filler.id)).toMatchObject({ status: 'stopped', docker_id: null });
    expect(await get(quiet.id)).toMatchObject({ status: 'stopped', docker_id: quietBefore.docker_id });
    // started again: the filler in a fresh container, the quiet one in its own
    for (const c of [fillerBefore, quietBefore]) expect((await alice.post(`/api/containers/${c.id}/start`)).status).toBe(200);
    const fresh = await waitFor('filler running again', async () => { const c = await get(filler.id); return c.status === 'running' && c; }, 30_000, 200);
    expect(fresh.docker_id).not.toBe(fillerBefore.docker_id);
    expect(fresh.docker_id).toBeTruthy();
    expect(await get(quiet.id)).toMatchObject({ status: 'running', docker_id: quietBefore.docker_id });
    // measured once per stop, not once per container: restarted in the same container, written
    // past the limit and stopped again, it is looked at again
    const exec = await docker.getContainer(quietBefore.docker_id).exec({ Cmd: ['sh', '-c', 'dd if=/dev/zero of=/more bs=1048576 count=30 2>/dev/null'] });
    await exec.start({});
    await waitFor('written', async () => (await exec.inspect()).Running === false, 30_000, 100);
    expect((await alice.post(`/api/containers/${quiet.id}/stop`)).status).toBe(200);
    expect(await t.cp.app.platform.diskWatch.trimStopped()).toEqual([quiet.id]);
    expect(await get(quiet.id)).toMatchObject({ status: 'stopped', docker_id: null });
  }, 120_000);
});
