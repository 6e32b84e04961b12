/**
 * Revision retention (control-plane/apps/retention.ts): an app keeps its active revisions and the
 * `kept` newest inactive ones; the reconcile loop deletes older ones with their event, Docker
 * image and build directory. Also the flag that sets it.
 */
import { randomBytes } from 'node:crypto';
import { mkdir, stat } from 'node:fs/promises';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { revisionsToCollect, type RetainedRevision } from '../../control-plane/apps/retention.js';
import type { TrafficEntry } from '../../control-plane/apps/traffic.js';
import { tenantOptions } from '../../control-plane/cli.js';
import { resolveConfig } from '../../control-plane/config.js';
import { withTransaction } from '../../control-plane/db/pool.js';
import { buildDir } from '../../control-plane/images/build-queue.js';
import { Api } from '../helpers/api.js';
import { insertApp, startTestControlPlane, type TestControlPlane } from '../helpers/control-plane.js';
import { BASE_IMAGE, describeWithDocker, docker } from '../helpers/docker.js';

const NOW = Date.parse('2026-12-01T12:00:00Z');
const HOUR = 3_600_000;
/** revisions 1..n, ready and routable unless told otherwise, last active a day ago (id = 100 + revision) */
function revs(n: number, over: Record<number, Partial<RetainedRevision>> = {}): RetainedRevision[] {
  return Array.from({ length: n }, (_, i) => ({
    id: 101 + i, revision: i + 1, status: 'ready' as const, routable: true, failed: false, containers: 0, last_active_at: new Date(NOW - 24 * HOUR), ...over[i + 1],
  }));
}
const collect = (a: ReturnType<typeof app>, list: RetainedRevision[], kept: number, graceMs = 15 * HOUR) => revisionsToCollect(a, list, kept, graceMs, NOW);
const app = (traffic: TrafficEntry[], pending: number | null = null) => ({ traffic, pending_image_id: pending });
const revisionOf = (ids: number[]) => ids.map((id) => id - 100);

describe('which revisions retention deletes', () => {
  it('keeps the revision latest stands for and the kept newest of the others', () => {
    expect(revisionOf(collect(app([{ latest: true, percent: 100 }]), revs(25), 20))).toEqual([1, 2, 3, 4]);
    expect(collect(app([{ latest: true, percent: 100 }]), revs(21), 20)).toEqual([]);
    expect(revisionOf(collect(app([{ latest: true, percent: 100 }]), revs(5), 0))).toEqual([1, 2, 3, 4]);
  });

  it('never deletes what the traffic names (by id at any percent, or by tag), the pending deploy, a build, or a revision with instances', () => {
    const traffic: TrafficEntry[] = [
      { image_id: 102, percent: 90 },
      { latest: true, percent: 10 },
      { image_id: 103, percent: 0 }, // pinned rollback target
      { image_id: 104, percent: 0, tag: 'old' },
    ];
    const list = revs(12, { 5: { containers: 1 }, 6: { status: 'building', routable: false }, 7: { status: 'build_failed', routable: false } });
    // active: 2, 3, 4, 5 (instances), 6 (building), 11 (pending), 12 (latest, newest); inactive newest first: 10 9 8 7 1
    expect(revisionOf(collect(app(traffic, 111), list, 2))).toEqual([1, 7, 8]);
    expect(revisionOf(collect(app(traffic, 111), list, 0))).toEqual([1, 7, 8, 9, 10]);
  });

  it('keeps a revision that was active within the grace, however old (the one a rollback wants)', () => {
    const list = revs(25, { 1: { last_active_at: new Date(NOW - 2 * HOUR) }, 2: { last_active_at: new Date(NOW - 15 * HOUR) } });
    expect(revisionOf(collect(app([{ latest: true, percent: 100 }]), list, 20))).toEqual([2, 3, 4]);
    expect(revisionOf(collect(app([{ latest: true, percent: 100 }]), list, 20, 0))).toEqual([1, 2, 3, 4]);
    expect(collect(app([{ latest: true, percent: 100 }]), list, 20, 48 * HOUR)).toEqual([]);
  });

  it('keeps the newest revision even when nothing is ready (an app is never emptied)', () => {
    const failed = revs(4, { 1: { status: 'build_failed', routable: false }, 2: { status: 'build_failed', routable: false }, 3: { status: 'build_failed', routable: false }, 4: { status: 'build_failed', routable: false } });
    expect(revisionOf(collect(app([{ latest: true, percent: 100 }]), failed, 0))).toEqual([1, 2, 3]);
    expect(collect(app([]), [], 0)).toEqual([]);
  });
});

describe('--revisions-kept / BERTH_REVISIONS_KEPT', () => {
  it('takes a whole number or "all"; anything else is a usage error', () => {
    expect(tenantOptions({ 'revisions-kept': '5' }).revisionsKept).toBe(5);
    expect(tenantOptions({ 'revisions-kept': '0' }).revisionsKept).toBe(0);
    expect(tenantOptions({ 'revisions-kept': 'ALL' }).revisionsKept).toBeNull();
    expect(tenantOptions({}).revisionsKept).toBeUndefined();
    for (const bad of ['-1', '1.5', 'ten', '', '1e3', '99999999999']) {
      expect(() => tenantOptions({ 'revisions-kept': bad }), bad).toThrow(/--revisions-kept must be a whole number/);
    }
    expect(resolveConfig({}).revisionsKept).toBe(20);
    expect(resolveConfig({}).revisionsGraceMs).toBe(15 * HOUR);
    expect(resolveConfig({ revisionsKept: null }).revisionsKept).toBeNull();
    expect(() => resolveConfig({ revisionsKept: -2 })).toThrow(/revisions kept/);
  });
});

await describeWithDocker('the reconcile loop deletes old inactive revisions', () => {
  let t: TestControlPlane;
  let alice: Api;
  let userId: number;
  const repo = `berth-test/retention-${randomBytes(4).toString('hex')}`;
  const host = `keep-${randomBytes(3).toString('hex')}.localhost`;
  const ids: number[] = [];

  beforeAll(async () => {
    t = await startTestControlPlane({ seedDefaultUser: false, revisionsKept: 2, revisionsGraceMs: 0, reconcileIntervalMs: 60_000, autoscale: { enabled: false } });
    alice = await new Api(t.cp.url).signup('retention@example.com');
    userId = Number((await alice.get('/api/auth/me')).body.user.id);
    // five revisions that served once, each with its own Docker tag and build directory, and all
    // traffic pinned to revision 1 (a rollback): 1 and 5 (latest, newest) are active. One transaction, so the loop's
    // own first pass never sees the app half made (with `latest` taking the traffic, it would
    // rightly delete revision 1 first).
    for (let r = 1; r <= 5; r++) await docker.getImage(BASE_IMAGE).tag({ repo, tag: String(r) });
    await withTransaction(t.cp.db, async (c) => {
      for (let r = 1; r <= 5; r++) {
        const rev = await insertApp(c, userId, host);
        const { rows: [row] } = await c.query<{ id: number }>(
          `INSERT INTO images (user_id, name, tag, app_hostname, revision, status, docker_image, min_instances, max_instances, routable_at)
           VALUES ($1, 'x', 'latest', $2, $3, 'ready', $4, 0, 1, now()) RETURNING id`, [userId, host, rev, `${repo}:${r}`]);
        ids.push(Number(row.id));
        await mkdir(buildDir(t.cp.config.dataDir, userId, Number(row.id)), { recursive: true });
      }
      await c.query(`UPDATE apps SET traffic = $2::jsonb WHERE app_hostname = $1`, [host, JSON.stringify([{ image_id: ids[0], percent: 100 }])]);
    });
  });

  /** One reconcile pass that ran (a control plane takes the reconcile lock shortly after it starts). */
  const pass = async () => {
    for (let i = 0; i < 100 && !t.cp.app.platform.leader.isLeader; i++) await new Promise((r) => setTimeout(r, 100));
    const rep = await t.cp.app.platform.reconciler.run();
    expect(rep.skipped).toBeUndefined();
    // the Docker images go after the pass, outside it
    await t.cp.app.platform.reconciler.settled();
  };

  afterAll(async () => {
    await t?.close();
    for (let r = 1; r <= 5; r++) await docker.getImage(`${repo}:${r}`).remove().catch(() => {});
  });

  it('deletes revision 2 (rows, event, Docker tag, build dir) and keeps 1, 3, 4, 5', async () => {
    // revision 1 serves: a pass marks it active (the grace runs from there)
    await t.cp.db.query(`UPDATE images SET last_active_at = now() - interval '2 hours' WHERE id = ANY($1::bigint[])`, [[ids[0], ids[2]]]);
    // a pass (the loop's own first pass may have done it already: the state is what counts)
    await pass();
    const { rows: marks } = await t.cp.db.query<{ id: string; age: number }>(
      `SELECT id, EXTRACT(EPOCH FROM now() - last_active_at)::float AS age FROM images WHERE id = ANY($1::bigint[]) ORDER BY id`, [[ids[0], ids[2]]]);
    expect(marks[0].age).toBeLessThan(60); // serving: marked
    expect(marks[1].age).toBeGreaterThan(3600); // inactive: not
    const { body } = await alice.get(`/api/apps/${host}`);
    expect(body.revisions.map((v: { revision: number }) => v.revision)).toEqual([1, 3, 4, 5]);
    const { rows: ev } = await t.cp.db.query<{ image_id: number; payload: { reason: string; revision: number } }>(
      `SELECT image_id, payload FROM events WHERE type = 'image.deleted' AND app_hostname = $1`, [host]);
    expect(ev.map((e) => [Number(e.image_id), e.payload.reason, e.payload.revision])).toEqual([[ids[1], 'retention', 2]]);
    const tags = async () => (await docker.listImages({ filters: JSON.stringify({ reference: [repo] }) })).flatMap((i) => i.RepoTags ?? []).sort();
    expect(await tags()).toEqual([1, 3, 4, 5].map((r) => `${repo}:${r}`));
    await expect(stat(buildDir(t.cp.config.dataDir, userId, ids[1]))).rejects.toThrow(/ENOENT/);
    await stat(buildDir(t.cp.config.dataDir, userId, ids[2]));

    // a second pass has nothing to do; moving the traffic off revision 1 makes it inactive and,
    // as the oldest beyond the two kept (4, 3), it goes next
    await pass();
    expect((await alice.get(`/api/apps/${host}`)).body.revisions.map((v: { revision: number }) => v.revision)).toEqual([1, 3, 4, 5]);
    expect((await alice.req('PUT', `/api/apps/${host}/traffic`, { json: { traffic: [{ latest: true, percent: 100 }] } })).status).toBe(200);
    await pass();
    expect((await alice.get(`/api/apps/${host}`)).body.revisions.map((v: { revision: number }) => v.revision)).toEqual([3, 4, 5]);
    expect(await tags()).toEqual([3, 4, 5].map((r) => `${repo}:${r}`));
  });
});
