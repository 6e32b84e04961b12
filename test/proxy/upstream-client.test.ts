/**
 * berth's upstream client against upstreams that behave the ways real ones do: short keep-alive
 * timeouts, Connection: close, bodies delimited by the end of the connection, bare-LF heads
 * (busybox httpd CGI), a full connection pool.
 */
import { createServer as createNetServer, type Server as NetServer } from 'node:net';
import { once } from 'node:events';
import { afterAll, afterEach, describe, expect, it } from 'vitest';
import { get, route, startProxy, startUpstream, table, type ProxyProc } from './harness.js';

const cleanup: Array<() => Promise<unknown> | void> = [];
afterEach(async () => {
  while (cleanup.length) await cleanup.pop()!();
});
let p: ProxyProc | null = null;
afterAll(async () => { await p?.stop(); });

async function rawUpstream(answer: (req: string) => string, closeAfter = false): Promise<{ address: string; requests: number }> {
  const state = { address: '', requests: 0 };
  const sockets = new Set<import('node:net').Socket>();
  const srv: NetServer = createNetServer((c) => {
    sockets.add(c);
    c.on('close', () => sockets.delete(c));
    c.on('data', (d: Buffer) => {
      state.requests++;
      c.write(answer(d.toString('latin1')));
      if (closeAfter) c.end();
    });
    c.on('error', () => {});
  });
  srv.listen(0, '127.0.0.1');
  await once(srv, 'listening');
  state.address = `127.0.0.1:${(srv.address() as { port: number }).port}`;
  cleanup.push(() => new Promise<void>((r) => {
    for (const c of sockets) c.destroy();
    srv.close(() => r());
  }));
  return state;
}

describe('berth upstream client', () => {
  it('an upstream that closes idle keep-alive connections quickly costs no failed request, POST included', async () => {
    const up = await startUpstream('short', (req, res) => {
      let n = 0;
      req.on('data', (c: Buffer) => (n += c.length));
      req.on('end', () => { res.writeHead(200, { 'content-length': String(String(n).length) }); res.end(String(n)); });
    });
    up.server.keepAliveTimeout = 150;
    cleanup.push(() => up.close());
    p ??= await startProxy(table([]));
    const { putRoutes } = await import('./harness.js');
    expect((await putRoutes(p, table([route('short', ['short.test'], [up.address])], Date.now()))).status).toBe(200);
    for (let i = 0; i < 6; i++) {
      const r = await get(p, 'short.test', '/', { method: 'POST', body: 'hello' });
      expect(r.status).toBe(200);
      expect(r.body).toBe('5');
      await new Promise((res) => setTimeout(res, 200)); // the upstream has closed the idle connection by now
    }
  });

  it('an upstream that ends each connection right after a keep-alive answer costs no failed GET, with no retries', async () => {
    // it says nothing (no Connection: close): the proxy learns only from the end of the connection,
    // sometimes after it has picked that connection for the next request
    const up = await rawUpstream(() => 'HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok', true);
    p ??= await startProxy(table([]));
    const { putRoutes } = await import('./harness.js');
    expect((await putRoutes(p, table([route('ender', ['ender.test'], [up.address], { retry: { attempts: 0 }, fallbackCache: { enabled: false } })], Date.now()))).status).toBe(200);
    // requests arriving all the time, so some go out on a connection as its end is on the way
    // (no fallback cache: it would answer for a failed one)
    const failed: string[] = [];
    await Promise.all(Array.from({ length: 8 }, async () => {
      for (let i = 0; i < 60; i++) {
        const r = await get(p!, 'ender.test', '/');
        if (r.status !== 200 || r.body !== 'ok') failed.push(`${r.status} ${r.body}`);
      }
    }));
    expect(failed).toEqual([]);
  });

  // the second request on each connection meets `second`: the connection ends at once without a
  // byte (the keep-alive race, as seen from the proxy), or after a 103 (the upstream had begun)
  it.each([
    ['a GET whose reused connection ends without a byte is sent again and answered', 'GET', 'end', 200, 2],
    ['a POST the same way is not (a request with a body is never sent twice)', 'POST', 'end', 502, 1],
    ['a GET answered 103 and then cut off is not (the upstream had begun)', 'GET', '103', 502, 1],
  ] as const)('%s', async (_what, method, second, status, seen) => {
    const paths: string[] = [];
    const sockets = new Set<import('node:net').Socket>();
    const srv: NetServer = createNetServer((c) => {
      sockets.add(c);
      let n = 0;
      c.on('data', (d: Buffer) => {
        const m = /^(\S+) (\S+)/.exec(d.toString('latin1'));
        if (m === null) return;
        paths.push(m[2]);
        if (++n === 1) c.write('HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok');
        else if (second === 'end') c.end();
        else c.end('HTTP/1.1 103 Early Hints\r\nlink: </a.css>; rel=preload\r\n\r\n');
      });
      c.on('error', () => {});
    });
    srv.listen(0, '127.0.0.1');
    await once(srv, 'listening');
    cleanup.push(() => new Promise<void>((r) => { for (const c of sockets) c.destroy(); srv.close(() => r()); }));
    const address = `127.0.0.1:${(srv.address() as { port: number }).port}`;
    p ??= await startProxy(table([]));
    const { putRoutes } = await import('./harness.js');
    expect((await putRoutes(p, table([route('second', ['second.test'], [address], { retry: { attempts: 0 }, fallbackCache: { enabled: false } })], Date.now()))).status).toBe(200);
    expect((await get(p, 'second.test', '/warm')).status).toBe(200);
    // the same connection again (idle ones are reused newest first)
    const r = await get(p, 'second.test', '/t', method === 'POST' ? { method, body: 'x' } : {});
    expect(r.status, r.body).toBe(status);
    expect(paths.filter((x) => x === '/t')).toHaveLength(seen);
    if (status === 200) {
      const text = await (await fetch(`${p.admin}/metrics`)).text();
      expect(text).toMatch(/berth_proxy_stale_resent_total\{route="second"\} 1\b/);
    }
  });

  it('Connection: close responses, bodies until the end of the connection, bare-LF heads', async () => {
    const closing = await rawUpstream(() => 'HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 5\r\n\r\nfirst', true);
    const eof = await rawUpstream(() => 'HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\n\r\nuntil the end', true);
    const cgi = await rawUpstream(() => 'HTTP/1.1 200 OK\nContent-Type: text/plain\nContent-Length: 3\n\ncgi');
    p ??= await startProxy(table([]));
    const { putRoutes } = await import('./harness.js');
    expect((await putRoutes(p, table([
      route('closing', ['closing.test'], [closing.address]),
      route('eof', ['eof.test'], [eof.address]),
      route('cgi', ['cgi.test'], [cgi.address]),
    ], Date.now()))).status).toBe(200);
    for (let i = 0; i < 3; i++) {
      expect((await get(p, 'closing.test')).body).toBe('first');
      const e = await get(p, 'eof.test');
      expect([e.status, e.body]).toEqual([200, 'until the end']);
      const c = await get(p, 'cgi.test');
      expect([c.status, c.body, c.headers['content-type']]).toEqual([200, 'cgi', 'text/plain']);
    }
    expect(closing.requests).toBe(3);
  });

  it('more concurrent requests than --upstream-connections wait for a connection and all succeed', async () => {
    const slow = await startUpstream('slow', (_req, res) => { setTimeout(() => { res.writeHead(200, { 'content-length': '2' }); res.end('ok'); }, 30); });
    cleanup.push(() => slow.close());
    const q = await startProxy(table([route('slow', ['slow.test'], [slow.address])]), ['--upstream-connections', '2']);
    cleanup.push(() => q.stop());
    const results = await Promise.all(Array.from({ length: 20 }, () => get(q, 'slow.test')));
    expect(results.map((r) => r.status)).toEqual(Array(20).fill(200));
    expect(slow.hits).toBe(20);
  });
});
