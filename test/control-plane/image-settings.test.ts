/**
 * Per-app scaling settings: defaults at upload, PATCH /api/images/:id validated like the upload,
 * applied at once (the route table carries container_concurrency to the proxies), recorded as
 * image.updated; another user's image is 404.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Api } from '../helpers/api.js';
import { appFiles, makeTar } from '../helpers/archives.js';
import { insertReadyImage, startTestControlPlane, type TestControlPlane } from '../helpers/control-plane.js';
import type { RouteSpec } from '../../shared/routes/schema.js';

let t: TestControlPlane;
let alice: Api;
let bob: Api;
let imageId = 0;
beforeAll(async () => {
  t = await startTestControlPlane({ seedDefaultUser: false, dockerHost: 'unix:///nonexistent/docker.sock', instanceMax: { cpus: 2, memoryBytes: 1024 ** 3 } });
  const api = new Api(t.cp.url);
  alice = await api.signup('alice@example.com');
  bob = await api.signup('bob@example.com');
  const me = await alice.get('/api/auth/me');
  imageId = await insertReadyImage(t.cp, me.body.user?.id ?? me.body.id, 'settings.example.com', 5);
});
afterAll(async () => { await t?.close(); });

const patch = (api: Api, body: unknown, id = imageId) => api.req('PATCH', `/api/images/${id}`, { json: body });

describe('image scaling settings', () => {
  it('have Cloud Run defaults', async () => {
    const r = await alice.get(`/api/images/${imageId}`);
    expect(r.status).toBe(200);
    expect(r.body).toMatchObject({ container_concurrency: 80, target_utilization: 70, scale_down_delay_s: 0, min_instances: 0, max_instances: 5, request_timeout_s: 300 });
  });

  it('PATCH applies, records image.updated, and the route table carries the concurrency', async () => {
    const r = await patch(alice, { container_concurrency: 10, target_utilization: 50, scale_down_delay_s: 30, max_instances: 8, health_path: '/ready', memory_limit: '256m' });
    expect(r.status, r.text).toBe(200);
    expect(r.body).toMatchObject({ container_concurrency: 10, target_utilization: 50, scale_down_delay_s: 30, max_instances: 8, health_path: '/ready', memory_limit_bytes: 256 * 1024 * 1024 });
    const events = await alice.get('/api/events?after=0');
    const upd = events.body.events.filter((e: { type: string }) => e.type === 'image.updated');
    expect(upd.length).toBe(1);
    expect(upd[0].payload.changed.container_concurrency).toEqual({ from: 80, to: 10 });
    let route: { concurrency?: { perEndpoint?: number } } | undefined;
    for (let i = 0; i < 40 && route?.concurrency?.perEndpoint !== 10; i++) {
      await t.cp.app.platform.hub.schedule();
      await new Promise((res) => setTimeout(res, 50));
      route = t.cp.app.platform.hub.table?.routes.find((x) => x.id === `img-${imageId}`);
    }
    expect(route?.concurrency).toEqual({ perEndpoint: 10 });
    // 0 = no limit: no cap in the table
    expect((await patch(alice, { container_concurrency: 0 })).status).toBe(200);
    for (let i = 0; i < 40 && route?.concurrency !== undefined; i++) {
      await new Promise((res) => setTimeout(res, 50));
      route = t.cp.app.platform.hub.table?.routes.find((x) => x.id === `img-${imageId}`);
    }
    expect(route?.concurrency).toBeUndefined();
    // clearing a limit
    expect((await patch(alice, { memory_limit: null })).body.memory_limit_bytes).toBeNull();
  });

  it.each([
    [{ min_instances: 9 }, 'min_instances'],
    [{ container_concurrency: 1001 }, 'container_concurrency'],
    [{ container_concurrency: -1 }, 'container_concurrency'],
    [{ target_utilization: 0 }, 'target_utilization'],
    [{ scale_down_delay_s: 3601 }, 'scale_down_delay_s'],
    [{ request_timeout_s: 0 }, 'request_timeout_s'],
    [{ request_timeout_s: 3601 }, 'request_timeout_s'],
    [{ request_timeout_s: null }, 'request_timeout_s'],
    [{ session_affinity: null }, 'session_affinity'],
    [{ session_affinity: 'sometimes' }, 'session_affinity'],
    [{ max_instances: 1e400 }, 'max_instances'],
    [{ container_port: 9090 }, 'container_port'],
    [{ health_path: 'no-slash' }, 'health_path'],
    [{ cpu_limit: '9999' }, 'cpu_limit'],
    [{}, ''],
    [{ min_instances: null }, 'min_instances'],
  ])('PATCH %j is a 400 naming the field', async (body, field) => {
    const raw = 'max_instances' in body ? JSON.stringify(body).replace('null', '1e400') : JSON.stringify(body);
    const r = await alice.req('PATCH', `/api/images/${imageId}`, { body: raw, headers: { 'content-type': 'application/json' } });
    expect(r.status, r.text).toBe(400);
    if (field) expect(r.body.error.message).toContain(field);
  });

  it("an instance larger than the operator's ceiling is a 400 instance_too_large: upload, PATCH and new revision", async () => {
    const archive = await makeTar(appFiles());
    for (const [fields, what] of [[{ cpu_limit: '4' }, /cpu_limit 4 is more than an instance may have here \(2 CPUs/], [{ memory_limit: '2g' }, /memory_limit 2048 MiB is more than an instance may have here \(1024 MiB/]] as const) {
      const r = await alice.upload({ name: 'big', app_hostname: 'big.example.com', ...fields }, archive);
      expect(r.status, r.text).toBe(400);
      expect(r.body.error.code).toBe('instance_too_large');
      expect(r.body.error.message).toMatch(what);
    }
    const p = await patch(alice, { cpu_limit: '3' });
    expect(p.status, p.text).toBe(400);
    expect(p.body.error.code).toBe('instance_too_large');
    const rev = await alice.post('/api/apps/settings.example.com/revisions', { memory_limit: '4g' });
    expect(rev.status, rev.text).toBe(400);
    expect(rev.body.error.code).toBe('instance_too_large');
    // at the ceiling is fine
    const ok = await patch(alice, { cpu_limit: '2', memory_limit: '1g' });
    expect(ok.status, ok.text).toBe(200);
    expect(ok.body).toMatchObject({ cpu_limit: 2, memory_limit_bytes: 1024 ** 3 });
    expect((await patch(alice, { cpu_limit: null, memory_limit: null })).status).toBe(200);
    // a value set before the ceiling was lowered keeps working until it is changed
    await t.cp.db.query('UPDATE images SET cpu_limit = 4 WHERE id = $1', [imageId]);
    const other = await patch(alice, { memory_limit: '512m' });
    expect(other.status, other.text).toBe(200);
    expect(other.body.cpu_limit).toBe(4);
    expect((await patch(alice, { cpu_limit: '4' })).body.error?.code).toBe('instance_too_large');
    expect((await patch(alice, { cpu_limit: null, memory_limit: null })).status).toBe(200);
  });

  it("another user's image is 404, and nothing changes", async () => {
    expect((await patch(bob, { container_concurrency: 1 })).status).toBe(404);
    expect((await patch(alice, { container_concurrency: 1 }, 999_999)).status).toBe(404);
    expect((await alice.get(`/api/images/${imageId}`)).body.container_concurrency).toBe(0);
  });

  it('the request timeout becomes the route\'s headers and idle timeouts, and PATCH changes it without a rebuild', async () => {
    const routeTimeouts = async (want: number) => {
      let route: { timeouts?: { headersMs?: number; idleMs?: number } } | undefined;
      for (let i = 0; i < 40 && route?.timeouts?.headersMs !== want; i++) {
        await t.cp.app.platform.hub.schedule();
        await new Promise((res) => setTimeout(res, 50));
        route = t.cp.app.platform.hub.table?.routes.find((x) => x.id === `img-${imageId}`);
      }
      return route?.timeouts;
    };
    expect(await routeTimeouts(300_000)).toEqual({ headersMs: 300_000, idleMs: 300_000 });
    const r = await patch(alice, { request_timeout_s: 5 });
    expect(r.status, r.text).toBe(200);
    expect(r.body.request_timeout_s).toBe(5);
    expect(await routeTimeouts(5000)).toEqual({ headersMs: 5000, idleMs: 5000 });
    expect((await patch(alice, { request_timeout_s: 300 })).status).toBe(200);
  });

  /** The image's route field `key` once it is `want` (or what it is after 2 s of table pushes). */
  async function routeField<K extends 'affinity' | 'pipeline'>(key: K, want: RouteSpec[K]): Promise<RouteSpec[K] | undefined> {
    let route: RouteSpec | undefined;
    for (let i = 0; i < 40 && (route === undefined || route[key] !== want); i++) {
      await t.cp.app.platform.hub.schedule();
      await new Promise((res) => setTimeout(res, 50));
      route = t.cp.app.platform.hub.table?.routes.find((x) => x.id === `img-${imageId}`);
    }
    return route?.[key];
  }

  it('session affinity is off by default; PATCH turns it on in the route table, and off again', async () => {
    expect((await alice.get(`/api/images/${imageId}`)).body.session_affinity).toBe(false);
    const routeAffinity = (want: boolean | undefined) => routeField('affinity', want);
    expect(await routeAffinity(undefined)).toBeUndefined();
    const on = await patch(alice, { session_affinity: true });
    expect(on.status, on.text).toBe(200);
    expect(on.body.session_affinity).toBe(true);
    expect(await routeAffinity(true)).toBe(true);
    // a proxy that does not know affinity gets the table without it (its schema would refuse it)
    const { withoutAffinity } = await import('../../control-plane/discovery/route-table.js');
    const table = t.cp.app.platform.hub.table!;
    expect(withoutAffinity(table).routes.some((r) => 'affinity' in r)).toBe(false);
    expect(withoutAffinity(table)).toBe(withoutAffinity(table));
    expect((await patch(alice, { session_affinity: false })).body.session_affinity).toBe(false);
    expect(await routeAffinity(undefined)).toBeUndefined();
  });

  it('upstream pipelining is off (1) by default; PATCH sets the route\'s `pipeline`, bounded 1–16, and 1 takes it out again', async () => {
    expect((await alice.get(`/api/images/${imageId}`)).body.upstream_pipeline).toBe(1);
    const routePipeline = (want: number | undefined) => routeField('pipeline', want);
    expect(await routePipeline(undefined)).toBeUndefined();
    for (const bad of [0, 17, 2.5, 'many']) {
      const r = await patch(alice, { upstream_pipeline: bad });
      expect(r.status, `${bad}: ${r.text}`).toBe(400);
    }
    const on = await patch(alice, { upstream_pipeline: 8 });
    expect(on.status, on.text).toBe(200);
    expect(on.body.upstream_pipeline).toBe(8);
    expect(await routePipeline(8)).toBe(8);
    // a proxy that does not know pipelining gets the table without it (its schema would refuse it)
    const { withoutPipeline } = await import('../../control-plane/discovery/route-table.js');
    const table = t.cp.app.platform.hub.table!;
    expect(withoutPipeline(table).routes.some((r) => 'pipeline' in r)).toBe(false);
    expect(withoutPipeline(table)).toBe(withoutPipeline(table));
    expect((await patch(alice, { upstream_pipeline: 1 })).body.upstream_pipeline).toBe(1);
    expect(await routePipeline(undefined)).toBeUndefined();
  });
});
