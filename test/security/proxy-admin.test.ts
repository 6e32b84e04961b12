/**
 * The admin listener: no request target can crash it; it changes nothing without the token and
 * refuses what a web page could make a browser send (a drive-by POST with text/plain, a
 * cross-site fetch, a DNS-rebound host name).
 */
import { statSync } from 'node:fs';
import { Readable } from 'node:stream';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { request } from 'undici';
import { adminToken, get, route, startProxy, startUpstream, table, type ProxyProc, type Upstream } from '../proxy/harness.js';
import { rawHttp } from '../helpers/raw-http.js';

let up: Upstream;
let p: ProxyProc;
beforeAll(async () => {
  up = await startUpstream('app');
  p = await startProxy(table([route('app', ['app.test'], [up.address])]));
});
afterAll(async () => {
  await p?.stop();
  await up?.close();
});

async function admin(path: string, opts: { method?: string; headers?: Record<string, string>; body?: string } = {}): Promise<{ status: number; body: string }> {
  const r = await request(`${p.admin}${path}`, { method: (opts.method ?? 'GET') as 'GET', headers: opts.headers, body: opts.body });
  return { status: r.statusCode, body: await r.body.text() };
}
const newTable = JSON.stringify(table([route('evil', ['app.test'], ['127.0.0.1:1'])], 99));

describe('admin listener: request targets', () => {
  it.each([
    'GET // HTTP/1.1',
    'GET //routes HTTP/1.1',
    'GET http://x/routes HTTP/1.1',
    'GET * HTTP/1.1',
    'OPTIONS * HTTP/1.1',
    'GET /%zz%00 HTTP/1.1',
    'GET ?a=b HTTP/1.1',
  ])('%s is one 400 (or 404), never a crash', async (line) => {
    const r = await rawHttp(p.adminPort, `${line}\r\nHost: 127.0.0.1\r\n\r\n`, 1500, 1);
    expect(r.statuses[0]).toBeGreaterThanOrEqual(400);
    expect(r.statuses[0]).toBeLessThan(500);
    expect(p.proc.exitCode).toBeNull();
    expect((await admin('/healthz')).status).toBe(200);
    expect((await get(p, 'app.test')).status).toBe(200);
  });
});

describe('admin listener: writes', () => {
  it('needs the bearer token even on loopback; berth keeps a generated one in <data-dir>/admin-token (0600)', async () => {
    const token = adminToken(p);
    expect(token.length).toBeGreaterThanOrEqual(32);
    expect(statSync(join(p.dir, 'admin-token')).mode & 0o777).toBe(0o600);
    const none = await admin('/routes', { method: 'PUT', headers: { 'content-type': 'application/json' }, body: newTable });
    expect(none.status).toBe(401);
    const wrong = await admin('/routes', { method: 'PUT', headers: { 'content-type': 'application/json', authorization: 'Bearer nope' }, body: newTable });
    expect(wrong.status).toBe(401);
    expect((await get(p, 'app.test')).status).toBe(200); // still the old table
  });

  it('refuses a text/plain body (what a cross-site form or no-cors fetch can send)', async () => {
    const r = await admin('/routes', { method: 'POST', headers: { 'content-type': 'text/plain', authorization: `Bearer ${adminToken(p)}` }, body: newTable });
    expect(r.status).toBe(415);
    expect(JSON.parse(r.body).error.code).toBe('unsupported_media_type');
  });

  it('refuses requests carrying Origin or a cross-site Sec-Fetch-Site, token or not', async () => {
    const auth = { authorization: `Bearer ${adminToken(p)}`, 'content-type': 'application/json' };
    const variants: Array<Record<string, string>> = [{ origin: 'http://evil.example' }, { origin: 'null' }, { 'sec-fetch-site': 'cross-site' }, { 'sec-fetch-site': 'same-site' }];
    for (const h of variants) {
      const r = await admin('/routes', { method: 'PUT', headers: { ...auth, ...h }, body: newTable });
      expect(r.status, JSON.stringify(h)).toBe(403);
      const read = await admin('/routes', { headers: h });
      expect(read.status, JSON.stringify(h)).toBe(403);
    }
    expect((await get(p, 'app.test')).status).toBe(200);
  });

  it('answers reads only to an IP or localhost Host without the token (DNS rebinding)', async () => {
    expect((await admin('/routes', { headers: { host: 'rebind.evil.example' } })).status).toBe(403);
    expect((await admin('/routes', { headers: { host: 'localhost:9901' } })).status).toBe(200);
    expect((await admin('/metrics', { headers: { host: 'rebind.evil.example', authorization: `Bearer ${adminToken(p)}` } })).status).toBe(200);
  });

  it('a table past 64 MiB is answered 413 too_large and the connection closed, by its Content-Length or as it comes', async () => {
    const auth = `Bearer ${adminToken(p)}`;
    const declared = await rawHttp(p.adminPort, `PUT /routes HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: ${auth}\r\nContent-Type: application/json\r\nContent-Length: 70000000\r\n\r\n{"version":1`, 3000, 1);
    expect(declared.statuses).toEqual([413]);
    expect(declared.text).toContain('too_large');
    // chunked: no length to go by, refused once past 64 MiB came. The client sends one byte past it
    // and then waits (a client that went on writing would race the close: its write would meet
    // the reset before it read the answer)
    const big = Buffer.alloc(1024 * 1024, 32);
    let stop!: () => void;
    const waiting = new Promise<void>((r) => { stop = r; });
    const r = request(`${p.admin}/routes`, {
      method: 'PUT', headers: { 'content-type': 'application/json', authorization: auth },
      body: Readable.from((async function* () {
        for (let i = 0; i < 64; i++) yield big;
        yield Buffer.from(' ');
        await waiting;
      })()),
    });
    try {
      const res = await r;
      expect(res.statusCode).toBe(413);
      expect(await res.body.text()).toContain('too_large');
    } finally {
      stop();
    }
  });

  it('applies a table with the token and application/json', async () => {
    const t = table([route('app', ['app.test', 'app2.test'], [up.address])], 7);
    const r = await admin('/routes', { method: 'PUT', headers: { 'content-type': 'application/json; charset=utf-8', authorization: `Bearer ${adminToken(p)}` }, body: JSON.stringify(t) });
    expect(r.status).toBe(200);
    expect((await get(p, 'app2.test')).status).toBe(200);
  });
});
