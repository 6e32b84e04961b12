import { randomBytes } from 'node:crypto';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { Api } from '../helpers/api.js';
import { makeTar } from '../helpers/archives.js';
import { insertReadyImage, startTestControlPlane, type TestControlPlane } from '../helpers/control-plane.js';
import { BASE_IMAGE, describeWithDocker, docker, removeClusterContainers } from '../helpers/docker.js';

/**
 * DELETE /api/apps/:host sent three times at once by the app's owner (control-plane/apps/delete.ts):
 * each answers 204 or 404 — never a 500, a 409 or a 503 with Docker up —, the app, its revisions
 * and its instances (rows and Docker containers) are gone, and the events are those one DELETE
 * records: app.deleting once, container.deleted once per instance, image.deleted once per revision,
 * app.deleted once (with every revision and the instances removed).
 */
await describeWithDocker('concurrent DELETE of one app', () => {
  let t: TestControlPlane;
  let api: Api;
  let userId: number;
  const host = `del-race-${randomBytes(3).toString('hex')}.localhost`;
  const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

  beforeAll(async () => {
    // stopTimeoutSec 1: httpd as PID 1 ignores SIGTERM, and `docker stop` would wait 10 s for it
    t = await startTestControlPlane({ seedDefaultUser: false, stopTimeoutSec: 1, reconcileIntervalMs: 500 });
    api = await new Api(t.cp.url).signup('delete-race@example.com');
    userId = Number((await api.get('/api/auth/me')).body.user.id);
  });

  afterAll(async () => {
    const images = t ? (await t.cp.db.query<{ docker_image: string }>('SELECT docker_image FROM images')).rows : [];
    const clusterId = t?.cp.app.platform.clusterId;
    await t?.close();
    if (clusterId) await removeClusterContainers(clusterId);
    for (const i of images) if (i.docker_image.startsWith('berth-u')) await docker.getImage(i.docker_image).remove({ force: true }).catch(() => {});
  });

  it('three DELETEs at once: each 204 or 404; rows, containers and Docker image gone; each event recorded once', async () => {
    // revision 1: a real build with two running instances (the reconcile loop starts min_instances)
    const archive = await makeTar([
      { name: 'Dockerfile', content: `FROM ${BASE_IMAGE}\nCMD ["sh", "-c", "exec httpd -f -p $PORT -h /www"]\n` },
    ]);
    const up = await api.upload({ name: 'race', app_hostname: host, min_instances: 2, max_instances: 2, container_port: 8080 }, archive);
    expect(up.status, up.text).toBe(201);
    const built = await api.waitForBuild(up.body.id, 90_000);
    expect(built.status, built.status_reason).toBe('ready');
    const running = async () => (await api.get(`/api/containers?image_id=${up.body.id}`)).body.containers
      .filter((c: { status: string; docker_id: string | null }) => c.status === 'running' && c.docker_id);
    let instances: { id: number; docker_id: string }[] = [];
    for (let i = 0; i < 150 && instances.length < 2; i++) { instances = await running(); if (instances.length < 2) await sleep(200); }
    expect(instances).toHaveLength(2);
    // revision 2: a row without traffic or instances (no build needed). The traffic stays pinned
    // on revision 1: following `latest`, revision 2 would take it, and the reconcile loop could
    // retire revision 1's instances ("no traffic") before the DELETEs begin
    await t.cp.db.query(`UPDATE apps SET traffic = $2::jsonb WHERE app_hostname = $1`, [host, JSON.stringify([{ image_id: up.body.id, percent: 100 }])]);
    const second = await insertReadyImage(t.cp, userId, host);

    const answers = await Promise.all([0, 1, 2].map(() => api.req('DELETE', `/api/apps/${host}`)));
    const statuses = answers.map((a) => a.status);
    for (const a of answers) expect([204, 404], `${a.status} ${a.text}`).toContain(a.status);
    expect(statuses, 'at least one DELETE did it').toContain(204);
    for (const a of answers.filter((x) => x.status === 404)) expect(a.body.error.code).toBe('not_found');

    // gone: the app (API and rows), its revisions, its instances, their Docker containers, the built image
    expect((await api.get(`/api/apps/${host}`)).status).toBe(404);
    expect((await t.cp.db.query('SELECT 1 FROM apps WHERE app_hostname = $1', [host])).rowCount).toBe(0);
    expect((await t.cp.db.query('SELECT 1 FROM images WHERE app_hostname = $1', [host])).rowCount).toBe(0);
    expect((await t.cp.db.query('SELECT 1 FROM containers WHERE image_id = ANY($1::bigint[])', [[up.body.id, second]])).rowCount).toBe(0);
    for (const c of instances) expect(await docker.getContainer(c.docker_id).inspect().then(() => 'exists', () => 'gone'), c.docker_id).toBe('gone');
    expect(await docker.getImage(built.docker_image).inspect().then(() => 'exists', () => 'gone')).toBe('gone');

    // the events one DELETE records, each once however many were sent
    const { rows: ev } = await t.cp.db.query<{ type: string; image_id: string | null; container_id: string | null; payload: any }>(
      `SELECT type, image_id, container_id, payload FROM events
        WHERE app_hostname = $1 AND type IN ('app.deleting', 'container.deleted', 'image.deleted', 'app.deleted') ORDER BY id`, [host]);
    expect(ev.map((e) => e.type)).toEqual(['app.deleting', 'container.deleted', 'container.deleted', 'image.deleted', 'image.deleted', 'app.deleted']);
    expect(ev.filter((e) => e.type === 'container.deleted').map((e) => [Number(e.container_id), e.payload.reason]).sort())
      .toEqual(instances.map((c) => [Number(c.id), 'app deleted']).sort());
    expect(ev.filter((e) => e.type === 'image.deleted').map((e) => [Number(e.image_id), e.payload.revision])).toEqual([[up.body.id, 1], [second, 2]]);
    expect(ev.at(-1)!.payload).toEqual({ revisions: [1, 2], instances_removed: 2 });
    // the name is held for its owner
    expect((await t.cp.db.query<{ user_id: string }>('SELECT user_id FROM hostname_holds WHERE app_hostname = $1', [host])).rows.map((r) => Number(r.user_id))).toEqual([userId]);
  }, 150_000);
});
