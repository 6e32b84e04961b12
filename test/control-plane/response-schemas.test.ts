import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import type { FastifyInstance } from 'fastify';
import { Api, type ApiResponse } from '../helpers/api.js';
import { insertReadyImage, startTestControlPlane, type TestControlPlane } from '../helpers/control-plane.js';
import { publicContainer, publicImage, type ContainerRow, type ImageRow } from '../../control-plane/images/repo.js';
import { containerSchema, imageSchema } from '../../control-plane/images/schemas.js';
import { userSchema } from '../../control-plane/auth/schemas.js';
import { appSchema } from '../../control-plane/apps/schemas.js';

/**
 * Response schemas (control-plane/http/responses.ts): the routes of auth, images, containers,
 * events, billing, info and health declare what they answer, the OpenAPI document shows it, and
 * Fastify serializes with it — so a column a handler passes on by mistake (the users row's
 * password hash) stays out of the answer, while nothing a handler means to send is dropped.
 *
 * Two hooks into the control plane, both through vi.mock:
 * - every JSON payload a handler hands to Fastify is recorded (a preSerialization hook installed
 *   with the OpenAPI plugin, before any route), so each answer can be compared with what the
 *   handler meant to send: equal, except where a handler leaks on purpose;
 * - `publicUser` can be switched to leak the whole users row (`h.leak`), as a careless handler would.
 */
const h = vi.hoisted(() => ({
  leak: false,
  /** request id → the payload the handler sent, as plain JSON would have carried it */
  sent: new Map<string, unknown>(),
}));

vi.mock('../../control-plane/auth/users.js', async (importOriginal) => {
  const mod = await importOriginal<typeof import('../../control-plane/auth/users.js')>();
  return {
    ...mod,
    publicUser: (u: Parameters<typeof mod.publicUser>[0]) =>
      (h.leak ? { ...u, created_at: new Date(u.created_at).toISOString() } : mod.publicUser(u)),
  };
});

vi.mock('../../control-plane/http/openapi.js', async (importOriginal) => {
  const mod = await importOriginal<typeof import('../../control-plane/http/openapi.js')>();
  return {
    ...mod,
    registerOpenApi: async (app: FastifyInstance) => {
      app.addHook('preSerialization', async (req, _reply, payload) => {
        h.sent.set(String(req.id), JSON.parse(JSON.stringify(payload)));
        return payload;
      });
      await mod.registerOpenApi(app);
    },
  };
});

/** Every route of auth/plugin.ts, images/plugin.ts, containers/routes.ts, events/routes.ts, billing/plugin.ts, http/info.ts, http/health.ts, apps/plugin.ts, apps/access.ts. */
const ROUTES = [
  'POST /api/auth/signup', 'POST /api/auth/login', 'POST /api/auth/logout', 'GET /api/auth/me',
  'POST /api/auth/tokens', 'GET /api/auth/tokens', 'DELETE /api/auth/tokens/:id',
  'POST /api/images', 'GET /api/images', 'GET /api/images/with-containers', 'GET /api/images/:id', 'GET /api/images/:id/containers',
  'GET /api/images/:id/build-logs', 'PATCH /api/images/:id', 'GET /api/images/:id/autoscaling', 'DELETE /api/images/:id',
  'POST /api/containers/:imageId', 'GET /api/containers', 'GET /api/containers/:id', 'POST /api/containers/:id/stop',
  'POST /api/containers/:id/start', 'DELETE /api/containers/:id',
  'GET /api/events',
  'GET /api/billing', 'GET /api/billing/images/:id', 'GET /api/billing/invoices/:month',
  'GET /api/info', 'GET /healthz', 'GET /readyz', 'GET /metrics',
  'GET /api/apps', 'GET /api/apps/:host', 'PUT /api/apps/:host/traffic', 'POST /api/apps/:host/revisions', 'DELETE /api/apps/:host',
  'PATCH /api/apps/:host', 'GET /api/apps/:host/invokers', 'POST /api/apps/:host/invokers', 'DELETE /api/apps/:host/invokers/:id',
];
/** routes under the prefixes above that live elsewhere (logs/routes.ts) */
const ELSEWHERE = new Set(['GET /api/containers/:id/logs', 'GET /api/apps/:host/logs']);
const OURS = /^\/(api\/(auth|images|containers|events|billing|info|apps)(\/|$)|healthz$|readyz$|metrics$)/;
/** routes that cannot answer 4xx (no login, nothing to validate) */
const NO_ERRORS = new Set(['GET /api/info', 'GET /healthz', 'GET /readyz']);

interface Op { responses?: Record<string, { description?: string; content?: Record<string, { schema?: Record<string, unknown> }> }> }

describe('response schemas', () => {
  let t: TestControlPlane;
  let doc: { paths: Record<string, Record<string, Op>> };
  let api: Api;

  beforeAll(async () => {
    // the usage sampler would close the running usage record this test inserts (its container is not running)
    process.env.BERTH_USAGE_SAMPLE_MS = '3600000';
    t = await startTestControlPlane();
    doc = await (await fetch(`${t.cp.url}/docs/json`)).json() as typeof doc;
    api = await new Api(t.cp.url).signup('schemas@example.com', 'correct-horse-1', 'schemas');
  });
  afterAll(async () => {
    delete process.env.BERTH_USAGE_SAMPLE_MS;
    await t?.close();
  });

  /** The payload the handler sent for this answer (by x-request-id). */
  const sentFor = (r: ApiResponse) => h.sent.get(r.headers.get('x-request-id') ?? '');
  /** A JSON answer is exactly what its handler sent: the schema dropped nothing and changed nothing. */
  const same = (r: ApiResponse, status: number) => {
    expect(r.status, r.text).toBe(status);
    expect(r.body, `${r.text} vs what the handler sent`).toEqual(sentFor(r));
    return r.body;
  };

  it('the OpenAPI document gives every route of these files a 2xx answer schema, and the error shape for 4xx', () => {
    const registered = t.cp.app.apiRoutes.map((r) => `${r.method} ${r.url}`);
    const ours = registered.filter((r) => OURS.test(r.split(' ')[1]) && !ELSEWHERE.has(r));
    expect(ours.sort(), 'routes of these files (update ROUTES when one is added)').toEqual([...ROUTES].sort());
    const problems: string[] = [];
    for (const route of ROUTES) {
      const [method, url] = route.split(' ');
      const op = doc.paths[url.replace(/:([A-Za-z0-9_]+)/g, '{$1}')]?.[method.toLowerCase()];
      const responses = op?.responses ?? {};
      const ok = Object.entries(responses).filter(([code]) => /^2\d\d$/.test(code));
      if (!ok.length) { problems.push(`${route}: no 2xx response`); continue; }
      for (const [code, res] of ok) {
        if (code === '204') { if (res.content) problems.push(`${route}: 204 with a body`); continue; }
        const media = Object.entries(res.content ?? {});
        if (!media.length || media.some(([, m]) => !m.schema?.type)) problems.push(`${route}: ${code} without a schema`);
        const json = res.content?.['application/json']?.schema;
        if (json?.type === 'object' && !json.properties) problems.push(`${route}: ${code} object without properties`);
      }
      if (!NO_ERRORS.has(route)) {
        const err = responses['4XX']?.content?.['application/json']?.schema as { properties?: { error?: { properties?: Record<string, unknown> } } } | undefined;
        if (!err?.properties?.error?.properties?.requestId) problems.push(`${route}: no 4XX error schema`);
      }
    }
    expect(problems).toEqual([]);
    // a schema that is not the default "any" answer, for a sample
    const me = doc.paths['/api/auth/me'].get.responses!['200'].content!['application/json'].schema as { properties: { user: { properties: Record<string, unknown> } } };
    expect(Object.keys(me.properties.user.properties).sort()).toEqual(['created_at', 'email', 'id', 'username']);
    expect(Object.keys(doc.paths['/api/billing/invoices/{month}'].get.responses!['200'].content!)).toEqual(['application/json', 'text/csv']);
  });

  it('declares every property publicImage and publicContainer send', () => {
    const img = publicImage({ id: 1, user_id: 1, revision: 1, build_started_at: new Date(), created_at: new Date(), updated_at: new Date() } as ImageRow);
    expect(Object.keys(img).sort()).toEqual(Object.keys(imageSchema.properties).sort());
    const c = publicContainer({ id: 1, created_at: new Date(), updated_at: new Date() } as ContainerRow);
    expect(Object.keys(c).sort()).toEqual(Object.keys(containerSchema.properties).sort());
  });

  it('keeps the password hash out of signup, login and me even when the handler passes on the whole users row', async () => {
    h.leak = true;
    try {
      const anon = new Api(t.cp.url);
      const signup = await anon.req('POST', '/api/auth/signup', { json: { email: 'leak@example.com', password: 'correct-horse-1' } });
      const login = await anon.post('/api/auth/login', { email: 'leak@example.com', password: 'correct-horse-1' });
      const me = await anon.withToken(login.body.token).get('/api/auth/me');
      for (const [r, status] of [[signup, 201], [login, 200], [me, 200]] as const) {
        expect(r.status, r.text).toBe(status);
        // the handler did send it…
        const sent = sentFor(r) as { user: Record<string, unknown> };
        expect(sent.user.password_hash).toMatch(/^\$argon2/);
        // …and the answer does not carry it
        expect(Object.keys(r.body.user).sort()).toEqual(Object.keys(userSchema.properties).sort());
        expect(r.text).not.toContain('password_hash');
        expect(r.text).not.toContain('$argon2');
        expect(r.body.user.email).toBe('leak@example.com');
      }
    } finally {
      h.leak = false;
    }
  });

  it('auth answers: exactly what the handlers send; tokens without their hash', async () => {
    same(await api.get('/api/auth/me'), 200);
    const created = same(await api.req('POST', '/api/auth/tokens', { json: { name: 'ci', expires_in_days: 3 } }), 201);
    expect(created.token).toMatch(/^berth_/);
    const list = same(await api.get('/api/auth/tokens'), 200);
    expect(list.tokens).toHaveLength(1);
    expect(Object.keys(list.tokens[0]).sort()).toEqual(['created_at', 'expires_at', 'id', 'last_used_at', 'name', 'prefix']);
    // the token in use: last_used_at set
    same(await new Api(t.cp.url, created.token).get('/api/auth/me'), 200);
    const used = same(await api.get('/api/auth/tokens'), 200);
    expect(used.tokens[0].last_used_at).toMatch(/^\d{4}-/);
    expect(JSON.stringify(used)).not.toContain('token_hash');
    const del = await api.del(`/api/auth/tokens/${created.id}`);
    expect(del.status).toBe(204);
    expect(del.text).toBe('');
    const again = same(await api.del(`/api/auth/tokens/${created.id}`), 404);
    expect(again.error).toEqual({ code: 'not_found', message: 'token not found', requestId: expect.any(String) });
    const bad = same(await api.req('POST', '/api/auth/tokens', { json: { name: 'x', extra: 1 } }), 400);
    expect(bad.error.code).toBe('invalid_request');
    const login = same(await new Api(t.cp.url).post('/api/auth/login', { email: 'schemas@example.com', password: 'correct-horse-1' }), 200);
    const logout = await api.withToken(login.token).req('POST', '/api/auth/logout');
    expect(logout.status).toBe(204);
  });

  it('images, containers, events and billing answers: exactly what the handlers send', async () => {
    const me = (await api.get('/api/auth/me')).body.user.id as number;
    const imageId = await insertReadyImage(t.cp, me, 'schemas.example.com');
    await t.cp.db.query(`UPDATE images SET cpu_limit = 0.5, memory_limit = '256m', memory_limit_bytes = 268435456, build_logs = 'step 1\n' WHERE id = $1`, [imageId]);
    // a stopped container row (nothing for the reconcile loop to do with it)
    const { rows: [c] } = await t.cp.db.query<{ id: number }>(
      `INSERT INTO containers (user_id, image_id, name, status, desired, health, status_reason, exit_code, restart_count, stopped_at)
       VALUES ($1, $2, 'berth-schemas-c1', 'stopped', 'stopped', 'unknown', 'stopped by its user', 0, 2, now()) RETURNING id`, [me, imageId]);

    const img = same(await api.get(`/api/images/${imageId}`), 200);
    expect(img).toMatchObject({ id: imageId, cpu_limit: 0.5, memory_limit_bytes: 268435456, status: 'ready', health_path: null });
    expect(same(await api.get('/api/images'), 200).images).toHaveLength(1);
    const withContainers = same(await api.get('/api/images/with-containers'), 200);
    expect(withContainers.images[0].containers[0]).toMatchObject({ id: Number(c.id), status: 'stopped', exit_code: 0, restart_count: 2, host_port: null });
    same(await api.get(`/api/images/${imageId}/containers`), 200);
    expect(same(await api.get(`/api/images/${imageId}/build-logs`), 200)).toEqual({ image_id: imageId, status: 'ready', logs: 'step 1\n', truncated: false });
    const auto = same(await api.get(`/api/images/${imageId}/autoscaling`), 200);
    expect(auto).toMatchObject({ autoscaled: false, last_decision: null, target_per_instance: 56 });
    const patched = same(await api.req('PATCH', `/api/images/${imageId}`, { json: { container_concurrency: 3, cpu_limit: null } }), 200);
    expect(patched).toMatchObject({ container_concurrency: 3, cpu_limit: null });
    same(await api.req('PATCH', `/api/images/${imageId}`, { json: { nope: 1 } }), 400);
    same(await api.get('/api/images/999999'), 404);

    same(await api.get('/api/containers'), 200);
    expect(same(await api.get(`/api/containers?image_id=${imageId}`), 200).count).toBe(1);
    same(await api.get(`/api/containers/${c.id}`), 200);
    same(await api.get('/api/containers/999999'), 404);

    const ev = same(await api.get('/api/events?after=0&limit=1000'), 200);
    const updated = ev.events.find((e: { type: string }) => e.type === 'image.updated');
    expect(updated?.payload.changed.container_concurrency).toEqual({ from: 80, to: 3 });
    expect(ev.next_after).toBe(ev.events[ev.events.length - 1].id);

    // usage: one finished run, one still running, and metered requests
    await t.cp.db.query(
      `INSERT INTO usage_records (user_id, image_id, container_id, app_hostname, vcpu, memory_bytes, start_time, end_time, end_reason, cpu_seconds_used, memory_byte_seconds, memory_peak_bytes, samples)
       VALUES ($1, $2, $3, 'schemas.example.com', 0.5, 268435456, now() - interval '10 minutes', now() - interval '5 minutes', 'stopped', 1.25, 1e10, 300000000, 12),
              ($1, $2, $3, 'schemas.example.com', 1, 536870912, now() - interval '2 minutes', NULL, NULL, 0, 0, 0, 0)`, [me, imageId, c.id]);
    await t.cp.db.query(
      `INSERT INTO request_minutes (minute, user_id, image_id, container_id, app_hostname, requests, buckets)
       VALUES (date_trunc('minute', now()) - interval '3 minutes', $1, $2, $3, 'schemas.example.com', 1234, '{}')`, [me, imageId, c.id]);
    const bill = same(await api.get('/api/billing'), 200);
    expect(bill.images[0]).toMatchObject({ image_id: imageId, total_runs: 2, active_containers: 1, requests: 1234 });
    expect(bill.total_cost).toBeGreaterThan(0);
    const one = same(await api.get(`/api/billing/images/${imageId}?limit=1`), 200);
    expect(one.records).toHaveLength(1);
    expect(one.records[0]).toMatchObject({ status: 'Active', end_time: null, end_reason: null, avg_memory_bytes: null, vcpu: 1 });
    expect(one.next_before).toBe(one.records[0].id);
    const older = same(await api.get(`/api/billing/images/${imageId}?before=${one.next_before}`), 200);
    expect(older.records[0]).toMatchObject({ status: 'Completed', vcpu: 0.5, samples: 12, peak_memory_bytes: 300000000, cpu_seconds_used: 1.25 });
    expect(older.next_before).toBeNull();
    same(await api.get('/api/billing/images/999999'), 404);
    const month = new Date().toISOString().slice(0, 7);
    const invoice = same(await api.get(`/api/billing/invoices/${month}`), 200);
    expect(invoice.lines.map((l: { resource: string }) => l.resource)).toEqual(['cpu', 'memory', 'requests']);
    expect(invoice.status).toBe('open');
    const csv = await api.get(`/api/billing/invoices/${month}?format=csv`);
    expect(csv.status).toBe(200);
    expect(csv.headers.get('content-type')).toMatch(/^text\/csv/);
    expect(csv.text.split('\r\n')[0]).toBe('month,app_hostname,resource,quantity,unit,rate_micros,rate_per,amount_micros,amount,currency');
    same(await api.get('/api/billing/invoices/2999-01'), 400);

    // the image cannot go while it has a container; then it can (204, no body)
    same(await api.del(`/api/images/${imageId}`), 409);
    await t.cp.db.query('DELETE FROM usage_records WHERE image_id = $1', [imageId]);
    await t.cp.db.query('DELETE FROM containers WHERE id = $1', [c.id]);
    const gone = await api.del(`/api/images/${imageId}`);
    expect(gone.status, gone.text).toBe(204);
    expect(gone.text).toBe('');
  });

  it('apps answers: exactly what the handlers send, every property of an app declared', async () => {
    const me = (await api.get('/api/auth/me')).body.user.id as number;
    const host = 'apps-schemas.example.com';
    const v1 = await insertReadyImage(t.cp, me, host);
    const v2 = await insertReadyImage(t.cp, me, host);
    // v1 served once (a share by hand goes only to a revision that did)
    await t.cp.db.query('UPDATE images SET routable_at = now() WHERE id = $1', [v1]);
    const list = same(await api.get('/api/apps'), 200);
    expect(list.apps.map((a: { app_hostname: string }) => a.app_hostname)).toContain(host);
    // a split with a pinned revision, a tag and latest: every kind of traffic entry
    const split = same(await api.req('PUT', `/api/apps/${host}/traffic`, { json: { traffic: [{ image_id: v1, percent: 30, tag: 'old' }, { latest: true, percent: 70 }] } }), 200);
    expect(split.traffic).toEqual([{ image_id: v1, percent: 30, tag: 'old', revision: 1 }, { latest: true, percent: 70, revision: 2 }]);
    expect(split.revisions.map((r: { traffic_percent: number }) => r.traffic_percent)).toEqual([30, 70]);
    expect(split.revisions[0].tag_urls).toEqual([`http://old---${host}/`]);
    expect(split.latest_image_id).toBe(v2);
    const app = same(await api.get(`/api/apps/${host}`), 200);
    // the schema declares exactly what appView sends, for the app, a revision and a traffic entry
    const props = (o: { properties: Record<string, unknown> }) => Object.keys(o.properties).sort();
    expect(Object.keys(app).sort()).toEqual(props(appSchema));
    expect(Object.keys(app.revisions[0]).sort()).toEqual(props(appSchema.properties.revisions.items));
    const entry = appSchema.properties.traffic.items;
    expect([...new Set(app.traffic.flatMap((e: object) => Object.keys(e)))].sort()).toEqual(props(entry));
    const priv = same(await api.req('PATCH', `/api/apps/${host}`, { json: { private: true } }), 200);
    expect(priv.private).toBe(true);
    const inv = same(await api.post(`/api/apps/${host}/invokers`, { name: 'ci' }), 201);
    expect(inv.token).toMatch(/^bi_/);
    const invokers = same(await api.get(`/api/apps/${host}/invokers`), 200);
    expect(invokers.invokers).toEqual([{ id: inv.id, name: 'ci', created_at: inv.created_at }]);
    expect(JSON.stringify(invokers)).not.toMatch(/token/);
    expect((await api.del(`/api/apps/${host}/invokers/${inv.id}`)).status).toBe(204);
    same(await api.req('PUT', `/api/apps/${host}/traffic`, { json: { traffic: [{ image_id: 999999, percent: 100 }] } }), 400);
    same(await api.get('/api/apps/nope.example.com'), 404);
    const gone = await api.del(`/api/apps/${host}`);
    expect(gone.status, gone.text).toBe(204);
    expect(gone.text).toBe('');
    same(await api.get(`/api/apps/${host}`), 404);
  });

  it('info and health answers: exactly what the handlers send; metrics stay Prometheus text', async () => {
    const info = same(await api.req('GET', '/api/info', { token: null }), 200);
    expect(info).toEqual({ name: 'berth', proxy_url: null, app_domains: [], max_upload_bytes: 200 * 1024 * 1024, docs_url: '/docs', openapi_url: '/docs/json' });
    expect(same(await api.req('GET', '/healthz', { token: null }), 200)).toEqual({ status: 'ok' });
    expect(same(await api.req('GET', '/readyz', { token: null }), 200)).toEqual({ status: 'ready', checks: { database: 'ok' } });
    const denied = same(await api.req('GET', '/metrics', { token: null }), 401);
    expect(denied.error.code).toBe('unauthorized');
    const metrics = await api.req('GET', '/metrics', { token: t.cp.metricsToken });
    expect(metrics.status).toBe(200);
    expect(metrics.headers.get('content-type')).toMatch(/^text\/plain/);
    expect(metrics.text).toMatch(/^# HELP /m);
  });
});
