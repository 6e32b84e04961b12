/**
 * Two control planes on one database, each with its own data directory (where build contexts
 * live): starting one must not fail the other's queued or running builds. A build is recovered
 * by another control plane only when its heartbeats stop; a restarted control plane (same data
 * directory) recovers its own leftovers at once; rows from before heartbeats are recovered.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startControlPlane, type ControlPlane } from '../../control-plane/app.js';
import { BUILD_HEARTBEAT_S } from '../../control-plane/images/build-queue.js';
import { Api } from '../helpers/api.js';
import { insertApp, startTestControlPlane, type TestControlPlane } from '../helpers/control-plane.js';
import { tempDir } from '../helpers/tmp.js';

let t: TestControlPlane;
let other: ControlPlane | undefined;
let otherData: { dir: string; cleanup(): Promise<void> };
let userId = 0;

beforeAll(async () => {
  t = await startTestControlPlane({ seedDefaultUser: false, dockerHost: 'unix:///nonexistent/docker.sock' });
  const api = await new Api(t.cp.url).signup('builds-two@example.com');
  userId = (await api.get('/api/auth/me')).body.user.id;
  otherData = await tempDir();
}, 60_000);
afterAll(async () => {
  await other?.close();
  await otherData?.cleanup();
  await t?.close();
});

/** A `building` row as a control plane would leave it mid-build. */
async function building(host: string, runner: string | null, heartbeatAgoS: number | null): Promise<number> {
  const rev = await insertApp(t.cp.db, userId, host);
  const { rows: [r] } = await t.cp.db.query<{ id: number }>(
    `INSERT INTO images (user_id, name, tag, app_hostname, revision, status, docker_image, min_instances, max_instances, build_started_at, build_runner, build_heartbeat_at)
     VALUES ($1, 'x', 'latest', $2, $3, 'building', 'berth-test/none:1', 1, 1, now(), $4,
             CASE WHEN $5::int IS NULL THEN NULL ELSE now() - make_interval(secs => $5::int) END) RETURNING id`, [userId, host, rev, runner, heartbeatAgoS]);
  return Number(r.id);
}
const status = async (id: number) => (await t.cp.db.query<{ status: string; status_reason: string | null }>('SELECT status, status_reason FROM images WHERE id = $1', [id])).rows[0];

describe('builds of several control planes on one database', () => {
  it('a starting control plane leaves live builds of others alone and recovers the stale, the legacy and its own', async () => {
    const live = await building('live.example.com', 'elsewhere:/var/lib/berth', 1);
    const stale = await building('stale.example.com', 'elsewhere:/var/lib/berth', 120);
    const legacy = await building('legacy.example.com', null, null);
    other = await startControlPlane({ port: 0, dataDir: otherData.dir, databaseUrl: t.cp.databaseUrl, quiet: true, seedDefaultUser: false, dockerHost: 'unix:///nonexistent/docker.sock' });
    // its own leftovers from before a restart: a fresh heartbeat, but this data directory's
    const own = await building('own.example.com', other.builds.runner, 1);
    expect((await status(live)).status).toBe('building');
    expect((await status(stale)).status).toBe('build_failed');
    expect((await status(legacy)).status).toBe('build_failed');
    expect((await status(own)).status).toBe('building'); // inserted after its start: not a leftover of this life
    await other.close();
    other = await startControlPlane({ port: 0, dataDir: otherData.dir, databaseUrl: t.cp.databaseUrl, quiet: true, seedDefaultUser: false, dockerHost: 'unix:///nonexistent/docker.sock' });
    expect((await status(own)).status).toBe('build_failed');
    expect((await status(live)).status).toBe('building');
    expect(other.builds.runner).not.toBe(t.cp.builds.runner);

    // the live one's control plane stops beating: recovered at a later heartbeat, not before
    await t.cp.db.query(`UPDATE images SET build_heartbeat_at = now() - interval '60 seconds' WHERE id = $1`, [live]);
    const deadline = Date.now() + (BUILD_HEARTBEAT_S * 2 + 5) * 1000;
    while ((await status(live)).status === 'building' && Date.now() < deadline) await new Promise((r) => setTimeout(r, 250));
    expect(await status(live)).toMatchObject({ status: 'build_failed' });
    expect((await status(live)).status_reason).toMatch(/interrupted|missing/);
  }, 60_000);

});
