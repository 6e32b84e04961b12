import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Api, type ApiResponse } from '../helpers/api.js';
import { appFiles, makeTar } from '../helpers/archives.js';
import { insertReadyImage, startTestControlPlane, type TestControlPlane } from '../helpers/control-plane.js';

/**
 * Numbers the database cannot hold — 1e400 (Infinity to JS), "Infinity", NaN, ids past 2^53 or
 * int8, counts past int4, fractions — answer 400 with the API's error shape on every route that
 * takes a number (path, query string, JSON body, multipart field), never 500, and store nothing.
 */
const PROXY_TOKEN = 'bpt_numbers-test-token';
let t: TestControlPlane;
let api: Api;
let u: Api;
let userId: number;
let imageId: number;
let archive: Buffer;

beforeAll(async () => {
  // no instance ceiling: the parsers' own bounds (256 CPUs, 1t) are what is tested here
  t = await startTestControlPlane({ seedDefaultUser: false, proxyToken: PROXY_TOKEN, dockerHost: 'unix:///nonexistent/docker.sock', instanceMax: { cpus: null, memoryBytes: null } });
  api = new Api(t.cp.url);
  u = await api.signup('numbers@example.com');
  userId = (await u.get('/api/auth/me')).body.user.id;
  imageId = await insertReadyImage(t.cp, userId, 'numbers.example.com', 3);
  archive = await makeTar(appFiles());
});

afterAll(async () => {
  await t?.close();
});

function expect400(r: ApiResponse, what: string): void {
  expect(r.status, `${what}: ${r.status} ${r.text}`).toBe(400);
  expect(r.body, what).toEqual({ error: { code: expect.stringMatching(/^[a-z][a-z_]*$/), message: expect.any(String), requestId: expect.any(String) } });
  expect(r.body.error.requestId).toBe(r.headers.get('x-request-id'));
}

const json = (a: Api, method: string, path: string, raw: string, token?: string) =>
  a.req(method, path, { body: raw, headers: { 'content-type': 'application/json' }, ...(token ? { token } : {}) });

/** Hostile values for an id (≥ 1) in a path or query string. */
const BAD_IDS = ['1e400', 'Infinity', '-Infinity', 'NaN', '99999999999999999999', '9223372036854775808', '9007199254740993', '1e20', '-1', '0', '-0', '1.5'];
/** Hostile JSON numbers (raw text) for a small positive integer field. */
const BAD_JSON_INTS = ['1e400', '-1e400', '"1e400"', '"Infinity"', '"-Infinity"', '"NaN"', '99999999999999999999', '9223372036854775808', '2147483648', '1e20', '1.5', '-0', '0', '-1'];

describe('ids in paths', () => {
  const routes: [string, (v: string) => string][] = [
    ['GET', (v) => `/api/images/${v}`],
    ['GET', (v) => `/api/images/${v}/containers`],
    ['GET', (v) => `/api/images/${v}/build-logs`],
    ['GET', (v) => `/api/images/${v}/build-logs?follow=1`],
    ['DELETE', (v) => `/api/images/${v}`],
    ['GET', (v) => `/api/containers/${v}`],
    ['POST', (v) => `/api/containers/${v}`],
    ['POST', (v) => `/api/containers/${v}/start`],
    ['POST', (v) => `/api/containers/${v}/stop`],
    ['DELETE', (v) => `/api/containers/${v}`],
    ['DELETE', (v) => `/api/auth/tokens/${v}`],
  ];
  for (const [method, path] of routes) {
    it(`${method} ${path(':id')}`, async () => {
      for (const v of BAD_IDS) expect400(await u.req(method, path(encodeURIComponent(v))), `${method} ${path(v)}`);
      // the largest exact id is a fine id that does not exist
      if (method === 'GET') expect((await u.req(method, path(String(Number.MAX_SAFE_INTEGER)))).status).toBe(404);
    });
  }
});

describe('numbers in query strings', () => {
  it('GET /api/containers?image_id=', async () => {
    for (const v of BAD_IDS) expect400(await u.get(`/api/containers?image_id=${encodeURIComponent(v)}`), `image_id=${v}`);
  });
  it('GET /api/events?after= and ?limit=', async () => {
    for (const v of BAD_IDS.filter((x) => x !== '0' && x !== '-0')) expect400(await u.get(`/api/events?after=${encodeURIComponent(v)}`), `after=${v}`);
    for (const v of BAD_IDS) expect400(await u.get(`/api/events?limit=${encodeURIComponent(v)}`), `limit=${v}`);
    expect400(await u.get('/api/events?limit=1001'), 'limit=1001');
    expect((await u.get(`/api/events?after=${Number.MAX_SAFE_INTEGER}`)).status).toBe(200);
    expect((await u.get('/api/events?after=0')).status).toBe(200);
  });
  it('GET /api/services/healthy?website_url= never fails on numeric-looking hosts', async () => {
    for (const v of [...BAD_IDS, '1e400.example.com', '99999999999999999999.99999999999999999999']) {
      const r = await u.get(`/api/services/healthy?website_url=${encodeURIComponent(v)}`);
      expect(r.status, `${v}: ${r.text}`).toBeLessThan(500);
    }
  });
});

describe('numbers in JSON bodies', () => {
  it('POST /api/containers/:imageId {count}', async () => {
    for (const raw of BAD_JSON_INTS) expect400(await json(u, 'POST', `/api/containers/${imageId}`, `{"count":${raw}}`), `count=${raw}`);
    expect400(await json(u, 'POST', `/api/containers/${imageId}`, '{"count":101}'), 'count=101');
    const { rows: [{ n }] } = await t.cp.db.query<{ n: number }>('SELECT count(*)::int AS n FROM containers');
    expect(n).toBe(0);
  });

  it('POST /api/auth/tokens {expires_in_days}', async () => {
    for (const raw of BAD_JSON_INTS) expect400(await json(u, 'POST', '/api/auth/tokens', `{"name":"n","expires_in_days":${raw}}`), `expires_in_days=${raw}`);
    expect400(await json(u, 'POST', '/api/auth/tokens', '{"name":"n","expires_in_days":3651}'), 'expires_in_days=3651');
    expect((await u.get('/api/auth/tokens')).body.tokens).toEqual([]);
  });

  it('POST /v1/proxy/report counters and tableVersion', async () => {
    const report = (v: string, c: string) => `{"proxyId":"p1","tableVersion":${v},"routes":[{"id":"img-1","requests":${c},"inflight":0}],"endpoints":[{"address":"127.0.0.1:1","inflight":${c},"requests":0}]}`;
    for (const raw of ['1e400', '-1e400', '"1e400"', '"Infinity"', '99999999999999999999', '1e20', '1.5', '-1']) {
      expect400(await json(api, 'POST', '/v1/proxy/report', report(raw, '0'), PROXY_TOKEN), `tableVersion=${raw}`);
      expect400(await json(api, 'POST', '/v1/proxy/report', report('1', raw), PROXY_TOKEN), `counter=${raw}`);
    }
    expect((await json(api, 'POST', '/v1/proxy/report', report('1', '5'), PROXY_TOKEN)).status).toBe(204);
    // fields a proxy never sends are refused, not kept in memory and shown on /v1/proxies
    const extra = (path: string) => {
      const r = JSON.parse(report('1', '5'));
      if (path === 'root') r.note = 'x'.repeat(1000);
      else r[path][0].note = 'x';
      return JSON.stringify(r);
    };
    for (const where of ['root', 'routes', 'endpoints']) expect400(await json(api, 'POST', '/v1/proxy/report', extra(where), PROXY_TOKEN), `extra field in ${where}`);
  });

  it('auth bodies with numbers where strings belong are 400, not 500', async () => {
    for (const raw of ['1e400', '99999999999999999999', '-0', 'NaN']) {
      const r = await json(api, 'POST', '/api/auth/login', `{"email":${raw},"password":${raw}}`);
      expect(r.status, raw).toBeLessThan(500);
      expect(r.status, raw).not.toBe(200);
      const s = await json(api, 'POST', '/api/auth/signup', `{"email":${raw},"password":${raw}}`);
      expect(s.status, raw).toBeLessThan(500);
      expect(s.status, raw).not.toBe(201);
    }
  });
});

describe('numbers in multipart fields (POST /api/images)', () => {
  let seq = 0;
  const host = () => `num-${++seq}.example.com`;
  const cases: [string, string[]][] = [
    ['container_port', ['1e400', 'Infinity', '-Infinity', 'NaN', '99999999999999999999', '9223372036854775808', '2147483648', '65536', '0', '-1', '1.5', '0x10000']],
    ['min_instances', ['1e400', 'Infinity', '-Infinity', 'NaN', '99999999999999999999', '9223372036854775808', '2147483648', '101', '-1', '1.5']],
    ['max_instances', ['1e400', 'Infinity', '-Infinity', 'NaN', '99999999999999999999', '9223372036854775808', '2147483648', '101', '0', '-1', '1.5']],
    ['cpu_limit', ['1e400', 'Infinity', 'NaN', '99999999999999999999', '99999999999999999999m', '1e400m', '-1', '0', '0.001']],
    ['memory_limit', ['1e400', 'Infinity', 'NaN', '99999999999999999999', '9999999999999t', '0', '-1', '1e3m']],
  ];
  for (const [field, values] of cases) {
    it(field, async () => {
      for (const v of values) expect400(await u.upload({ name: 'num', app_hostname: host(), [field]: v }, archive), `${field}=${v}`);
    });
  }

  it('stored nothing, and valid edge values still work ("-0" is 0)', async () => {
    const { rows: [{ n }] } = await t.cp.db.query<{ n: number }>('SELECT count(*)::int AS n FROM images WHERE app_hostname LIKE $1', ['num-%']);
    expect(n).toBe(0);
    const r = await u.upload({ name: 'num', app_hostname: host(), container_port: '65535', min_instances: '-0', max_instances: '100', cpu_limit: '256', memory_limit: '1t' }, archive);
    expect(r.status, r.text).toBe(201);
    expect(r.body).toMatchObject({ container_port: 65535, min_instances: 0, max_instances: 100, cpu_limit: 256 });
    expect(Object.is(r.body.min_instances, -0)).toBe(false);
  });
});
