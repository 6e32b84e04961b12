/**
 * Session affinity (RouteSpec.affinity, Cloud Run's --session-affinity): the proxy hands out a
 * `berth-affinity` cookie naming the endpoint that served, sends later requests carrying it to that
 * endpoint while it takes traffic, keeps a session on its revision on a split host, and falls
 * back to balancing (with a new cookie) when the endpoint is gone. Routes without it ignore it.
 */
import { createRequire } from 'node:module';
import { connect } from 'node:net';
import type * as UWS from 'uWebSockets.js';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { affinityKey } from '../../proxy/server/admission.js';
import { freePort, get, putRoutes, route, startProxy, startUpstream, table, type ProxyProc, type Upstream } from './harness.js';

const ups: Upstream[] = [];
let p: ProxyProc;
const uws = createRequire(import.meta.url)('uWebSockets.js') as typeof UWS;
const wsUps: { address: string; close(): void }[] = [];

/** A WebSocket upstream (uWS in this process) that greets with its name. */
async function wsUpstream(name: string): Promise<{ address: string; close(): void }> {
  const port = await freePort();
  const app = uws.App().ws('/*', {
    upgrade(res, req, ctx) { res.upgrade({}, req.getHeader('sec-websocket-key'), '', '', ctx); },
    open(ws) { ws.send(name); },
  });
  let token: UWS.us_listen_socket | false = false;
  await new Promise<void>((resolve) => app.listen('127.0.0.1', port, (t) => { token = t; resolve(); }));
  return { address: `127.0.0.1:${port}`, close: () => { if (token) uws.us_listen_socket_close(token); (app as unknown as { close(): void }).close(); } };
}

/** The greeting of a WebSocket opened through the proxy with a Cookie (a raw handshake: it sets Host). */
function wsGreeting(host: string, cookie: string): Promise<string> {
  return new Promise((resolve, reject) => {
    const s = connect(p.port, '127.0.0.1', () => s.write(`GET / HTTP/1.1\r\nHost: ${host}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n` +
      `Cookie: ${cookie}\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n`));
    let got = Buffer.alloc(0);
    s.on('data', (d: Buffer) => {
      got = Buffer.concat([got, d]);
      const end = got.indexOf('\r\n\r\n');
      if (end === -1 || got.length < end + 6) return;
      if (!got.subarray(0, 12).toString().startsWith('HTTP/1.1 101')) { s.destroy(); reject(new Error(got.toString().split('\r\n')[0])); return; }
      const len = got[end + 5] & 0x7f; // a short unmasked text frame from the server
      if (got.length < end + 6 + len) return;
      s.destroy();
      resolve(got.subarray(end + 6, end + 6 + len).toString());
    });
    s.on('error', reject);
    s.setTimeout(3000, () => { s.destroy(); reject(new Error('no greeting')); });
  });
}

/** The berth-affinity value a response sets (undefined: none), and its attributes. */
function cookieOf(headers: Record<string, string | string[] | undefined>): { value: string; attrs: string } | undefined {
  const all = ([] as string[]).concat(headers['set-cookie'] ?? []);
  const c = all.find((v) => v.startsWith('berth-affinity='));
  if (c === undefined) return undefined;
  const semi = c.indexOf(';');
  return { value: c.slice('berth-affinity='.length, semi), attrs: c.slice(semi) };
}
const served = (r: { headers: Record<string, string | string[] | undefined> }) => String(r.headers['x-upstream']);

beforeAll(async () => {
  for (const name of ['a', 'b', 'c', 'v2']) {
    ups.push(await startUpstream(name, name === 'a' ? (req, res) => {
      // an app that sets its own cookie too: both reach the client
      res.writeHead(200, { 'x-upstream': 'a', 'set-cookie': 'app=1; Path=/' });
      res.end('a');
    } : undefined));
  }
  wsUps.push(await wsUpstream('w0'), await wsUpstream('w1'));
  p = await startProxy(table([
    route('ws', ['ws.test'], wsUps.map((w) => w.address), { affinity: true }),
    route('sticky', ['sticky.test'], [ups[0].address, ups[1].address, ups[2].address], { affinity: true }),
    // the first endpoint refuses connections
    route('dead', ['dead.test'], ['127.0.0.1:1', ups[1].address], { affinity: true }),
    route('plain', ['plain.test'], [ups[0].address, ups[1].address, ups[2].address]),
    // one app split 50/50 between two revisions, both with affinity
    route('rev1', ['split.test'], [ups[0].address, ups[1].address], { affinity: true, trafficWeight: 50 }),
    route('rev2', ['split.test'], [ups[3].address], { affinity: true, trafficWeight: 50 }),
  ]));
});
afterAll(async () => {
  await p?.stop();
  for (const u of ups) await u.close();
  for (const w of wsUps) w.close();
});

describe('session affinity', () => {
  it('hands out a cookie naming the endpoint, and keeps the client there', async () => {
    const first = await get(p, 'sticky.test', '/');
    expect(first.status).toBe(200);
    const c = cookieOf(first.headers)!;
    expect(c.value).toMatch(/^sticky-e[012]$/);
    expect(c.attrs).toBe('; Path=/; Max-Age=2592000; HttpOnly; SameSite=Lax');
    const where = served(first);
    for (let i = 0; i < 12; i++) {
      const r = await get(p, 'sticky.test', '/', { headers: { cookie: `theme=dark; berth-affinity=${c.value}; other=x` } });
      expect(served(r)).toBe(where);
      expect(cookieOf(r.headers)).toBeUndefined(); // already right: not set again
    }
    // each endpoint its own sessions
    for (const [i, name] of ['a', 'b', 'c'].entries()) {
      expect(served(await get(p, 'sticky.test', '/', { headers: { cookie: `berth-affinity=sticky-e${i}` } }))).toBe(name);
    }
  });

  it("keeps the app's own Set-Cookie beside it", async () => {
    const r = await get(p, 'sticky.test', '/', { headers: { cookie: 'berth-affinity=sticky-e0' } });
    expect(served(r)).toBe('a');
    expect(([] as string[]).concat(r.headers['set-cookie'] ?? [])).toEqual(['app=1; Path=/']);
    const fresh = await get(p, 'sticky.test', '/', { headers: { cookie: 'berth-affinity=sticky-e1' } });
    expect(served(fresh)).toBe('b');
  });

  it('without a cookie, or with one naming no endpoint of the route, balances and sets a new cookie', async () => {
    const seen = new Set<string>();
    for (let i = 0; i < 6; i++) {
      const r = await get(p, 'sticky.test', '/', { headers: i % 2 ? { cookie: 'berth-affinity=plain-e0' } : {} });
      seen.add(served(r));
      expect(cookieOf(r.headers)?.value).toBe(`sticky-e${['a', 'b', 'c'].indexOf(served(r))}`);
    }
    expect(seen.size).toBe(3);
    for (const junk of ['', '%%%', 'x'.repeat(5000), 'sticky-e0"', 'sticky-e0,evil']) {
      const r = await get(p, 'sticky.test', '/', { headers: { cookie: `berth-affinity=${junk}` } });
      expect(r.status, junk.slice(0, 20)).toBe(200);
    }
  });

  it('a route without affinity ignores the cookie and sets none', async () => {
    const seen = new Set<string>();
    for (let i = 0; i < 6; i++) {
      const r = await get(p, 'plain.test', '/', { headers: { cookie: 'berth-affinity=plain-e0' } });
      expect(cookieOf(r.headers)).toBeUndefined();
      seen.add(served(r));
    }
    expect(seen.size).toBe(3);
  });

  it('on a split host a session stays on its revision', async () => {
    const first = await get(p, 'split.test', '/');
    const c = cookieOf(first.headers)!;
    const rev = c.value.startsWith('rev2') ? 'v2' : null;
    for (let i = 0; i < 10; i++) {
      const r = await get(p, 'split.test', '/', { headers: { cookie: `berth-affinity=${c.value}` } });
      if (rev) expect(served(r)).toBe('v2');
      else expect(served(r)).toBe(served(first));
    }
    // new sessions still split 50/50
    const counts = new Map<string, number>();
    for (let i = 0; i < 20; i++) {
      const r = await get(p, 'split.test', '/');
      const k = served(r) === 'v2' ? 'rev2' : 'rev1';
      counts.set(k, (counts.get(k) ?? 0) + 1);
    }
    expect(counts.get('rev1')).toBe(10);
    expect(counts.get('rev2')).toBe(10);
    // a session on rev2 while rev1's endpoints come and go
    expect(served(await get(p, 'split.test', '/', { headers: { cookie: 'berth-affinity=rev2-e0' } }))).toBe('v2');
  });

  it('when its endpoint cannot take the request, another does and the cookie moves', async () => {
    for (let i = 0; i < 3; i++) {
      const r = await get(p, 'dead.test', '/', { headers: { cookie: 'berth-affinity=dead-e0' } });
      expect(r.status).toBe(200);
      expect(served(r)).toBe('b');
      expect(cookieOf(r.headers)?.value).toBe('dead-e1');
    }
  });

  it('when its endpoint is gone from the table, the client is balanced again and gets a new cookie', async () => {
    await putRoutes(p, table([
      route('sticky', ['sticky.test'], [ups[1].address, ups[2].address], { affinity: true }),
      route('ws', ['ws.test'], wsUps.map((w) => w.address), { affinity: true }),
    ], 2));
    // endpoint ids follow their position: sticky-e0 is now b's
    const r = await get(p, 'sticky.test', '/', { headers: { cookie: 'berth-affinity=sticky-e2' } });
    expect(r.status).toBe(200);
    expect(cookieOf(r.headers)?.value).toMatch(/^sticky-e[01]$/);
  });

  it('a WebSocket goes to the instance its cookie names (the page that opened it set it)', async () => {
    for (let i = 0; i < 4; i++) {
      expect(await wsGreeting('ws.test', 'berth-affinity=ws-e1')).toBe('w1');
      expect(await wsGreeting('ws.test', 'a=b; berth-affinity=ws-e0')).toBe('w0');
    }
    const seen = new Set<string>();
    for (let i = 0; i < 4; i++) seen.add(await wsGreeting('ws.test', 'berth-affinity=nobody'));
    expect(seen).toEqual(new Set(['w0', 'w1']));
  });

  it('reads its own cookie only', () => {
    expect(affinityKey('berth-affinity=x1')).toBe('x1');
    expect(affinityKey('a=1; berth-affinity=x2 ; b=2')).toBe('x2');
    expect(affinityKey('a=1;berth-affinity=x3')).toBe('x3');
    expect(affinityKey('xberth-affinity=no; berth-affinity=yes')).toBe('yes');
    expect(affinityKey('xberth-affinity=no')).toBe('');
    expect(affinityKey('')).toBe('');
    expect(affinityKey(`berth-affinity=${'y'.repeat(2049)}`)).toBe('');
  });
});
