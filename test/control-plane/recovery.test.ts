import { afterAll, beforeAll, expect, it } from 'vitest';
import { startControlPlane, type ControlPlane } from '../../control-plane/app.js';
import { Api } from '../helpers/api.js';
import { appFiles, makeTar } from '../helpers/archives.js';
import { describeWithDocker, docker, removeClusterContainers } from '../helpers/docker.js';
import { freePort } from '../helpers/ports.js';
import { startTestPostgres, type TestPostgres } from '../helpers/postgres.js';
import { spawnBerth, waitForOk, type Spawned } from '../helpers/process.js';
import { tempDir } from '../helpers/tmp.js';

/**
 * A control plane is killed (SIGKILL) in the middle of a build with another build queued behind it.
 * The next control plane on the same data must not leave anything `building` forever: the
 * interrupted build is marked build_failed with the reason in its logs, the queued one is rebuilt.
 */
let pg: TestPostgres;
let data: { dir: string; cleanup(): Promise<void> };
let child: Spawned | undefined;
let cp: ControlPlane | undefined;
const refs: string[] = [];

await describeWithDocker('restart recovery of interrupted builds', () => {
  beforeAll(async () => {
    pg = await startTestPostgres();
    data = await tempDir();
  });

  afterAll(async () => {
    if (child && child.child.exitCode === null) child.child.kill('SIGKILL');
    const cluster = cp?.app.platform.clusterId;
    await cp?.close();
    if (cluster) await removeClusterContainers(cluster);
    // the killed process's build keeps running inside dockerd; let it finish, then remove what it tagged
    await new Promise((r) => setTimeout(r, 2000));
    for (const ref of refs) await docker.getImage(ref).remove({ force: true }).catch(() => {});
    await pg?.stop();
    await data?.cleanup();
  });

  it('marks the interrupted build failed and rebuilds the queued one', async () => {
    const databaseUrl = await pg.createDatabase();
    const port = await freePort();
    child = spawnBerth(['control-plane', '--listen', `127.0.0.1:${port}`, '--data-dir', data.dir, '--build-concurrency', '1'], {
      DATABASE_URL: databaseUrl, BERTH_LOG_LEVEL: 'warn', BERTH_JWT_SECRET: 'recovery-test-secret-recovery-test-secret',
    });
    const url = `http://127.0.0.1:${port}`;
    await waitForOk(`${url}/readyz`, child, 60_000);
    const api = await new Api(url).signup('recover@example.com');
    const slow = await api.upload({ name: 'slow', app_hostname: `slow-${process.pid}.example.com` },
      await makeTar([{ name: 'Dockerfile', content: 'FROM berth-test/busybox:1\nRUN echo "slow step started" && sleep 3\n' }]));
    const queued = await api.upload({ name: 'queued', app_hostname: `queued-${process.pid}.example.com` }, await makeTar(appFiles()));
    expect([slow.status, queued.status]).toEqual([201, 201]);
    refs.push(slow.body.docker_image, queued.body.docker_image);

    // wait until the slow build is really running (its output has been stored), then kill the process
    const end = Date.now() + 30_000;
    for (;;) {
      const logs = (await api.get(`/api/images/${slow.body.id}/build-logs`)).body.logs as string;
      if (logs.includes('slow step started')) break;
      if (Date.now() > end) throw new Error(`slow build never started:\n${logs}\n${child.output()}`);
      await new Promise((r) => setTimeout(r, 100));
    }
    await new Promise((r) => setTimeout(r, 1100)); // one log flush interval
    child.child.kill('SIGKILL');
    await child.exited;

    cp = await startControlPlane({ port: 0, dataDir: data.dir, databaseUrl, quiet: true, jwtSecret: 'recovery-test-secret-recovery-test-secret' });
    const again = new Api(cp.url, api.token);
    const failed = await again.waitForBuild(slow.body.id, 30_000);
    expect(failed.status).toBe('build_failed');
    expect(failed.status_reason).toMatch(/interrupted by a control plane restart/);
    const logs = (await again.get(`/api/images/${slow.body.id}/build-logs`)).body.logs;
    expect(logs).toContain('slow step started'); // what was stored before the crash is kept
    expect(logs).toMatch(/BUILD FAILED: build was interrupted/);
    const rebuilt = await again.waitForBuild(queued.body.id, 60_000);
    expect(rebuilt.status, rebuilt.status_reason).toBe('ready');
    const ev = (await again.get('/api/events')).body.events.map((e: any) => `${e.type}:${e.image_id}`);
    expect(ev).toContain(`image.build_failed:${slow.body.id}`);
    expect(ev).toContain(`image.ready:${queued.body.id}`);
    const { rows: stuck } = await cp.db.query(`SELECT id FROM images WHERE status = 'building'`);
    expect(stuck).toEqual([]);
  });
});
