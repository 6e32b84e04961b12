/**
 * Inputs found by a crash/hang/leak hunt against a real proxy (raw sockets, real upstreams):
 * each one used to kill the process, take a healthy route down, or grow memory without bound.
 */
import { createHash } from 'node:crypto';
import { connect, createServer, type Server, type Socket } from 'node:net';
import { once } from 'node:events';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { get, route, rss, startProxy, startUpstream, table, type ProxyProc, type Upstream } from '../proxy/harness.js';

/** One request on a raw socket; resolves with what came back when the socket closes or after `ms`. */
function raw(port: number, data: string, ms = 1500): Promise<string> {
  return new Promise((resolve) => {
    const s = connect(port, '127.0.0.1', () => s.write(data));
    let got = '';
    const t = setTimeout(() => { s.destroy(); resolve(got); }, ms);
    s.on('data', (c) => { got += c.toString('latin1'); });
    s.on('error', () => undefined);
    s.on('close', () => { clearTimeout(t); resolve(got); });
  });
}

/** A WebSocket frame (masked, as a client sends it). */
function frame(opcode: number, payload: Buffer): Buffer {
  const n = payload.length;
  const head = n < 126 ? Buffer.from([0x80 | opcode, 0x80 | n]) : Buffer.alloc(n < 65536 ? 4 : 10);
  if (n >= 126 && n < 65536) { head[0] = 0x80 | opcode; head[1] = 0x80 | 126; head.writeUInt16BE(n, 2); }
  if (n >= 65536) { head[0] = 0x80 | opcode; head[1] = 0x80 | 127; head.writeBigUInt64BE(BigInt(n), 2); }
  return Buffer.concat([head, Buffer.alloc(4), payload]); // mask 0: the payload as is
}

/** A WebSocket app that accepts the upgrade and then never reads another byte. */
async function deafWsUpstream(): Promise<{ server: Server; address: string; sockets: Socket[] }> {
  const sockets: Socket[] = [];
  const server = createServer((s) => {
    sockets.push(s);
    s.on('error', () => undefined);
    let head = '';
    const onData = (c: Buffer) => {
      head += c.toString('latin1');
      if (!head.includes('\r\n\r\n')) return;
      s.off('data', onData);
      s.pause();
      const key = /sec-websocket-key: *(\S+)/i.exec(head)![1];
      const accept = createHash('sha1').update(key + '258EAFA5-E914-47DA-95CA-C5AB0DC85B11').digest('base64');
      s.write(`HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: ${accept}\r\n\r\n`);
    };
    s.on('data', onData);
  });
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  const port = (server.address() as { port: number }).port;
  return { server, address: `127.0.0.1:${port}`, sockets };
}

/** A client WebSocket on a raw socket, once the proxy answered 101. */
function wsClient(port: number, host: string): Promise<Socket> {
  return new Promise((resolve, reject) => {
    const s = connect(port, '127.0.0.1', () => s.write(`GET / HTTP/1.1\r\nHost: ${host}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n`));
    let head = '';
    const onData = (c: Buffer) => {
      head += c.toString('latin1');
      if (!head.includes('\r\n\r\n')) return;
      s.off('data', onData);
      if (head.startsWith('HTTP/1.1 101')) resolve(s); else reject(new Error(head));
    };
    s.on('data', onData);
    s.on('error', () => undefined);
  });
}

/** Requests one after another on one keep-alive connection (each sent once the previous head is in). */
function sequential(port: number, reqs: string[], ms = 3000): Promise<string[]> {
  return new Promise((resolve) => {
    const s = connect(port, '127.0.0.1');
    const heads: string[] = [];
    let buf = '';
    let i = 0;
    const done = () => { clearTimeout(t); s.destroy(); resolve(heads); };
    const t = setTimeout(done, ms);
    s.on('connect', () => s.write(reqs[i++]));
    s.on('data', (c) => {
      buf += c.toString('latin1');
      const end = buf.indexOf('\r\n\r\n');
      if (end < 0) return;
      heads.push(buf.slice(0, end));
      buf = ''; // HEAD: no body follows
      if (i < reqs.length) s.write(reqs[i++]); else done();
    });
    s.on('error', () => undefined);
    s.on('close', done);
  });
}

let up: Upstream;
let lengthy: Upstream;
let deaf: Awaited<ReturnType<typeof deafWsUpstream>>;
let p: ProxyProc;
beforeAll(async () => {
  up = await startUpstream('ok');
  deaf = await deafWsUpstream();
  // an app that says Content-Length on HEAD too (as nginx, express and most servers do)
  lengthy = await startUpstream('lengthy', (req, res) => {
    res.writeHead(200, { 'content-length': '5', 'content-type': 'text/plain' });
    res.end(req.method === 'HEAD' ? undefined : 'hello');
  });
  p = await startProxy(table([
    route('ok', ['ok.test'], [up.address]),
    route('deaf', ['deaf.test'], [deaf.address]),
    route('lengthy', ['lengthy.test'], [lengthy.address], { circuitBreaker: { consecutiveFailures: 1, openMs: 600_000 }, fallbackCache: { ttlMs: 600_000 } }),
  ]));
});
afterAll(async () => {
  await p?.stop();
  await up?.close();
  await lengthy?.close();
  for (const s of deaf?.sockets ?? []) s.destroy();
  deaf?.server.close();
});

describe('CONNECT is refused, never forwarded', () => {
  it('three CONNECTs do not open the breaker of a healthy route (they used to: the app resets a CONNECT)', async () => {
    for (let i = 0; i < 5; i++) {
      const r = await raw(p.port, 'CONNECT / HTTP/1.1\r\nHost: ok.test\r\n\r\n');
      expect(r).toMatch(/^HTTP\/1\.1 400 /);
      expect(r).toContain('x-berth-error: connect_method');
    }
    const hits = up.hits;
    const r = await get(p, 'ok.test', '/');
    expect(r.status).toBe(200);
    expect(up.hits).toBe(hits + 1);
    expect(p.proc.exitCode).toBeNull();
  });
});

describe('WebSocket messages to an app that does not read them', () => {
  it('the client is disconnected once the app is 4 MiB behind, not buffered without bound (1.8 GB in 8 s before)', async () => {
    const before = await rss(p.proc.pid!);
    const c = await wsClient(p.port, 'deaf.test');
    const closed = once(c, 'close');
    const mib = frame(2, Buffer.alloc(1 << 20, 7));
    let sent = 0;
    while (!c.destroyed && sent < 256) {
      if (!c.write(mib)) await Promise.race([once(c, 'drain'), closed, new Promise((r) => setTimeout(r, 2000))]);
      sent++;
    }
    await Promise.race([closed, new Promise((r) => setTimeout(r, 5000))]);
    expect(c.destroyed || c.readableEnded).toBe(true);
    expect(sent).toBeLessThan(128);
    // the app's connection is dropped too (what was queued for it is freed): reading now, the
    // app finds the end of it
    const app = deaf.sockets.at(-1)!;
    const ended = new Promise<void>((r) => { app.on('close', () => r()); app.on('end', () => r()); });
    app.resume();
    await Promise.race([ended, new Promise((_, rej) => setTimeout(() => rej(new Error('the app connection was kept open')), 3000))]);
    expect(await rss(p.proc.pid!) - before).toBeLessThan(150 * 1024 * 1024);
    expect((await get(p, 'ok.test', '/')).status).toBe(200);
  });

  it('a client that closes after writing: the app gets a few seconds to finish the close, then its connection is dropped', async () => {
    const c = await wsClient(p.port, 'deaf.test');
    const n = deaf.sockets.length;
    for (let i = 0; i < 3; i++) c.write(frame(2, Buffer.alloc(1 << 20, 7)));
    c.write(frame(8, Buffer.from([0x03, 0xe8])));
    await new Promise((r) => setTimeout(r, 500));
    c.destroy();
    const app = deaf.sockets[n - 1];
    app.resume(); // reads now, but never answers the close
    const end = new Promise<void>((r) => { app.on('close', () => r()); app.on('end', () => r()); });
    await Promise.race([end, new Promise((_, rej) => setTimeout(() => rej(new Error('the app connection was kept open')), 12_000))]);
    expect(p.proc.exitCode).toBeNull();
  }, 20_000);
});

describe('HEAD answered with a Content-Length', () => {
  const head = 'HEAD /page HTTP/1.1\r\nHost: lengthy.test\r\n\r\n';
  // endWithoutBody(n > 0) left the response pending in uWS: the next request on the connection was
  // closed unanswered, and the connection was never idle-timed out (held for ever by any client)
  it('by the app: the connection serves the next request', async () => {
    const heads = await sequential(p.port, [head, head, 'GET / HTTP/1.1\r\nHost: ok.test\r\n\r\n']);
    expect(heads.map((h) => h.split('\r\n')[0])).toEqual(['HTTP/1.1 200 OK', 'HTTP/1.1 200 OK', 'HTTP/1.1 200 OK']);
    expect(heads[0].toLowerCase()).toContain('content-length: 5');
  });

  it('from the fallback cache: the same', async () => {
    expect((await get(p, 'lengthy.test', '/page')).body).toBe('hello');
    await lengthy.close();
    try {
      expect((await get(p, 'lengthy.test', '/page')).headers['x-berth-fallback']).toBe('hit'); // the breaker opens
      const heads = await sequential(p.port, [head, head]);
      expect(heads.map((h) => h.split('\r\n')[0])).toEqual(['HTTP/1.1 200 OK', 'HTTP/1.1 200 OK']);
      expect(heads[1]).toContain('x-berth-fallback: hit');
      expect(heads[1].toLowerCase()).toContain('content-length: 5');
    } finally {
      lengthy = await startUpstream('lengthy', undefined, Number(lengthy.address.split(':')[1]));
    }
    expect(p.proc.exitCode).toBeNull();
  });
});
