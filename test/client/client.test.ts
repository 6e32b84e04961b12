import { createServer, type Server } from 'node:http';
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { BerthClient, ClientError, EXIT, normalizeApiUrl } from '../../shared/client/client.js';
import { credentialsPath, forgetLogin, readCredentials, saveLogin } from '../../shared/client/credentials.js';
import { tempDir } from '../helpers/tmp.js';

/** The shared client: where the API and token come from, and errors that speak to a person. */

let server: Server;
let base = '';
beforeAll(async () => {
  server = createServer((req, res) => {
    if (req.url === '/api/reset') { req.socket.destroy(); return; }
    if (req.url === '/api/endless') {
      // an answer without end: 1 MiB pieces as fast as the client reads
      res.writeHead(200, { 'content-type': 'application/json' });
      const piece = Buffer.alloc(1024 * 1024, 32);
      const more = () => { while (!res.destroyed && res.write(piece)); };
      res.on('drain', more);
      more();
      return;
    }
    if (req.url === '/api/plain') { res.writeHead(502, { 'content-type': 'text/html' }); res.end('<html>bad gateway</html>'); return; }
    if (req.url === '/api/closing') { res.writeHead(503, { 'content-type': 'application/json' }); res.end('{"error":"Service Unavailable","message":"Service Unavailable","statusCode":503}'); return; }
    if (req.url === '/api/stopping') { res.writeHead(503, { 'content-type': 'application/json' }); res.end(JSON.stringify({ error: { code: 'shutting_down', message: 'the control plane is stopping; try again in a moment' } })); return; }
    if (req.url === '/api/busy') { res.writeHead(503, { 'content-type': 'application/json' }); res.end(JSON.stringify({ error: { code: 'unavailable', message: 'the database is unavailable for a moment' } })); return; }
    if (req.url === '/api/html-ok') { res.writeHead(200); res.end('<html>not json</html>'); return; }
    if (req.url === '/api/conflict') { res.writeHead(409, { 'content-type': 'application/json' }); res.end(JSON.stringify({ error: { code: 'hostname_taken', message: 'app_hostname "x" is already in use', requestId: 'r1' } })); return; }
    if (req.url === '/api/who') {
      if (req.headers.authorization !== 'Bearer good') { res.writeHead(401, { 'content-type': 'application/json' }); res.end(JSON.stringify({ error: { code: 'unauthorized', message: 'invalid token' } })); return; }
      res.writeHead(200, { 'content-type': 'application/json' }); res.end('{"ok":true}'); return;
    }
    res.writeHead(204); res.end();
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  base = `http://127.0.0.1:${(server.address() as { port: number }).port}`;
});
afterAll(() => new Promise<void>((r) => server.close(() => r())));

describe('API URL and token resolution', () => {
  it('--api > BERTH_API > last login > default; token from BERTH_TOKEN or the login of that URL', async () => {
    const t = await tempDir('berth-creds-');
    try {
      const env = { BERTH_CONFIG_DIR: join(t.dir, 'cfg') } as NodeJS.ProcessEnv;
      expect((await BerthClient.resolve({ env })).api).toBe('http://127.0.0.1:3000');
      await saveLogin('http://a.example:3000', { token: 'ta', created_at: 'now' }, env);
      await saveLogin('http://b.example:3000', { token: 'tb', created_at: 'now' }, env);
      expect(await BerthClient.resolve({ env })).toMatchObject({ api: 'http://b.example:3000', token: 'tb', tokenSource: 'login' });
      expect(await BerthClient.resolve({ env: { ...env, BERTH_API: 'http://a.example:3000/' } })).toMatchObject({ api: 'http://a.example:3000', token: 'ta' });
      expect(await BerthClient.resolve({ api: 'c.example:9', env: { ...env, BERTH_API: 'http://a.example:3000' } })).toMatchObject({ api: 'https://c.example:9', token: undefined });
      expect(await BerthClient.resolve({ env: { ...env, BERTH_TOKEN: 'env-token' } })).toMatchObject({ token: 'env-token', tokenSource: 'env' });
      await forgetLogin('http://b.example:3000', env);
      expect((await readCredentials(env)).current).toBe('http://a.example:3000');
      // a damaged file is "no logins", never a crash
      await writeFile(credentialsPath(env), '{not json');
      expect((await BerthClient.resolve({ env })).token).toBeUndefined();
    } finally {
      await t.cleanup();
    }
  });

  it('refuses API URLs that are not http(s) or carry credentials', () => {
    expect(normalizeApiUrl('127.0.0.1:3000')).toBe('http://127.0.0.1:3000');
    expect(normalizeApiUrl('localhost:3000')).toBe('http://localhost:3000');
    // a bare name off this machine is https: a password is not sent in clear by default
    expect(normalizeApiUrl('berth.example.com')).toBe('https://berth.example.com');
    expect(normalizeApiUrl('http://berth.example.com')).toBe('http://berth.example.com');
    expect(normalizeApiUrl('https://berth.example.com/base/')).toBe('https://berth.example.com/base');
    for (const bad of ['ftp://x', 'http://user:pw@x', 'http://x/?q=1', 'http://[', '::']) {
      expect(() => normalizeApiUrl(bad), bad).toThrow(ClientError);
    }
  });
});

describe('errors for a person', () => {
  const err = async (p: Promise<unknown>) => { try { await p; } catch (e) { return e as ClientError; } throw new Error('did not fail'); };

  it('not logged in: exit 3, says how to log in', async () => {
    const e = await err(new BerthClient(base, undefined, 'none').get('/api/who'));
    expect(e.exitCode).toBe(EXIT.auth);
    expect(e.message).toBe(`not logged in to ${base}. Run \`berth login --api ${base}\` (or set BERTH_TOKEN).`);
  });

  it('a refused token: exit 3, names where the token came from', async () => {
    const fromLogin = await err(new BerthClient(base, 'bad', 'login').get('/api/who'));
    expect(fromLogin.exitCode).toBe(EXIT.auth);
    expect(fromLogin.message).toContain('invalid token (401 from');
    expect(fromLogin.message).toContain('`berth login --api');
    const fromEnv = await err(new BerthClient(base, 'bad', 'env').get('/api/who'));
    expect(fromEnv.message).toContain('BERTH_TOKEN was refused');
  });

  it("the API's own 4xx message as it is, with status and code", async () => {
    const e = await err(new BerthClient(base, 'good').get('/api/conflict'));
    expect(e.exitCode).toBe(EXIT.failed);
    expect(e.message).toBe('app_hostname "x" is already in use (409 hostname_taken)');
    expect(e.api).toEqual({ status: 409, code: 'hostname_taken', requestId: 'r1' });
  });

  it('a control plane that is stopping (503 in its HTTP server\'s words) is said so, exit 4; the API\'s own 503 as it is', async () => {
    const e = await err(new BerthClient(base, 'good').get('/api/closing'));
    expect([e.exitCode, e.message]).toEqual([EXIT.unreachable, `the API at ${base} is not serving (503 on GET /api/closing): a control plane answers so while it stops or restarts; try again in a moment`]);
    const b = await err(new BerthClient(base, 'good').get('/api/busy'));
    expect([b.exitCode, b.message]).toEqual([EXIT.failed, 'the database is unavailable for a moment (503 unavailable)']);
    const s = await err(new BerthClient(base, 'good').get('/api/stopping'));
    expect([s.exitCode, s.message]).toEqual([EXIT.unreachable, 'the control plane is stopping; try again in a moment (503 shutting_down)']);
  });

  it('something that is not berth: a non-JSON error and a non-JSON success are said plainly', async () => {
    const e = await err(new BerthClient(base, 'good').get('/api/plain'));
    expect(e.message).toContain('GET /api/plain answered 502: <html>bad gateway</html> (502 http_502)');
    const o = await err(new BerthClient(base, 'good').get('/api/html-ok'));
    expect(o.message).toContain('is not JSON (is');
  });

  it('unreachable: exit 4, names the URL tried', async () => {
    const e = await err(new BerthClient('http://127.0.0.1:1', 'good').get('/api/who'));
    expect(e.exitCode).toBe(EXIT.unreachable);
    expect(e.message).toMatch(/^cannot reach the berth API at http:\/\/127\.0\.0\.1:1 \(ECONNREFUSED\)/);
  });

  it('a connection lost midway is not "unreachable": exit 1, says what broke', async () => {
    const e = await err(new BerthClient(base, 'good').post('/api/reset', { x: 1 }));
    expect(e.exitCode).toBe(EXIT.failed);
    expect(e.message).toMatch(/^the connection to the berth API at http:\/\/127\.0\.0\.1:\d+ broke during POST \/api\/reset \(/);
  });

  it('an answer without end is cut at 64 MiB with a message, not read until memory runs out', async () => {
    const e = await err(new BerthClient(base, 'good').get('/api/endless'));
    expect(e.message).toMatch(/answered GET \/api\/endless with more than 64 MiB/);
  });

  it('https spoken to a plain-http server says to give http://', async () => {
    const e = await err(new BerthClient(base.replace('http:', 'https:'), 'good').get('/api/who'));
    expect(e.exitCode).toBe(EXIT.unreachable);
    expect(e.message).toMatch(/cannot speak TLS with https:\/\/127\.0\.0\.1:\d+ .*give http:\/\/HOST:PORT/);
  });

  it('204 is undefined, a good answer is parsed', async () => {
    const c = new BerthClient(base, 'good');
    expect(await c.get('/api/who')).toEqual({ ok: true });
    expect(await c.delete('/api/anything')).toBeUndefined();
    await c.close();
  });
});
