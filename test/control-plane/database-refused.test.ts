import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startControlPlane, type ControlPlane } from '../../control-plane/app.js';
import { Api } from '../helpers/api.js';
import { startTestPostgres, type TestPostgres } from '../helpers/postgres.js';
import { tempDir } from '../helpers/tmp.js';
import { Relay } from '../helpers/relay.js';

describe('a database that refuses connections', () => {
  let pg: TestPostgres;
  let cp: ControlPlane;
  let relay: Relay;
  let data: Awaited<ReturnType<typeof tempDir>>;

  beforeAll(async () => {
    pg = await startTestPostgres();
    const url = new URL(await pg.createDatabase());
    relay = new Relay(Number(url.port));
    await relay.open();
    url.port = String(relay.port);
    data = await tempDir();
    cp = await startControlPlane({ port: 0, dataDir: data.dir, databaseUrl: url.toString(), quiet: true });
  }, 60_000);

  afterAll(async () => {
    await relay?.cut();
    await cp?.close();
    await pg?.stop();
    await data?.cleanup();
  });

  it('is 503 unavailable with Retry-After while it is away (ECONNREFUSED from the pool, not a 500), and served again when it is back', async () => {
    const api = await new Api(cp.url).signup('refused@example.com');
    expect((await api.get('/api/apps')).status).toBe(200);
    await relay.cut();
    // the pool's idle connections see the close; every request from now on opens a new one
    await new Promise((r) => setTimeout(r, 200));
    for (let i = 0; i < 3; i++) {
      const r = await api.get('/api/apps');
      expect([r.status, r.body?.error?.code], r.text).toEqual([503, 'unavailable']);
      expect(r.headers.get('retry-after')).toBe('5');
    }
    // a login too (its own path: the login limits read the database first)
    const login = await api.req('POST', '/api/auth/login', { json: { email: 'refused@example.com', password: 'correct-horse-1' }, token: null });
    expect([login.status, login.body?.error?.code], login.text).toEqual([503, 'unavailable']);
    await relay.open();
    expect((await api.get('/api/apps')).status).toBe(200);
  }, 60_000);
});
