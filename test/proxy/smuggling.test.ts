/**
 * Request smuggling: now that berth writes the upstream bytes itself, nothing a client sends may
 * make one client request arrive upstream as two, or shift where the next request on the same
 * upstream connection starts. The proxy runs with one upstream connection, so every request goes
 * down the same keep-alive connection; the upstream records what it parsed on it.
 */
import { createServer, type IncomingMessage, type Server } from 'node:http';
import { once } from 'node:events';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { route, startProxy, table, type ProxyProc } from './harness.js';
import { rawHttp } from '../helpers/raw-http.js';

interface Seen { socket: number; method: string; url: string; body: string }
let upstream: Server;
let seen: Seen[] = [];
let p: ProxyProc;
const sockets = new WeakMap<object, number>();
let nextSocket = 0;

beforeAll(async () => {
  upstream = createServer((req: IncomingMessage, res) => {
    let id = sockets.get(req.socket);
    if (id === undefined) { id = ++nextSocket; sockets.set(req.socket, id); }
    let body = '';
    req.setEncoding('latin1');
    req.on('data', (c: string) => (body += c));
    req.on('end', () => {
      seen.push({ socket: id!, method: req.method!, url: req.url!, body });
      res.writeHead(200, { 'content-length': 2 });
      res.end('ok');
    });
  });
  upstream.keepAliveTimeout = 60_000;
  upstream.listen(0, '127.0.0.1');
  await once(upstream, 'listening');
  const addr = `127.0.0.1:${(upstream.address() as { port: number }).port}`;
  p = await startProxy(table([route('app', ['app.test'], [addr])]), ['--upstream-connections', '1']);
});
afterAll(async () => {
  await p?.stop();
  upstream.closeAllConnections();
  upstream.close();
});

const attacks: Array<[string, string]> = [
  ['CL and TE together', 'POST /a HTTP/1.1\r\nHost: app.test\r\nContent-Length: 44\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: app.test\r\n\r\n'],
  ['TE and CL together', 'POST /a HTTP/1.1\r\nHost: app.test\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n0\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: app.test\r\n\r\n'],
  ['duplicate Content-Length', 'POST /a HTTP/1.1\r\nHost: app.test\r\nContent-Length: 0\r\nContent-Length: 41\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: app.test\r\n\r\n'],
  ['Content-Length with a sign', 'POST /a HTTP/1.1\r\nHost: app.test\r\nContent-Length: +41\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: app.test\r\n\r\n'],
  ['TE: xchunked', 'POST /a HTTP/1.1\r\nHost: app.test\r\nTransfer-Encoding: xchunked\r\n\r\n0\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: app.test\r\n\r\n'],
  ['TE: chunked, identity', 'POST /a HTTP/1.1\r\nHost: app.test\r\nTransfer-Encoding: chunked, identity\r\n\r\n0\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: app.test\r\n\r\n'],
  ['obs-fold', 'POST /a HTTP/1.1\r\nHost: app.test\r\nX-A: a\r\n Transfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\nhello'],
  ['bare LF in the request head', 'POST /a HTTP/1.1\nHost: app.test\nContent-Length: 5\n\nhello'],
  ['chunk size in hex with 0x', 'POST /a HTTP/1.1\r\nHost: app.test\r\nTransfer-Encoding: chunked\r\n\r\n0x5\r\nhello\r\n0\r\n\r\n'],
  ['chunk size overflow', 'POST /a HTTP/1.1\r\nHost: app.test\r\nTransfer-Encoding: chunked\r\n\r\nffffffffffffffffff1\r\nhello\r\n0\r\n\r\n'],
  ['chunk with a request in its data', 'POST /a HTTP/1.1\r\nHost: app.test\r\nTransfer-Encoding: chunked\r\n\r\n28\r\nGET /smuggled HTTP/1.1\r\nHost: app.test\r\n\r\n\r\n0\r\n\r\n'],
  ['CR in a header value', 'GET /a HTTP/1.1\r\nHost: app.test\r\nX-A: a\rGET /smuggled HTTP/1.1\r\n\r\n'],
  // Connection names hop-by-hop headers to drop; Content-Length is framing, never dropped
  ['Connection: content-length', 'POST /a HTTP/1.1\r\nHost: app.test\r\nConnection: content-length\r\nContent-Length: 42\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: app.test\r\n\r\n'],
  ['Connection: keep-alive, Content-Length', 'POST /a HTTP/1.1\r\nHost: app.test\r\nContent-Length: 42\r\nConnection: keep-alive, Content-Length\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: app.test\r\n\r\n'],
  ['Connection: transfer-encoding', 'POST /a HTTP/1.1\r\nHost: app.test\r\nConnection: transfer-encoding\r\nTransfer-Encoding: chunked\r\n\r\n2a\r\nGET /smuggled HTTP/1.1\r\nHost: app.test\r\n\r\n\r\n0\r\n\r\n'],
];

describe('request smuggling', () => {
  it('chunk extensions (5;ext=1): uWS 20.30 closes the connection; nothing reaches the upstream', async () => {
    seen = [];
    const r = await rawHttp(p.port, 'POST /ext HTTP/1.1\r\nHost: app.test\r\nTransfer-Encoding: chunked\r\n\r\n5;ext=1\r\nhello\r\n0\r\n\r\n', 800, 1);
    expect(r.statuses).toEqual([]);
    expect(r.closed).toBe(true);
    expect(seen.filter((s) => s.url === '/ext' && s.body !== '')).toEqual([]);
  });


  it.each(attacks)('%s: never two requests upstream, and the next request starts where it should', async (_name, data) => {
    seen = [];
    const r = await rawHttp(p.port, data, 800, 1);
    for (const s of r.statuses) expect([200, 400]).toContain(s);
    // the next, ordinary request through the same single upstream connection
    const next = await rawHttp(p.port, 'POST /next HTTP/1.1\r\nHost: app.test\r\nContent-Length: 4\r\n\r\nnext', 1500, 1);
    expect(next.statuses).toEqual([200]);
    expect(seen.map((s) => s.url)).not.toContain('/smuggled');
    expect(seen.length).toBeLessThanOrEqual(2);
    const last = seen[seen.length - 1];
    expect(last).toMatchObject({ method: 'POST', url: '/next', body: 'next' });
    if (seen.length === 2) expect(seen[0].url).toBe('/a');
  });

  it('bodies of every framing leave the upstream connection exactly at the next request', async () => {
    seen = [];
    const reqs = [
      'POST /cl HTTP/1.1\r\nHost: app.test\r\nContent-Length: 11\r\n\r\nhello world',
      'POST /chunked HTTP/1.1\r\nHost: app.test\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n6\r\n world\r\n0\r\nTrailer: x\r\n\r\n',
      'POST /empty HTTP/1.1\r\nHost: app.test\r\nContent-Length: 0\r\n\r\n',
      'GET /get HTTP/1.1\r\nHost: app.test\r\n\r\n',
      'HEAD /head HTTP/1.1\r\nHost: app.test\r\n\r\n',
    ];
    for (const r of reqs) expect((await rawHttp(p.port, r, 1500, 1)).statuses).toEqual([200]);
    expect(seen.map((s) => [s.method, s.url, s.body])).toEqual([
      ['POST', '/cl', 'hello world'], ['POST', '/chunked', 'hello world'], ['POST', '/empty', ''], ['GET', '/get', ''], ['HEAD', '/head', ''],
    ]);
    expect(new Set(seen.map((s) => s.socket)).size).toBe(1);
  });
});
