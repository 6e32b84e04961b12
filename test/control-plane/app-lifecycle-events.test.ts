import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Api } from '../helpers/api.js';
import { insertReadyImage, startTestControlPlane, type TestControlPlane } from '../helpers/control-plane.js';
import { makeTar } from '../helpers/archives.js';
import { servingRevisions } from '../../control-plane/discovery/route-table.js';

/**
 * An app leaves with its last revision however it is deleted — DELETE /api/apps/:host or
 * DELETE /api/images/:id of the last image — and event consumers hear `app.deleted` either way.
 */
let t: TestControlPlane;
let api: Api;
let userId = 0;

beforeAll(async () => {
  t = await startTestControlPlane({ seedDefaultUser: false, dockerHost: 'unix:///nonexistent/docker.sock' });
  api = await new Api(t.cp.url).signup('app-events@example.com');
  userId = (await api.get('/api/auth/me')).body.user.id as number;
}, 60_000);

afterAll(async () => {
  await t?.close();
});

const events = async (host: string) =>
  (await t.cp.db.query<{ type: string }>('SELECT type FROM events WHERE app_hostname = $1 ORDER BY id', [host])).rows.map((r) => r.type);

describe('app.deleted', () => {
  it('deleting the last revision deletes the app and records app.deleted; an earlier one does not', async () => {
    const host = 'last-revision.example.com';
    const first = await insertReadyImage(t.cp, userId, host);
    const second = await insertReadyImage(t.cp, userId, host);
    expect((await api.req('DELETE', `/api/images/${first}`)).status).toBe(204);
    expect(await events(host)).not.toContain('app.deleted');
    expect((await api.get(`/api/apps/${host}`)).status).toBe(200);
    expect((await api.req('DELETE', `/api/images/${second}`)).status).toBe(204);
    expect((await api.get(`/api/apps/${host}`)).status).toBe(404);
    expect((await events(host)).filter((e) => e === 'app.deleted')).toHaveLength(1);
  });
});

describe('DELETE /api/apps/:host', () => {
  it('records app.deleting, then image.deleted for each revision and app.deleted', async () => {
    const host = 'delete-me.example.com';
    await insertReadyImage(t.cp, userId, host);
    await insertReadyImage(t.cp, userId, host);
    const r = await api.req('DELETE', `/api/apps/${host}`);
    expect(r.status, r.text).toBe(204);
    expect(await events(host)).toEqual(['app.deleting', 'image.deleted', 'image.deleted', 'app.deleted']);
    expect((await api.get(`/api/apps/${host}`)).status).toBe(404);
  });

  it('an app being deleted serves nothing (route table, reconcile, autoscaler, wakes) and refuses uploads until it is gone', async () => {
    const host = 'half-deleted.example.com';
    const id = await insertReadyImage(t.cp, userId, host);
    expect([...await servingRevisions(t.cp.db, host)]).toEqual([id]);
    // as a DELETE that could not remove every instance leaves it
    await t.cp.db.query('UPDATE apps SET deleting_at = now() WHERE app_hostname = $1', [host]);
    expect([...await servingRevisions(t.cp.db, host)]).toEqual([]);
    expect((await servingRevisions(t.cp.db)).has(id)).toBe(false);
    const hub = t.cp.app.platform.hub;
    await hub.rebuild();
    expect(JSON.stringify(hub.table)).not.toContain(host);
    // and says so
    const seen = await api.get(`/api/apps/${host}`);
    expect(seen.body.deleting_at).toMatch(/^\d{4}-\d\d-\d\dT/);
    expect(seen.body.revisions).toMatchObject([{ image_id: id, serving: false, traffic_percent: 0 }]);
    expect((await api.get('/api/apps')).body.apps.find((a: { app_hostname: string }) => a.app_hostname === host).deleting_at).toBe(seen.body.deleting_at);
    const archive = await makeTar([{ name: 'Dockerfile', content: 'FROM scratch\n' }]);
    const up = await api.upload({ name: 'late', app_hostname: host }, archive);
    expect(up.status, up.text).toBe(409);
    expect(up.body.error.code).toBe('app_deleting');
    // the same DELETE finishes it, and the hostname is free again
    expect((await api.req('DELETE', `/api/apps/${host}`)).status).toBe(204);
    // it was already deleting (set above, as a first DELETE would have): not recorded twice
    expect(await events(host)).toEqual(['image.deleted', 'app.deleted']);
    expect((await api.get(`/api/apps/${host}`)).status).toBe(404);
  });
});

describe('a deleted app\'s hostname', () => {
  it('stays its owner\'s for BERTH_HOSTNAME_HOLD_DAYS: another user gets 409 hostname_held, the owner deploys it again', async () => {
    const other = await new Api(t.cp.url).signup('app-events-other@example.com');
    const archive = await makeTar([{ name: 'Dockerfile', content: 'FROM scratch\n' }]);
    for (const [host, how] of [['held-by-delete.example.com', 'app'], ['held-by-last-image.example.com', 'image']] as const) {
      const id = await insertReadyImage(t.cp, userId, host);
      const del = how === 'app' ? await api.req('DELETE', `/api/apps/${host}`) : await api.req('DELETE', `/api/images/${id}`);
      expect(del.status, del.text).toBe(204);
      expect((await api.get(`/api/apps/${host}`)).status).toBe(404);
      const taken = await other.upload({ name: 'squat', app_hostname: host }, archive);
      expect(taken.status, `${how}: ${taken.text}`).toBe(409);
      expect(taken.body.error.code).toBe('hostname_held');
      expect(taken.body.error.message).toMatch(/stays theirs until \d{4}-/);
      // the owner: a new app under the old name, and the hold is over
      const again = await api.upload({ name: 'back', app_hostname: host }, archive);
      expect([201, 503], again.text).toContain(again.status);
      if (again.status === 201) expect((await t.cp.db.query('SELECT 1 FROM hostname_holds WHERE app_hostname = $1', [host])).rowCount).toBe(0);
    }
    // once the hold is over, anyone may claim it
    const host = 'held-expired.example.com';
    await t.cp.db.query(`INSERT INTO hostname_holds (app_hostname, user_id, until) VALUES ($1, $2, now() - interval '1 second')`, [host, userId]);
    const free = await other.upload({ name: 'later', app_hostname: host }, archive);
    expect(free.body?.error?.code).not.toBe('hostname_held');
  });

  it('a user holds at most their image quota of names: deleting more apps ends the oldest holds', async () => {
    const quotas = t.cp.config.quotas;
    const was = quotas.images;
    quotas.images = 3;
    try {
      const names = ['cap-1', 'cap-2', 'cap-3', 'cap-4', 'cap-5'].map((n) => `${n}.example.com`);
      for (const host of names) {
        await insertReadyImage(t.cp, userId, host);
        expect((await api.req('DELETE', `/api/apps/${host}`)).status).toBe(204);
      }
      const { rows } = await t.cp.db.query<{ app_hostname: string }>(
        'SELECT app_hostname FROM hostname_holds WHERE user_id = $1 AND app_hostname = ANY($2::text[]) ORDER BY app_hostname', [userId, names]);
      expect(rows.map((r) => r.app_hostname)).toEqual(names.slice(2));
      // the freed names are anyone's; the held ones still are not
      const other = await new Api(t.cp.url).signup('app-events-cap@example.com');
      const archive = await makeTar([{ name: 'Dockerfile', content: 'FROM scratch\n' }]);
      expect((await other.upload({ name: 'x', app_hostname: names[0] }, archive)).body?.error?.code).not.toBe('hostname_held');
      expect((await other.upload({ name: 'x', app_hostname: names[4] }, archive)).body?.error?.code).toBe('hostname_held');
    } finally {
      quotas.images = was;
    }
  });

  it('holds past their end are deleted by the hourly retention pass', async () => {
    const { startEventRetention } = await import('../../control-plane/events/retention.js');
    await t.cp.db.query(`INSERT INTO hostname_holds (app_hostname, user_id, until) VALUES ('old-hold.example.com', $1, now() - interval '1 day'), ('live-hold.example.com', $1, now() + interval '1 day')`, [userId]);
    const stop = startEventRetention(t.cp.db, 0, false, t.cp.log, 20);
    try {
      const left = async () => (await t.cp.db.query<{ app_hostname: string }>(`SELECT app_hostname FROM hostname_holds WHERE app_hostname IN ('old-hold.example.com', 'live-hold.example.com')`)).rows.map((r) => r.app_hostname);
      for (let i = 0; i < 100 && (await left()).length > 1; i++) await new Promise((r) => setTimeout(r, 20));
      expect(await left()).toEqual(['live-hold.example.com']);
    } finally {
      await stop();
    }
  });
});
