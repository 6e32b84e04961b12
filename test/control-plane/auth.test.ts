import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startControlPlane, type ControlPlane } from '../../control-plane/app.js';
import { migrate } from '../../control-plane/db/migrate.js';
import { migrations } from '../../control-plane/db/migrations/index.js';
import { createPool } from '../../control-plane/db/pool.js';
import { Api } from '../helpers/api.js';
import { startTestPostgres, type TestPostgres } from '../helpers/postgres.js';
import { tempDir } from '../helpers/tmp.js';

let pg: TestPostgres;
let cp: ControlPlane;
let api: Api;
let data: { dir: string; cleanup(): Promise<void> };
let dbUrl: string;

beforeAll(async () => {
  pg = await startTestPostgres();
  data = await tempDir();
  dbUrl = await pg.createDatabase();
  cp = await startControlPlane({
    port: 0, dataDir: data.dir, databaseUrl: dbUrl, quiet: true, env: 'development',
    loginRateLimit: { perAccountMax: 3, perAccountWindowMs: 60_000, perIpMax: 1000 },
  });
  api = new Api(cp.url);
});

afterAll(async () => {
  await cp?.close();
  await pg?.stop();
  await data?.cleanup();
});

describe('process endpoints', () => {
  it('healthz, readyz, metrics', async () => {
    expect((await api.get('/healthz')).body).toEqual({ status: 'ok' });
    const ready = await api.get('/readyz');
    expect(ready.status).toBe(200);
    expect(ready.body.checks.database).toBe('ok');
    await api.get('/api/nope');
    const m = await api.req('GET', '/metrics', { token: cp.metricsToken });
    expect(m.status).toBe(200);
    expect(m.text).toContain('berth_cp_http_requests_total{method="GET",route="/readyz",status="200"} 1');
    expect(m.text).toContain('berth_cp_db_pool_total');
    expect(m.text).toContain('berth_cp_builds_running');
  });

  it('errors use the contract format with the request id, and keep an incoming x-request-id', async () => {
    const r = await api.req('GET', '/api/does-not-exist', { headers: { 'x-request-id': 'abc-123' } });
    expect(r.status).toBe(404);
    expect(r.body).toEqual({ error: { code: 'not_found', message: expect.any(String), requestId: 'abc-123' } });
    expect(r.headers.get('x-request-id')).toBe('abc-123');
    const bad = await api.req('POST', '/api/auth/login', { body: '{not json', headers: { 'content-type': 'application/json' } });
    expect(bad.status).toBe(400);
    expect(bad.body.error.code).toBe('invalid_request');
    expect(bad.body.error.requestId).toBe(bad.headers.get('x-request-id'));
  });

  it('401s carry a Bearer challenge (WWW-Authenticate)', async () => {
    for (const r of [
      await api.req('GET', '/api/auth/me', { token: null }),
      await api.req('GET', '/api/auth/me', { token: 'garbage' }),
      await api.req('GET', '/api/auth/me', { headers: { authorization: 'Basic Zm9vOmJhcg==' }, token: null }),
      await api.req('POST', '/api/auth/login', { json: { email: 'nobody@example.com', password: 'whatever1' }, token: null }),
    ]) {
      expect(r.status).toBe(401);
      expect(r.headers.get('www-authenticate')).toMatch(/^Bearer\b/);
    }
  });

  it('ids past 2^53 answer 400, not 500', async () => {
    const u = await api.signup('bigids@example.com');
    for (const path of ['/api/images/1e20', '/api/images/99999999999999999999', '/api/images/9007199254740993', '/api/events?after=1e20', '/api/events?after=99999999999999999999', '/api/containers/1e20', '/api/containers?image_id=99999999999999999999']) {
      const r = await u.get(path);
      expect(r.status, `${path}: ${r.text}`).toBe(400);
      expect(r.body.error.code).toBe('invalid_request');
    }
    expect((await u.del('/api/auth/tokens/1e20')).status).toBe(400);
    expect((await u.get('/api/images/9007199254740991')).status).toBe(404);
  });

  it('refuses to start with a BERTH_JWT_SECRET shorter than 32 bytes', async () => {
    const d = await tempDir();
    try {
      await expect(startControlPlane({ port: 0, dataDir: d.dir, databaseUrl: dbUrl, quiet: true, jwtSecret: 'too-short-secret' }))
        .rejects.toThrow(/BERTH_JWT_SECRET is 16 bytes; it must be at least 32 bytes/);
    } finally {
      await d.cleanup();
    }
  });

  it('refuses to start with a generated key file cut short (an empty or short <data-dir>/jwt-secret)', async () => {
    const { loadJwtKey } = await import('../../control-plane/auth/tokens.js');
    const { writeFile } = await import('node:fs/promises');
    const d = await tempDir();
    try {
      const first = await loadJwtKey(undefined, d.dir);
      expect(first.length).toBeGreaterThanOrEqual(32);
      expect(await loadJwtKey(undefined, d.dir)).toEqual(first);
      for (const short of ['', 'abc\n']) {
        await writeFile(join(d.dir, 'jwt-secret'), short);
        await expect(loadJwtKey(undefined, d.dir)).rejects.toThrow(/must be at least 32/);
      }
    } finally {
      await d.cleanup();
    }
  });

  it('migrations are safe to run again and concurrently', async () => {
    const url = await pg.createDatabase({ empty: true });
    const a = createPool(url, 2);
    const b = createPool(url, 2);
    try {
      const [ra, rb] = await Promise.all([migrate(a), migrate(b)]);
      const all = migrations.map((m) => m.version).sort((x, y) => x - y);
      // each migration applied exactly once, by one of the two
      expect([...ra, ...rb].sort((x, y) => x - y)).toEqual(all);
      expect(ra.length === 0 || rb.length === 0).toBe(true);
      expect(await migrate(a)).toEqual([]);
      const { rows } = await a.query('SELECT count(*)::int AS n FROM schema_migrations');
      expect(rows[0].n).toBe(all.length);
    } finally {
      await a.end();
      await b.end();
    }
  });
});

describe('accounts', () => {
  it('seeds the default user when the table is empty (not in production) and it can log in', async () => {
    const r = await api.post('/api/auth/login', { email: 'example@gmail.com', password: 'example123' });
    expect(r.status).toBe(200);
    expect(r.body.user.email).toBe('example@gmail.com');
  });

  it('does not seed the default user in production', async () => {
    const d = await tempDir();
    const prod = await startControlPlane({ port: 0, dataDir: d.dir, databaseUrl: await pg.createDatabase(), quiet: true, env: 'production' });
    try {
      const r = await new Api(prod.url).post('/api/auth/login', { email: 'example@gmail.com', password: 'example123' });
      expect(r.status).toBe(401);
      const { rows } = await prod.db.query('SELECT count(*)::int AS n FROM users');
      expect(rows[0].n).toBe(0);
    } finally {
      await prod.close();
      await d.cleanup();
    }
  });

  it('signup → 201 {user, token}; the token works; password stored as argon2id', async () => {
    const r = await api.req('POST', '/api/auth/signup', { json: { email: 'Alice@Example.com', password: 'alice-password', username: 'alice' } });
    expect(r.status).toBe(201);
    expect(r.body.user).toMatchObject({ email: 'alice@example.com', username: 'alice', id: expect.any(Number) });
    expect(r.body.user.password_hash).toBeUndefined();
    expect(typeof r.body.token).toBe('string');
    const me = await api.withToken(r.body.token).get('/api/auth/me');
    expect(me.status).toBe(200);
    expect(me.body.user.email).toBe('alice@example.com');
    const { rows } = await cp.db.query('SELECT password_hash FROM users WHERE email = $1', ['alice@example.com']);
    expect(rows[0].password_hash).toMatch(/^\$argon2id\$/);
  });

  it('signup errors: duplicate email (any case) 409, duplicate username 409, invalid input 400', async () => {
    await api.signup('dup@example.com', 'password-1', 'dupuser');
    const dup = await api.req('POST', '/api/auth/signup', { json: { email: 'DUP@example.com', password: 'password-1' }, token: null });
    expect(dup.status).toBe(409);
    expect(dup.body.error.code).toBe('email_taken');
    const dupName = await api.req('POST', '/api/auth/signup', { json: { email: 'other@example.com', password: 'password-1', username: 'DupUser' }, token: null });
    expect(dupName.status).toBe(409);
    for (const body of [
      { email: 'not-an-email', password: 'password-1' },
      { email: 'a@b.co', password: 'short' },
      { email: 'a@b.co' },
      { email: 'a@b.co', password: 'password-1', admin: true },
      { email: 'a@b.co', password: 'password-1', username: 'bad name!' },
    ]) {
      const r = await api.req('POST', '/api/auth/signup', { json: body, token: null });
      expect(r.status, JSON.stringify(body)).toBe(400);
      expect(r.body.error.code).toBe('invalid_request');
    }
  });

  it('login sets an HttpOnly SameSite=Lax cookie that authenticates; logout clears it', async () => {
    await api.signup('cookie@example.com', 'cookie-password');
    const r = await api.post('/api/auth/login', { email: 'cookie@example.com', password: 'cookie-password' });
    expect(r.status).toBe(200);
    const setCookie = r.headers.get('set-cookie')!;
    expect(setCookie).toMatch(/^berth_session=/);
    expect(setCookie).toMatch(/HttpOnly/i);
    expect(setCookie).toMatch(/SameSite=Lax/i);
    // the API's paths only: the proxy's /apps/{host}/ may share this host name (browsers ignore ports)
    expect(setCookie).toMatch(/Path=\/api(;|$)/);
    const cookie = setCookie.split(';')[0];
    const me = await api.req('GET', '/api/auth/me', { headers: { cookie }, token: null });
    expect(me.status).toBe(200);
    expect(me.body.user.email).toBe('cookie@example.com');
    // a second berth_session (planted by a page on another path of this host) is trusted by neither
    const twice = await api.req('GET', '/api/auth/me', { headers: { cookie: `berth_session=planted; ${cookie}` }, token: null });
    expect(twice.status).toBe(401);
    expect(twice.body.error.message).toMatch(/more than one berth_session/);
    const out = await api.req('POST', '/api/auth/logout', { headers: { cookie }, token: null });
    expect(out.status).toBe(204);
    expect(out.headers.get('set-cookie')).toMatch(/berth_session=;.*Expires=Thu, 01 Jan 1970/i);
    // the session is revoked, not just forgotten by this browser: a copied cookie no longer works
    expect((await api.req('GET', '/api/auth/me', { headers: { cookie }, token: null })).status).toBe(401);
  });

  it('logout revokes the presented session token; other sessions and API tokens keep working', async () => {
    await api.signup('logout@example.com', 'logout-password');
    const login = async () => (await api.post('/api/auth/login', { email: 'logout@example.com', password: 'logout-password' })).body.token as string;
    const first = await login();
    const second = await login();
    const apiToken = (await api.withToken(first).post('/api/auth/tokens', { name: 'ci' })).body.token as string;
    expect((await api.withToken(first).get('/api/auth/me')).status).toBe(200);
    expect((await api.withToken(first).post('/api/auth/logout', {})).status).toBe(204);
    expect((await api.withToken(first).get('/api/auth/me')).status).toBe(401);
    expect((await api.withToken(second).get('/api/auth/me')).status).toBe(200);
    expect((await api.withToken(apiToken).get('/api/auth/me')).status).toBe(200);
  });

  it('refuses cookie-authenticated state changes from another origin (CSRF), allows same-origin and bearer', async () => {
    await api.signup('csrf@example.com', 'csrf-password');
    const r = await api.post('/api/auth/login', { email: 'csrf@example.com', password: 'csrf-password' });
    const cookie = r.headers.get('set-cookie')!.split(';')[0];
    const evil = await api.req('POST', '/api/auth/tokens', { json: { name: 'stolen' }, headers: { cookie, origin: 'http://evil.apps.example.com' }, token: null });
    expect(evil.status).toBe(403);
    expect(evil.body.error.code).toBe('csrf_rejected');
    const fetchSite = await api.req('POST', '/api/auth/tokens', { json: { name: 'stolen' }, headers: { cookie, 'sec-fetch-site': 'same-site' }, token: null });
    expect(fetchSite.status).toBe(403);
    // reading is fine, and so is a same-origin page or a non-browser client
    expect((await api.req('GET', '/api/auth/me', { headers: { cookie, origin: 'http://evil.apps.example.com' }, token: null })).status).toBe(200);
    expect((await api.req('POST', '/api/auth/tokens', { json: { name: 'mine' }, headers: { cookie, 'sec-fetch-site': 'same-origin' }, token: null })).status).toBe(201);
    expect((await api.req('POST', '/api/auth/tokens', { json: { name: 'cli' }, headers: { cookie }, token: null })).status).toBe(201);
    expect((await api.withToken(r.body.token).post('/api/auth/tokens', { name: 'bearer' })).status).toBe(201);
  });

  it('rejects wrong passwords, unknown accounts, missing, garbage and forged tokens', async () => {
    await api.signup('bob@example.com', 'bob-password');
    expect((await api.post('/api/auth/login', { email: 'bob@example.com', password: 'nope-nope' })).status).toBe(401);
    expect((await api.post('/api/auth/login', { email: 'nobody@example.com', password: 'whatever1' })).body.error.code).toBe('invalid_credentials');
    expect((await api.req('GET', '/api/auth/me', { token: null })).status).toBe(401);
    expect((await api.withToken('garbage').get('/api/auth/me')).status).toBe(401);
    expect((await api.req('GET', '/api/auth/me', { headers: { authorization: 'Basic Ym9iOng=' }, token: null })).status).toBe(401);
    expect((await api.req('GET', '/api/auth/me', { headers: { cookie: 'berth_session=forged' }, token: null })).status).toBe(401);
    // a JWT signed with another key
    const { SignJWT } = await import('jose');
    const forged = await new SignJWT({}).setProtectedHeader({ alg: 'HS256' }).setSubject('1').setIssuer('berth').setAudience('berth-api').setExpirationTime('1h').sign(new TextEncoder().encode('x'.repeat(48)));
    expect((await api.withToken(forged).get('/api/auth/me')).status).toBe(401);
  });

  it('throttles login per account (from one address) with 429 and Retry-After; a success from there waits for the delay too', async () => {
    await api.signup('carol@example.com', 'carol-password');
    for (let i = 0; i < 3; i++) expect((await api.post('/api/auth/login', { email: 'carol@example.com', password: 'wrong-wrong' })).status).toBe(401);
    const limited = await api.post('/api/auth/login', { email: 'Carol@example.com', password: 'carol-password' });
    expect(limited.status).toBe(429);
    expect(limited.body.error.code).toBe('too_many_requests');
    expect(Number(limited.headers.get('retry-after'))).toBeGreaterThan(0);
    // other accounts are unaffected
    expect((await api.post('/api/auth/login', { email: 'bob@example.com', password: 'bob-password' })).status).toBe(200);
  });

  it('parallel bad logins for one account cannot slip past the per-account limit', async () => {
    await api.signup('parallel@example.com', 'parallel-password');
    const n = 10;
    const codes = await Promise.all(Array.from({ length: n }, () => api.post('/api/auth/login', { email: 'parallel@example.com', password: 'wrong-wrong' }).then((r) => r.status)));
    expect(codes.filter((c) => c === 401).length).toBeLessThanOrEqual(3);
    expect(codes.filter((c) => c === 429).length).toBeGreaterThanOrEqual(n - 3);
  });

  it('rate limits login per IP', async () => {
    const d = await tempDir();
    const strict = await startControlPlane({ port: 0, dataDir: d.dir, databaseUrl: dbUrl, quiet: true, seedDefaultUser: false, loginRateLimit: { perIpMax: 4, perIpWindowMs: 60_000 } });
    try {
      const s = new Api(strict.url);
      const codes: number[] = [];
      for (let i = 0; i < 6; i++) codes.push((await s.post('/api/auth/login', { email: `user${i}@example.com`, password: 'whatever1' })).status);
      expect(codes).toEqual([401, 401, 401, 401, 429, 429]);
      // signups (which hash a password too) are limited per IP as well, on their own counter
      const signups: number[] = [];
      for (let i = 0; i < 6; i++) signups.push((await s.req('POST', '/api/auth/signup', { json: { email: `new${i}@example.com`, password: 'password-1' } })).status);
      expect(signups).toEqual([201, 201, 201, 201, 429, 429]);
    } finally {
      await strict.close();
      await d.cleanup();
    }
  });

  it('sessions survive a restart: the JWT key is generated once into the data dir', async () => {
    const d = await tempDir();
    const url = await pg.createDatabase();
    const first = await startControlPlane({ port: 0, dataDir: d.dir, databaseUrl: url, quiet: true });
    const user = await new Api(first.url).signup('restart@example.com');
    await first.close();
    const second = await startControlPlane({ port: 0, dataDir: d.dir, databaseUrl: url, quiet: true });
    try {
      expect((await new Api(second.url, user.token).get('/api/auth/me')).status).toBe(200);
    } finally {
      await second.close();
      await d.cleanup();
    }
  });
});

describe('API tokens', () => {
  it('create (shown once), use, list (no secret), revoke', async () => {
    const dave = await api.signup('dave@example.com');
    const created = await dave.post('/api/auth/tokens', { name: 'ci' });
    expect(created.status).toBe(201);
    expect(created.body.token).toMatch(/^berth_/);
    const script = api.withToken(created.body.token);
    const me = await script.get('/api/auth/me');
    expect(me.status).toBe(200);
    expect(me.body).toMatchObject({ user: { email: 'dave@example.com' }, auth: 'api_token' });
    const list = await dave.get('/api/auth/tokens');
    expect(list.body.tokens).toHaveLength(1);
    expect(list.body.tokens[0]).toMatchObject({ id: created.body.id, name: 'ci', prefix: created.body.token.slice(0, 12) });
    expect(list.body.tokens[0].token).toBeUndefined();
    expect(list.body.tokens[0].last_used_at).not.toBeNull();
    const { rows } = await cp.db.query('SELECT token_hash FROM api_tokens WHERE id = $1', [created.body.id]);
    expect(rows[0].token_hash).not.toContain(created.body.token);
    expect(rows[0].token_hash).toMatch(/^[0-9a-f]{64}$/);
    expect((await dave.del(`/api/auth/tokens/${created.body.id}`)).status).toBe(204);
    expect((await script.get('/api/auth/me')).status).toBe(401);
    expect((await dave.get('/api/auth/tokens')).body.tokens).toHaveLength(0);
    expect((await dave.del(`/api/auth/tokens/${created.body.id}`)).status).toBe(404);
  });

  it("another user's token id answers 404 and stays valid; bad input 400", async () => {
    const erin = await api.signup('erin@example.com');
    const frank = await api.signup('frank@example.com');
    const t = await erin.post('/api/auth/tokens', { name: 'erin-token', expires_in_days: 30 });
    expect(t.body.expires_at).not.toBeNull();
    const r = await frank.del(`/api/auth/tokens/${t.body.id}`);
    expect(r.status).toBe(404);
    expect(r.body.error.code).toBe('not_found');
    expect((await api.withToken(t.body.token).get('/api/auth/me')).status).toBe(200);
    expect((await erin.post('/api/auth/tokens', {})).status).toBe(400);
    expect((await erin.post('/api/auth/tokens', { name: 'x', expires_in_days: 0 })).status).toBe(400);
    expect((await erin.del('/api/auth/tokens/abc')).status).toBe(400);
  });

  it('at most 100 live tokens per user (409); revoked and expired ones are deleted; names without control characters', async () => {
    const hana = await api.signup('hana@example.com');
    const uid = Number((await hana.get('/api/auth/me')).body.user.id);
    await cp.db.query(
      `INSERT INTO api_tokens (user_id, name, token_hash, prefix) SELECT $1, 'bulk', md5(random()::text || g), 'berth_x' FROM generate_series(1, 99) g`, [uid]);
    const last = await hana.post('/api/auth/tokens', { name: 'the 100th' });
    expect(last.status, last.text).toBe(201);
    const over = await hana.post('/api/auth/tokens', { name: 'one more' });
    expect(over.status).toBe(409);
    expect(over.body.error.code).toBe('too_many_tokens');
    expect((await hana.del(`/api/auth/tokens/${last.body.id}`)).status).toBe(204);
    expect((await hana.post('/api/auth/tokens', { name: 'again' })).status).toBe(201);
    // the revoked one is gone, not kept forever
    expect((await cp.db.query('SELECT 1 FROM api_tokens WHERE id = $1', [last.body.id])).rowCount).toBe(0);
    for (const name of ['a\u001b[2Jb', 'x\ny', 'del\u007f']) expect((await hana.post('/api/auth/tokens', { name })).status, JSON.stringify(name)).toBe(400);
  });

  it('a token made with a token expires no later than it and is revoked with it (a leaked short-lived one cannot mint a permanent one)', async () => {
    const ivan = await api.signup('ivan@example.com');
    const ci = await ivan.post('/api/auth/tokens', { name: 'ci', expires_in_days: 1 });
    const viaCi = api.withToken(ci.body.token);
    const forever = await viaCi.post('/api/auth/tokens', { name: 'forever' });
    expect(forever.status, forever.text).toBe(201);
    expect(forever.body.expires_at).toBe(ci.body.expires_at);
    const longer = await viaCi.post('/api/auth/tokens', { name: 'longer', expires_in_days: 30 });
    expect(longer.body.expires_at).toBe(ci.body.expires_at);
    const shorter = await viaCi.post('/api/auth/tokens', { name: 'shorter', expires_in_days: 1 });
    expect(new Date(shorter.body.expires_at).getTime()).toBeLessThanOrEqual(new Date(ci.body.expires_at).getTime());
    // a grandchild too
    const grandchild = await api.withToken(forever.body.token).post('/api/auth/tokens', { name: 'grandchild' });
    expect(grandchild.body.expires_at).toBe(ci.body.expires_at);
    // one made with the session (a sign-in) is not bound, nor revoked with them
    const own = await ivan.post('/api/auth/tokens', { name: 'own' });
    expect(own.body.expires_at).toBeNull();
    // one made with a token that never expires: none either
    const fromOwn = await api.withToken(own.body.token).post('/api/auth/tokens', { name: 'from-own' });
    expect(fromOwn.body.expires_at).toBeNull();
    // revoking the leaked one revokes what it made, and what those made
    expect((await ivan.del(`/api/auth/tokens/${ci.body.id}`)).status).toBe(204);
    for (const t of [ci, forever, longer, shorter, grandchild]) expect((await api.withToken(t.body.token).get('/api/auth/me')).status, t.body.name).toBe(401);
    for (const t of [own, fromOwn]) expect((await api.withToken(t.body.token).get('/api/auth/me')).status, t.body.name).toBe(200);
    // an expired token makes none
    await cp.db.query(`UPDATE api_tokens SET expires_at = now() - interval '1 second' WHERE id = $1`, [own.body.id]);
    expect((await api.withToken(own.body.token).post('/api/auth/tokens', { name: 'late' })).status).toBe(401);
  });

  it('expired tokens are refused', async () => {
    const gina = await api.signup('gina@example.com');
    const t = await gina.post('/api/auth/tokens', { name: 'short' });
    await cp.db.query(`UPDATE api_tokens SET expires_at = now() - interval '1 second' WHERE id = $1`, [t.body.id]);
    expect((await api.withToken(t.body.token).get('/api/auth/me')).status).toBe(401);
  });
});
