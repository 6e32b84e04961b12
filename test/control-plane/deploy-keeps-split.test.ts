/**
 * A split set by hand outlives deploys, as Cloud Run's does ("all subsequent deployments use that
 * traffic splitting pattern"): a plain deploy over revisions named with a share takes only the
 * split's `latest` share (once it can serve), or nothing; over `latest` alone it takes all the
 * traffic once it can serve. The upload says which (`joins_traffic`), so the CLI knows what to wait
 * for. (apps/repo.ts joinTraffic; the switch itself under real Docker: test/e2e/revisions.test.ts.)
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Api } from '../helpers/api.js';
import { makeTar } from '../helpers/archives.js';
import { insertReadyImage, startTestControlPlane, type TestControlPlane } from '../helpers/control-plane.js';

let t: TestControlPlane;
let alice: Api;
let aliceId = 0;
let archive: Buffer;

beforeAll(async () => {
  // no Docker: builds fail later, which does not matter here (the upload's answer and the split do)
  t = await startTestControlPlane({ seedDefaultUser: false, dockerHost: 'unix:///nonexistent/docker.sock', quotas: { builds: 100 } });
  alice = await new Api(t.cp.url).signup('keeps-split@example.com');
  aliceId = (await alice.get('/api/auth/me')).body.user.id;
  archive = await makeTar([{ name: 'Dockerfile', content: 'FROM scratch\n' }]);
}, 60_000);
afterAll(async () => { await t?.close(); });

/** Two revisions that served (a split by hand may give them any share). */
async function twoServed(host: string): Promise<[number, number]> {
  const a = await insertReadyImage(t.cp, aliceId, host);
  const b = await insertReadyImage(t.cp, aliceId, host);
  await t.cp.db.query('UPDATE images SET routable_at = now() WHERE id = ANY($1::bigint[])', [[a, b]]);
  return [a, b];
}

async function state(host: string, imageId: number) {
  const app = (await alice.get(`/api/apps/${host}`)).body;
  const { rows: [img] } = await t.cp.db.query<{ proof_required: boolean; joins_traffic: string | null }>('SELECT proof_required, joins_traffic FROM images WHERE id = $1', [imageId]);
  const { rows: [a] } = await t.cp.db.query<{ pending_image_id: string | null }>('SELECT pending_image_id FROM apps WHERE app_hostname = $1', [host]);
  return { traffic: app.traffic.map(({ revision: _r, ...e }: { revision: number }) => e), img, pending: a.pending_image_id === null ? null : Number(a.pending_image_id) };
}

describe('a plain deploy and a split set by hand', () => {
  it('revisions named with all the share: the deploy gets none and the split stays; it is proven aside', async () => {
    const host = 'pinned.example.com';
    const [v1] = await twoServed(host);
    expect((await alice.req('PUT', `/api/apps/${host}/traffic`, { json: { traffic: [{ image_id: v1, percent: 100 }] } })).status).toBe(200);
    const up = await alice.upload({ app_hostname: host }, archive);
    expect(up.status, up.text).toBe(201);
    expect(up.body.joins_traffic).toBe('none');
    expect((await alice.get(`/api/images/${up.body.id}`)).body.joins_traffic).toBe('none');
    const s = await state(host, up.body.id);
    expect(s.traffic).toEqual([{ image_id: v1, percent: 100 }]);
    expect(s.pending).toBeNull();
    // started once all the same (as Cloud Run makes a deployed revision ready), so that the deploy
    // says whether it can serve and a split may name it after: it has instances, and no share
    expect(s.img.proof_required).toBe(true);
    const view = (await alice.get(`/api/apps/${host}`)).body;
    const mine = view.revisions.find((r: { image_id: number }) => r.image_id === up.body.id);
    // (its build fails here, without Docker: what it would be were it ready is resolveTraffic's, below)
    expect(mine).toMatchObject({ traffic_percent: 0 });
    const { resolveTraffic } = await import('../../control-plane/apps/traffic.js');
    const revs = [
      { id: v1, revision: 1, status: 'ready' as const, routable: true, failed: false },
      { id: up.body.id, revision: 3, status: 'ready' as const, routable: false, failed: false, aside: true },
    ];
    const r = resolveTraffic(s.traffic, revs);
    expect([...r.serving].sort()).toEqual([v1, up.body.id].sort());
    expect([...r.percent]).toEqual([[v1, 100]]);
    expect(r.latest).toBe(v1);
    // the app view says the same once it is built (the reconcile loop and `berth deploy` read it)
    await t.cp.db.query(`UPDATE images SET status = 'ready' WHERE id = $1`, [up.body.id]);
    const built = (await alice.get(`/api/apps/${host}`)).body.revisions.find((r: { image_id: number }) => r.image_id === up.body.id);
    expect(built).toMatchObject({ traffic_percent: 0, serving: true, proving: true });
    // once proven it is no longer aside: it runs nothing until a split names it
    expect([...resolveTraffic(s.traffic, [revs[0], { ...revs[1], routable: true, aside: false }]).serving]).toEqual([v1]);
  });

  it('a split with a `latest` share: the deploy takes that share once it can serve, proven first', async () => {
    const host = 'canary.example.com';
    const [v1] = await twoServed(host);
    const split = [{ image_id: v1, percent: 90 }, { latest: true, percent: 10 }];
    expect((await alice.req('PUT', `/api/apps/${host}/traffic`, { json: { traffic: split } })).status).toBe(200);
    const up = await alice.upload({ app_hostname: host, traffic_tag: 'next' }, archive);
    expect(up.status, up.text).toBe(201);
    expect(up.body.joins_traffic).toBe('latest');
    const s = await state(host, up.body.id);
    // the stored split is as set (the tag names the new revision); `latest` moves once it serves
    expect(s.traffic).toEqual([...split, { image_id: up.body.id, percent: 0, tag: 'next' }]);
    expect(s.pending).toBeNull();
    expect(s.img.proof_required).toBe(true);
  });

  it('`latest` alone (the default, tags aside): the deploy takes all the traffic once it can serve', async () => {
    const host = 'follows.example.com';
    const [v1, v2] = await twoServed(host);
    expect((await alice.req('PUT', `/api/apps/${host}/traffic`, { json: { traffic: [{ latest: true, percent: 100 }, { image_id: v1, percent: 0, tag: 'old' }] } })).status).toBe(200);
    const up = await alice.upload({ app_hostname: host }, archive);
    expect(up.status, up.text).toBe(201);
    expect(up.body.joins_traffic).toBe('all');
    const s = await state(host, up.body.id);
    expect(s.traffic).toEqual([{ latest: true, percent: 100 }, { image_id: v1, percent: 0, tag: 'old' }]);
    expect(s.img.proof_required).toBe(true);
    expect(s.img.joins_traffic).toBe('all');
    void v2;
  });

  it('a split pinned by a no_traffic deploy is kept too (Cloud Run\'s --no-traffic); a deploy waiting to take all of it wins over it', async () => {
    const host = 'pinned-by-deploy.example.com';
    const [, v2] = await twoServed(host);
    const quiet = await alice.upload({ app_hostname: host, no_traffic: 'true' }, archive);
    expect(quiet.body.joins_traffic).toBe('none');
    expect((await state(host, quiet.body.id)).traffic).toEqual([{ image_id: v2, percent: 100 }]);
    const next = await alice.upload({ app_hostname: host }, archive);
    expect(next.body.joins_traffic).toBe('none');
    // a plain deploy over `latest` waits to take it all (pending); a no_traffic deploy meanwhile
    // pins `latest`; the next plain deploy replaces the waiting one rather than keep that pin
    const host2 = 'pending-wins.example.com';
    const [, w2] = await twoServed(host2);
    const waiting = await alice.upload({ app_hostname: host2 }, archive);
    expect(waiting.body.joins_traffic).toBe('all');
    expect((await state(host2, waiting.body.id)).pending).toBe(waiting.body.id);
    expect((await alice.upload({ app_hostname: host2, no_traffic: 'true' }, archive)).body.joins_traffic).toBe('none');
    expect((await state(host2, waiting.body.id)).traffic).toEqual([{ image_id: w2, percent: 100 }]);
    const newest = await alice.upload({ app_hostname: host2 }, archive);
    expect(newest.body.joins_traffic).toBe('all');
    expect((await state(host2, newest.body.id)).pending).toBe(newest.body.id);
  });

  it('a split naming only a revision that could not start is no split to keep; an app\'s first no_traffic revision takes all', async () => {
    const host = 'pinned-to-failed.example.com';
    const [v1] = await twoServed(host);
    expect((await alice.req('PUT', `/api/apps/${host}/traffic`, { json: { traffic: [{ image_id: v1, percent: 100 }] } })).status).toBe(200);
    await t.cp.db.query(`UPDATE images SET start_failed_at = now(), start_failure = 'x', routable_at = NULL WHERE id = $1`, [v1]);
    const up = await alice.upload({ app_hostname: host }, archive);
    expect(up.body.joins_traffic).toBe('all');
    const first = await alice.upload({ name: 'first', app_hostname: 'first-quiet.example.com', no_traffic: 'true' }, archive);
    expect(first.status, first.text).toBe(201);
    // (its split is `latest` and it is the only revision: it takes the traffic, unproven, as asked)
    expect(first.body.joins_traffic).toBe('all');
    expect((await state('first-quiet.example.com', first.body.id)).img.proof_required).toBe(false);
  });

  it('only the newest revision is proven aside: a newer deploy supersedes an unproven one', async () => {
    const host = 'aside-superseded.example.com';
    const [v1, v2] = await twoServed(host);
    expect((await alice.req('PUT', `/api/apps/${host}/traffic`, { json: { traffic: [{ image_id: v1, percent: 100 }] } })).status).toBe(200);
    const a = await alice.upload({ app_hostname: host }, archive);
    const b = await alice.upload({ app_hostname: host }, archive);
    expect([a.body.joins_traffic, b.body.joins_traffic]).toEqual(['none', 'none']);
    await t.cp.db.query(`UPDATE images SET status = 'ready' WHERE id = ANY($1::bigint[])`, [[a.body.id, b.body.id]]);
    const revs = (await alice.get(`/api/apps/${host}`)).body.revisions;
    const of = (id: number) => revs.find((r: { image_id: number }) => r.image_id === id);
    expect(of(a.body.id)).toMatchObject({ serving: false, proving: false, served: false });
    expect(of(b.body.id)).toMatchObject({ serving: true, proving: true, served: false });
    // unproven, neither is `latest`: `latest=100` goes to the newest revision that served
    const latest = await alice.req('PUT', `/api/apps/${host}/traffic`, { json: { traffic: [{ latest: true, percent: 100 }] } });
    expect(latest.status, latest.text).toBe(200);
    expect(latest.body.latest_image_id).toBe(v2);
  });

  it('no_traffic: none, whatever the split; the `latest` share is pinned where it is', async () => {
    const host = 'quiet.example.com';
    const [, v2] = await twoServed(host);
    const up = await alice.upload({ app_hostname: host, no_traffic: 'true' }, archive);
    expect(up.status, up.text).toBe(201);
    expect(up.body.joins_traffic).toBe('none');
    const s = await state(host, up.body.id);
    expect(s.traffic).toEqual([{ image_id: v2, percent: 100 }]);
    expect(s.pending).toBeNull();
    expect(s.img.proof_required).toBe(false);
  });
});
