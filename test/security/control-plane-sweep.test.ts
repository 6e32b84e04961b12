import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Api } from '../helpers/api.js';
import { insertReadyImage, startTestControlPlane, type TestControlPlane } from '../helpers/control-plane.js';

/**
 * Every route the control plane registers, driven by its own list (`app.apiRoutes`, what the
 * OpenAPI document is made of — a route added later is swept too), answers hostile input with a
 * 4xx in the API's error shape: path parameters that are long, empty, encoded traversal, NUL,
 * non-ASCII, numbers no column holds; bodies that are not JSON, the wrong JSON type, deeply
 * nested, prototype keys, the wrong media type; repeated and unknown query parameters; no
 * credentials, another tenant's, the proxy token where a user's is due. Never a 5xx, never a
 * hang, never another tenant's resource, and the control plane answers normally afterwards.
 */
const PROXY_TOKEN = 'bpt_sweep-test-token';
let t: TestControlPlane;
let owner: Api;
let other: Api;
let anon: Api;
let imageId: number;
const HOST = 'sweep-owner.example.com';

/** Values for a path parameter (each route's parameters, one at a time, the others valid). */
const HOSTILE_PARAMS = [
  '', ' ', 'a'.repeat(5000), '%00', '..%2f..%2fetc%2fpasswd', '%2e%2e', '%E2%80%AE', '%F0%9F%92%A9', '%FF%FE',
  '-1', '0', '1e400', 'NaN', '9007199254740993', '99999999999999999999999', '1.5', '0x10', '%20', '*', '__proto__', 'constructor',
  "1'%20OR%20'1'='1", '%3Cscript%3E', 'UPPER.Example.COM', 'a..b', '-', '.', '2026-13', '2026-00', '9999-12', '0000-01',
];

/** Bodies for methods that take one: [content-type, body]. */
const HOSTILE_BODIES: Array<[string | null, string]> = [
  ['application/json', '{'],
  ['application/json', 'null'],
  ['application/json', '[]'],
  ['application/json', '"x"'],
  ['application/json', '12'],
  ['application/json', '{"__proto__":{"admin":true},"constructor":{"prototype":{"x":1}}}'],
  ['application/json', '['.repeat(20_000) + ']'.repeat(20_000)],
  ['application/json', '{"a":' + '{"a":'.repeat(5000) + '1' + '}'.repeat(5001)],
  ['application/json', JSON.stringify({ x: 'y'.repeat(2_000_000) })],
  ['application/json', '{"name":"\u0000","hostname":"\ud800","weights":{"a":1e400}}'],
  ['text/plain', 'hello'],
  ['application/x-www-form-urlencoded', 'a=1&a=2'],
  ['multipart/form-data; boundary=x', '--x\r\nContent-Disposition: form-data; name="f"\r\n\r\nv\r\n'],
  ['multipart/form-data', 'no boundary'],
  [null, ''],
];

const QUERIES = ['?limit=-1', '?limit=1e400&limit=2', '?since=%00', '?follow=maybe&tail=99999999999', '?x[y]=1&__proto__[a]=1', '?month=2026-13', '?' + 'a=1&'.repeat(2000)];

type Schema = {
  type?: string | string[]; enum?: unknown[]; properties?: Record<string, Schema>; required?: string[]; items?: Schema;
  additionalProperties?: boolean | Schema; minLength?: number; maxLength?: number; minimum?: number; maximum?: number;
  exclusiveMinimum?: number; minItems?: number; maxItems?: number; maxProperties?: number; pattern?: string; format?: string;
  oneOf?: Schema[]; anyOf?: Schema[]; default?: unknown;
};
type Mode = 'typical' | 'least' | 'most';

/** A value `s` accepts: a plain one, the least it takes (required fields, lower bounds), the most (every field, upper bounds, full lengths). */
function valueOf(s: Schema, mode: Mode, depth = 0): unknown {
  const alt = s.oneOf ?? s.anyOf;
  if (alt) return valueOf(alt[mode === 'most' ? alt.length - 1 : 0], mode, depth);
  if (s.enum) return s.enum[mode === 'most' ? s.enum.length - 1 : 0];
  const type = Array.isArray(s.type) ? s.type.find((x) => x !== 'null') : s.type;
  if (type === 'string') {
    if (s.format === 'date-time') return mode === 'least' ? '1970-01-01T00:00:00Z' : '2026-11-30T12:00:00Z';
    if (s.pattern !== undefined) return typeof s.default === 'string' ? s.default : 'a';
    // (full lengths near the top; deeper ones shorter, or arrays of them make gigabytes)
    if (mode === 'most') return 'x'.repeat(Math.min(s.maxLength ?? 4096, depth <= 1 ? 70_000 : 256));
    if (mode === 'least') return 'x'.repeat(s.minLength ?? 0);
    return typeof s.default === 'string' ? s.default : 'x'.repeat(Math.max(1, s.minLength ?? 1));
  }
  if (type === 'integer' || type === 'number') {
    const lo = s.minimum ?? (s.exclusiveMinimum !== undefined ? s.exclusiveMinimum + 1 : 0);
    const hi = s.maximum ?? 2 ** 31 - 1;
    return mode === 'most' ? hi : mode === 'least' ? lo : typeof s.default === 'number' ? s.default : Math.min(hi, Math.max(lo, 1));
  }
  if (type === 'boolean') return mode === 'most';
  if (type === 'array') {
    const n = mode === 'most' ? Math.min(s.maxItems ?? 50, depth <= 1 ? 1000 : 20) : mode === 'least' ? (s.minItems ?? 0) : Math.max(1, s.minItems ?? 1);
    return depth > 6 ? [] : Array.from({ length: n }, () => valueOf(s.items ?? {}, mode, depth + 1));
  }
  if (type === 'object' || s.properties) {
    const out: Record<string, unknown> = {};
    for (const [k, v] of Object.entries(s.properties ?? {})) {
      if (mode === 'least' && !(s.required ?? []).includes(k)) continue;
      out[k] = valueOf(v, mode, depth + 1);
    }
    if (mode === 'most' && typeof s.additionalProperties === 'object') {
      for (let i = 0; i < Math.min(s.maxProperties ?? 50, 200); i++) out[`k${i}`] = valueOf(s.additionalProperties, mode, depth + 1);
    }
    return out;
  }
  return mode === 'most' ? 'x'.repeat(1000) : 'x';
}

/** Strings with what text columns and parsers trip on: NUL, a lone surrogate, right-to-left, emoji, SQL. */
const STRANGE = ['\u0000', '\ud800', 'a\u202Eb', '\u{1F4A9}'.repeat(10), "x'); DROP TABLE users; --", '../../etc/passwd', '%s%n', ' '];

/** A query value's encoding (a lone surrogate as the bytes UTF-8 forbids, which is what a client could send). */
const queryText = (v: string) => (v === '\ud800' ? '%ED%A0%80' : encodeURIComponent(v));

/** `base` with the string at `path` replaced by each strange string (one field at a time). */
function* strangeVariants(base: unknown, s: Schema, path: string[] = []): Generator<[string, unknown]> {
  const type = Array.isArray(s.type) ? s.type.find((x) => x !== 'null') : s.type;
  if (type === 'string' && !s.enum && s.pattern === undefined && s.format === undefined) {
    for (const v of STRANGE) yield [path.join('.') + '=' + JSON.stringify(v), v];
    return;
  }
  if ((type === 'object' || s.properties) && base !== null && typeof base === 'object' && !Array.isArray(base)) {
    for (const [k, v] of Object.entries(s.properties ?? {})) {
      if (!(k in (base as Record<string, unknown>))) continue;
      for (const [what, x] of strangeVariants((base as Record<string, unknown>)[k], v, [...path, k])) yield [what, { ...(base as object), [k]: x }];
    }
  }
}

interface Finding { what: string; status: number | string; body?: string }

/** One request with a deadline; answers the status (or 'timeout'/'error') and the start of the body. */
async function probe(base: string, method: string, path: string, init: { token?: string; type?: string | null; body?: string } = {}): Promise<{ status: number | string; text: string }> {
  const headers: Record<string, string> = {};
  if (init.token) headers.authorization = `Bearer ${init.token}`;
  if (init.type) headers['content-type'] = init.type;
  const ac = new AbortController();
  const timer = setTimeout(() => ac.abort(), 10_000);
  try {
    const res = await fetch(base + path, { method, headers, body: init.body, signal: ac.signal, redirect: 'manual' });
    // a stream that answered its head is fine: only its start is read
    const type = res.headers.get('content-type') ?? '';
    if (type.startsWith('text/event-stream') || type.startsWith('application/x-ndjson') || res.headers.get('transfer-encoding') === 'chunked' && res.status === 200) {
      ac.abort();
      return { status: res.status, text: '' };
    }
    return { status: res.status, text: await res.text() };
  } catch (e) {
    return { status: ac.signal.aborted ? 'timeout' : `error ${(e as Error).message}`, text: '' };
  } finally {
    clearTimeout(timer);
  }
}

/** A concrete path for `url` with valid values, `hostile` put in place of parameter `at` (or none). */
function fill(url: string, at: string | null, hostile: string): string {
  return url.replace(/:([A-Za-z0-9_]+)/g, (_, name: string) => {
    if (name === at) return hostile;
    if (name === 'host') return HOST;
    if (name === 'month') return '2026-11';
    if (name === 'imageId' || name === 'id') return String(imageId);
    return '1';
  }).replace(/\*$/, at === '*' ? hostile : 'x');
}

/**
 * A 5xx, a hang, a broken connection, or a refusal not in the API's error shape
 * (`{"error":{"code","message","requestId"}}`); a 503 naming why (Docker is away here, a cap is
 * full) is an answer.
 */
function bad(res: { status: number | string; text: string }): boolean {
  if (typeof res.status !== 'number') return true;
  if (res.status < 400) return false;
  let shaped = false;
  try {
    const e = (JSON.parse(res.text) as { error?: { code?: unknown; message?: unknown; requestId?: unknown } }).error;
    shaped = typeof e?.code === 'string' && /^[a-z_]+$/.test(e.code) && typeof e.message === 'string' && e.message !== '' && typeof e.requestId === 'string';
  } catch { /* not JSON */ }
  if (!shaped) return true;
  return res.status >= 500 && res.status !== 503;
}

/** Requests with valid parameters that would end the test's own state (its session, the app). */
const DESTRUCTIVE = (r: { method: string; url: string }) => r.method === 'DELETE' || r.url === '/api/auth/logout';

beforeAll(async () => {
  t = await startTestControlPlane({ proxyToken: PROXY_TOKEN, dockerHost: 'unix:///nonexistent/docker.sock' });
  anon = new Api(t.cp.url);
  owner = await anon.signup('sweep-owner@example.com');
  other = await anon.signup('sweep-other@example.com');
  const me = (await owner.get('/api/auth/me')).body.user.id as number;
  imageId = await insertReadyImage(t.cp, me, HOST, 2);
}, 120_000);

afterAll(async () => {
  await t?.close();
});

describe('every route, hostile input', () => {
  it('the route list is the one the control plane serves', () => {
    expect(t.cp.app.apiRoutes.length).toBeGreaterThan(40);
  });

  it('path parameters: 4xx, never 5xx or a hang', async () => {
    const findings: Finding[] = [];
    for (const r of t.cp.app.apiRoutes) {
      const params = [...r.url.matchAll(/:([A-Za-z0-9_]+)/g)].map((m) => m[1]).concat(r.url.endsWith('*') ? ['*'] : []);
      for (const p of params) {
        for (const v of HOSTILE_PARAMS) {
          for (const token of [owner.token!, PROXY_TOKEN]) {
            const path = fill(r.url, p, v);
            const res = await probe(t.cp.url, r.method, path, { token, type: r.method === 'GET' || r.method === 'DELETE' ? null : 'application/json', body: r.method === 'GET' || r.method === 'DELETE' ? undefined : '{}' });
            if (bad(res)) findings.push({ what: `${r.method} ${path.slice(0, 120)} (${token === PROXY_TOKEN ? 'proxy token' : 'user'})`, status: res.status, body: res.text.slice(0, 300) });
          }
        }
      }
    }
    expect(findings).toEqual([]);
  }, 600_000);

  it('bodies and media types: 4xx, never 5xx or a hang', async () => {
    const findings: Finding[] = [];
    for (const r of t.cp.app.apiRoutes) {
      if (r.method === 'GET' || DESTRUCTIVE(r)) continue;
      for (const [type, body] of HOSTILE_BODIES) {
        for (const token of [owner.token!, PROXY_TOKEN]) {
          const path = fill(r.url, null, '');
          const res = await probe(t.cp.url, r.method, path, { token, type, body });
          if (bad(res)) findings.push({ what: `${r.method} ${path} ${type} ${body.slice(0, 40)} (${token === PROXY_TOKEN ? 'proxy token' : 'user'})`, status: res.status, body: res.text.slice(0, 300) });
        }
      }
    }
    expect(findings).toEqual([]);
  }, 600_000);

  it('query strings: 4xx, never 5xx or a hang', async () => {
    // (the routes that read a query string: elsewhere it is not looked at — and a start against
    // the absent Docker daemon takes seconds each)
    const doc = await (await fetch(`${t.cp.url}/docs/json`)).json() as { paths: Record<string, Record<string, { parameters?: Array<{ in: string }> }>> };
    const readsQuery = (r: { method: string; url: string }) =>
      doc.paths[r.url.replace(/:([A-Za-z0-9_]+)/g, '{$1}')]?.[r.method.toLowerCase()]?.parameters?.some((x) => x.in === 'query') === true;
    const findings: Finding[] = [];
    for (const r of t.cp.app.apiRoutes) {
      if (DESTRUCTIVE(r) || !readsQuery(r)) continue;
      for (const q of QUERIES) {
        const path = fill(r.url, null, '') + q;
        const res = await probe(t.cp.url, r.method, path, { token: owner.token!, type: r.method === 'GET' || r.method === 'DELETE' ? null : 'application/json', body: r.method === 'GET' || r.method === 'DELETE' ? undefined : '{}' });
        if (bad(res)) findings.push({ what: `${r.method} ${path.slice(0, 120)}`, status: res.status, body: res.text.slice(0, 300) });
      }
    }
    expect(findings).toEqual([]);
  }, 600_000);

  it('bodies and query strings the schemas accept — the least, the most, strange text — never 5xx or a hang', async () => {
    const doc = await (await fetch(`${t.cp.url}/docs/json`)).json() as { paths: Record<string, Record<string, { requestBody?: { content?: Record<string, { schema: Schema }> }; parameters?: Array<{ in: string; name: string; schema: Schema }> }>> };
    const findings: Finding[] = [];
    let sent = 0;
    for (const [p, ops] of Object.entries(doc.paths)) {
      for (const [m, op] of Object.entries(ops)) {
        const method = m.toUpperCase();
        const url = p.replace(/\{([A-Za-z0-9_]+)\}/g, ':$1');
        if (DESTRUCTIVE({ method, url })) continue;
        const token = url.startsWith('/v1/') ? PROXY_TOKEN : owner.token!;
        const path = fill(url, null, '');
        const schema = op.requestBody?.content?.['application/json']?.schema;
        const bodies: Array<[string, unknown]> = [];
        if (schema) {
          for (const mode of ['typical', 'least', 'most'] as const) bodies.push([mode, valueOf(schema, mode)]);
          for (const v of strangeVariants(valueOf(schema, 'typical'), schema)) bodies.push(v);
        }
        const query = (op.parameters ?? []).filter((x) => x.in === 'query');
        const queries: string[] = [''];
        for (const mode of ['typical', 'least', 'most'] as const) {
          if (query.length === 0) break;
          // (a long poll waits at most a second here; a stream answers its head)
          queries.push('?' + query.map((x) => `${x.name}=${encodeURIComponent(String(x.name === 'wait' ? 1 : valueOf(x.schema, mode)))}`).join('&'));
        }
        for (const q of query) {
          if (q.schema.type !== 'string' || q.schema.enum || q.schema.pattern || q.schema.format) continue;
          for (const v of STRANGE) queries.push(`?${q.name}=${queryText(v)}`);
        }
        for (const [what, body] of bodies.length > 0 ? bodies : [['none', undefined] as [string, unknown]]) {
          for (const q of bodies.length > 0 ? [''] : queries) {
            const res = await probe(t.cp.url, method, path + q, { token, type: body === undefined ? null : 'application/json', body: body === undefined ? undefined : JSON.stringify(body) });
            sent++;
            if (bad(res)) findings.push({ what: `${method} ${path}${q.slice(0, 100)} ${what.slice(0, 80)}`, status: res.status, body: res.text.slice(0, 300) });
          }
        }
      }
    }
    expect(sent).toBeGreaterThan(200);
    expect(findings).toEqual([]);
  }, 600_000);

  it("another tenant's resources: never 2xx", async () => {
    const findings: Finding[] = [];
    for (const r of t.cp.app.apiRoutes) {
      if (!/:(host|id|imageId)\b/.test(r.url) || r.url.startsWith('/v1/proxy') || r.url.startsWith('/api/auth/tokens') || r.url.startsWith('/api/workloads')) continue;
      const path = fill(r.url, null, '');
      const res = await probe(t.cp.url, r.method, path, { token: other.token!, type: r.method === 'GET' || r.method === 'DELETE' ? null : 'application/json', body: r.method === 'GET' || r.method === 'DELETE' ? undefined : '{}' });
      if (typeof res.status !== 'number' || res.status < 400 || res.status >= 500) findings.push({ what: `${r.method} ${path}`, status: res.status, body: res.text.slice(0, 300) });
    }
    expect(findings).toEqual([]);
  }, 600_000);

  it('afterwards the control plane answers normally, and the owner still has the app', async () => {
    expect((await anon.get('/healthz')).status).toBe(200);
    const r = await owner.get(`/api/apps/${HOST}`);
    expect(r.status).toBe(200);
  });
});
