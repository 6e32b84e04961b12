import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createRequire } from 'node:module';
import { connect } from 'node:net';
import { WebSocket, type MessageEvent } from 'undici';
import type * as UWS from 'uWebSockets.js';
import { freePort, putRoutes, route, startProxy, table, waitFor, type ProxyProc } from './harness.js';

const uws = createRequire(import.meta.url)('uWebSockets.js') as typeof UWS;

/** A real WebSocket upstream (uWS in this process): echoes, reports the handshake headers, closes on request. */
async function wsUpstream(name: string) {
  const port = await freePort();
  const seen: Array<Record<string, string>> = [];
  const app = uws.App().ws<{ headers: Record<string, string>; url: string }>('/*', {
    upgrade(res, req, ctx) {
      const headers: Record<string, string> = {};
      req.forEach((k, v) => { headers[k] = v; });
      seen.push(headers);
      const proto = req.getHeader('sec-websocket-protocol').split(',')[0]?.trim() ?? '';
      res.upgrade({ headers, url: req.getUrl() + (req.getQuery() ? `?${req.getQuery()}` : '') }, req.getHeader('sec-websocket-key'), proto, '', ctx);
    },
    open(ws) { ws.send(`hello from ${name} ${ws.getUserData().url}`); },
    message(ws, msg, isBinary) {
      const text = Buffer.from(msg).toString();
      if (!isBinary && text === 'close-me') { ws.end(4001, 'asked to'); return; }
      ws.send(msg, isBinary);
    },
  });
  app.get('/*', (res) => { res.end('plain'); });
  let token: UWS.us_listen_socket | false = false;
  await new Promise<void>((resolve) => app.listen('127.0.0.1', port, (t) => { token = t; resolve(); }));
  return { address: `127.0.0.1:${port}`, seen, close: () => { if (token) uws.us_listen_socket_close(token); } };
}

/** undici's WebSocket client ignores a Host header, so tests address routes by /apps/{host}/. */
function open(url: string, host: string, protocols?: string[]): Promise<{ ws: WebSocket; messages: Array<string | ArrayBuffer>; closed: Promise<{ code: number; reason: string }> }> {
  return new Promise((resolve, reject) => {
    const ws = new WebSocket(url, { headers: { host, 'x-custom': 'yes', forwarded: 'for=127.0.0.1', 'x-real-ip': '127.0.0.1', 'x-forwarded-host': 'evil.example' }, protocols });
    ws.binaryType = 'arraybuffer';
    const messages: Array<string | ArrayBuffer> = [];
    const closed = new Promise<{ code: number; reason: string }>((r) => ws.addEventListener('close', (e) => r({ code: e.code, reason: e.reason })));
    ws.addEventListener('message', (e: MessageEvent) => messages.push(e.data));
    ws.addEventListener('open', () => resolve({ ws, messages, closed }));
    ws.addEventListener('error', () => reject(new Error('websocket failed')));
  });
}

/** A WebSocket handshake on a raw socket (sets the Host header, which undici's client cannot). */
function rawHandshake(port: number, host: string, path = '/', extra = ''): Promise<string> {
  return new Promise((resolve) => {
    const s = connect(port, '127.0.0.1');
    let out = '';
    s.on('data', (c) => { out += c.toString('latin1'); });
    s.on('close', () => resolve(out));
    s.on('error', () => resolve(out));
    s.write(`GET ${path} HTTP/1.1\r\nHost: ${host}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n${extra}\r\n`);
    setTimeout(() => s.destroy(), 600);
  });
}

let p: ProxyProc;
let up: Awaited<ReturnType<typeof wsUpstream>>;
beforeAll(async () => {
  up = await wsUpstream('ws-a');
  p = await startProxy(table([
    route('ws', ['ws.test'], [up.address]),
    route('dead', ['dead.test'], ['127.0.0.1:1'], { retry: { attempts: 0 } }),
    route('capped', ['capped.test'], [up.address], { concurrency: { perEndpoint: 1, maxQueue: 10, queueTimeoutMs: 4000 } }),
  ]));
});
afterAll(async () => {
  await p?.stop();
  up?.close();
});

describe('WebSocket pass-through', () => {
  it('relays text and binary both ways with forwarded headers and the subprotocol', async () => {
    const c = await open(`ws://127.0.0.1:${p.port}/apps/ws.test/chat?room=1`, 'ws.test', ['v2.chat', 'v1.chat']);
    expect(c.ws.protocol).toBe('v2.chat');
    await waitFor(() => c.messages.length >= 1);
    expect(c.messages[0]).toBe('hello from ws-a /chat?room=1');
    c.ws.send('ping text');
    c.ws.send(new Uint8Array([1, 2, 3, 250]));
    await waitFor(() => c.messages.length >= 3);
    expect(c.messages[1]).toBe('ping text');
    expect([...new Uint8Array(c.messages[2] as ArrayBuffer)]).toEqual([1, 2, 3, 250]);
    const h = up.seen[up.seen.length - 1];
    expect(h.host).toBe('ws.test');
    expect(h['x-custom']).toBe('yes');
    expect([h.forwarded, h['x-real-ip']]).toEqual([undefined, undefined]);
    expect(h['x-forwarded-host']).toBe('ws.test');
    expect(h['x-forwarded-for']).toBe('127.0.0.1');
    expect(h.via).toBe('1.1 berth');
    expect(h['x-request-id']).toBeTruthy();
    // no compression is offered upstream (undici's client offers permessage-deflate unless told not to)
    expect(h['sec-websocket-extensions']).toBeUndefined();
    c.ws.close(1000, 'bye');
    expect((await c.closed).code).toBe(1000);
  });

  it('passes the upstream close code to the client', async () => {
    const c = await open(`ws://127.0.0.1:${p.port}/apps/ws.test/`, 'ws.test');
    c.ws.send('close-me');
    const closed = await c.closed;
    expect(closed.code).toBe(4001);
    expect(closed.reason).toBe('asked to');
  });

  it('routes the upgrade by Host header', async () => {
    const out = await rawHandshake(p.port, 'WS.test:8080', '/by-host');
    expect(out).toMatch(/^HTTP\/1.1 101/);
    // the first frame: the upstream's greeting, unmasked text
    expect(out).toContain('hello from ws-a /by-host');
    expect(up.seen[up.seen.length - 1].host).toBe('WS.test:8080');
  });

  it('on /apps/{host}/ the control plane\'s sign-in cookie is not forwarded with the upgrade; on the app\'s own name it is', async () => {
    const via = await rawHandshake(p.port, '127.0.0.1', '/apps/ws.test/c', 'Cookie: a=1; berth_session=secret; b=2\r\n');
    expect(via).toMatch(/^HTTP\/1\.1 101/);
    expect(up.seen[up.seen.length - 1].cookie).toBe('a=1; b=2');
    const own = await rawHandshake(p.port, 'ws.test', '/c', 'Cookie: a=1; berth_session=mine\r\n');
    expect(own).toMatch(/^HTTP\/1\.1 101/);
    expect(up.seen[up.seen.length - 1].cookie).toBe('a=1; berth_session=mine');
  });

  it('works through /apps/{host}/ too', async () => {
    const c = await open(`ws://127.0.0.1:${p.port}/apps/ws.test/x`, 'other');
    await waitFor(() => c.messages.length >= 1);
    expect(c.messages[0]).toBe('hello from ws-a /x');
    c.ws.close();
  });

  it('answers the upgrade with 404 for unknown hosts and 502 when the upstream refuses', async () => {
    await expect(open(`ws://127.0.0.1:${p.port}/apps/nope.test/`, 'x')).rejects.toThrow();
    await expect(open(`ws://127.0.0.1:${p.port}/apps/dead.test/`, 'x')).rejects.toThrow();
    const notFound = await rawHandshake(p.port, 'nope.test');
    expect(notFound).toMatch(/^HTTP\/1.1 404/);
    expect(notFound).toContain('x-berth-error: no_route');
    expect(await rawHandshake(p.port, 'dead.test')).toMatch(/^HTTP\/1.1 502/);
    // in-flight accounting returns to zero
    await waitFor(async () => {
      const s = (await (await fetch(`${p.admin}/stats`)).json()) as { global: { inflight: number } };
      return s.global.inflight === 0;
    }, 5000);
  });

  it('an upgrade whose target the upstream client would rewrite (#, \\, dot segments) is 400, not a 502 nor another path', async () => {
    const before = up.seen.length;
    for (const target of ['/a#frag', '/a/../admin', '/a/%2E%2e/admin', '/a/./b', '/a\\b', '/..']) {
      const out = await rawHandshake(p.port, 'ws.test', target);
      expect(out, target).toMatch(/^HTTP\/1.1 400/);
      expect(out, target).toContain('x-berth-error: bad_request_target');
    }
    expect(up.seen.length).toBe(before);
    // dots that are not segments are fine
    expect(await rawHandshake(p.port, 'ws.test', '/a/..b/.c?x=/../')).toMatch(/^HTTP\/1.1 101/);
  });

  it('a WebSocket that closes frees its slot for a request waiting on the concurrency cap at once', async () => {
    const c = await open(`ws://127.0.0.1:${p.port}/apps/capped.test/`, 'x');
    await waitFor(() => c.messages.length >= 1);
    const t0 = Date.now();
    const waiting = fetch(`http://127.0.0.1:${p.port}/apps/capped.test/plain`).then(async (r) => [r.status, await r.text(), Date.now() - t0]);
    await new Promise((r) => setTimeout(r, 300));
    c.ws.close(1000);
    const [status, body, ms] = await waiting;
    expect([status, body]).toEqual([200, 'plain']);
    expect(ms).toBeLessThan(2000); // not the queue's 4 s timeout
  });

  it('plain HTTP keeps working on the same listener, and table swaps keep WebSockets open', async () => {
    const c = await open(`ws://127.0.0.1:${p.port}/apps/ws.test/`, 'ws.test');
    expect((await putRoutes(p, table([route('ws', ['ws.test'], [up.address])], 2))).status).toBe(200);
    c.ws.send('still here');
    await waitFor(() => c.messages.includes('still here'));
    c.ws.close();
  });
});
