/**
 * A request given a keep-alive connection that the upstream ends (or sends stray bytes on) in the
 * very turn — before the request's head went out at the end of that turn — never reached the
 * upstream: the proxy sends it again on another connection, whatever its method, body and all
 * (upstream/connection.ts E_NOT_SENT). Written as each request came, a POST met the same race
 * after its head went out, where nothing can tell whether the app acted on it: a 502.
 *
 * In-process (a data plane and its upstream in this test's event loop), so that one poll reads
 * the client's request and then the upstream's end, in that order: both are written in one turn
 * and epoll reports sockets in the order they became readable.
 */
import { connect, createServer, type Server, type Socket } from 'node:net';
import { once } from 'node:events';
import { pino } from 'pino';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { DataPlane } from '../../proxy/server/data-plane.js';
import { runtime } from '../../proxy/server/state.js';
import { validateRouteTable } from '../../shared/routes/validate.js';

/** Each connection's bytes, in order; answers each whole request with its method, path and body. */
const received: string[] = [];
const sockets: Socket[] = [];
/** the connection that answered last */
let answeredOn = -1;
let upstream: Server;
let plane: DataPlane;

beforeAll(async () => {
  upstream = createServer((c) => {
    const i = sockets.push(c) - 1;
    c.setNoDelay(true);
    received[i] = '';
    let pending = '';
    c.on('error', () => {});
    c.on('data', (d: Buffer) => {
      received[i] += d.toString('latin1');
      pending += d.toString('latin1');
      for (;;) {
        const end = pending.indexOf('\r\n\r\n');
        if (end < 0) return;
        const head = pending.slice(0, end);
        const length = Number(/\r\ncontent-length: *(\d+)/i.exec(head)?.[1] ?? 0);
        if (pending.length < end + 4 + length) return;
        const body = pending.slice(end + 4, end + 4 + length);
        pending = pending.slice(end + 4 + length);
        const answer = `${head.slice(0, head.indexOf(' HTTP/'))} ${body}`;
        answeredOn = i;
        c.write(`HTTP/1.1 200 OK\r\ncontent-length: ${answer.length}\r\n\r\n${answer}`);
      }
    });
  });
  upstream.listen(0, '127.0.0.1');
  await once(upstream, 'listening');
  plane = new DataPlane({ logger: pino({ level: 'silent' }), accessLogRate: 0, upstreamConnections: 4 });
  await plane.listen('127.0.0.1', 0);
  plane.apply(validateRouteTable({
    version: 1,
    routes: [{
      id: 'app', hosts: ['app.test'], endpoints: [{ id: 'e0', address: `127.0.0.1:${(upstream.address() as { port: number }).port}` }],
      retry: { attempts: 0 }, fallbackCache: { enabled: false },
    }],
  }));
});

afterAll(async () => {
  await plane?.close(0);
  for (const s of sockets) s.destroy();
  await new Promise<void>((r) => (upstream ? upstream.close(() => r()) : r()));
});

/** A keep-alive client connection to the proxy: `send` writes, `answer()` is the next whole response. */
async function client() {
  const s = connect(plane.port, '127.0.0.1');
  await once(s, 'connect');
  s.setNoDelay(true);
  let buf = '';
  let wake: (() => void) | null = null;
  s.on('data', (d: Buffer) => { buf += d.toString('latin1'); wake?.(); });
  return {
    socket: s,
    async answer(): Promise<{ status: number; body: string }> {
      for (;;) {
        const end = buf.indexOf('\r\n\r\n');
        if (end >= 0) {
          const head = buf.slice(0, end);
          const length = Number(/\r\ncontent-length: *(\d+)/i.exec(head)?.[1] ?? 0);
          if (buf.length >= end + 4 + length) {
            const body = buf.slice(end + 4, end + 4 + length);
            buf = buf.slice(end + 4 + length);
            return { status: Number(head.slice(9, 12)), body };
          }
        }
        await new Promise<void>((r) => { wake = r; setTimeout(r, 5000); });
        wake = null;
        if (s.destroyed) throw new Error(`the proxy closed the connection; had ${JSON.stringify(buf)}`);
      }
    },
  };
}

it.each([
  ['ends the connection', (s: Socket) => s.end()],
  ['sends bytes nobody asked for', (s: Socket) => s.write('HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nstray')],
] as const)('an upstream that %s in the turn a POST is given its idle connection: the POST goes again, body and all, on another, once', async (_what, act) => {
  const c = await client();
  c.socket.write('GET /warm HTTP/1.1\r\nhost: app.test\r\n\r\n');
  expect(await c.answer()).toEqual({ status: 200, body: 'GET /warm ' });
  // (the one idle connection: the proxy reuses it for the next request)
  const warm = answeredOn;
  const seen = received.map((r) => r.length);
  const stats = runtime.table!.routes.find((r) => r.id === 'app')!.stats;
  const resent = stats.staleResent;
  // one turn: the client's POST, then the upstream's doing on the connection the POST will be given
  c.socket.write('POST /order HTTP/1.1\r\nhost: app.test\r\ncontent-length: 11\r\n\r\nhello world');
  act(sockets[warm]);
  expect(await c.answer()).toEqual({ status: 200, body: 'POST /order hello world' });
  // the first connection never saw it; one other connection got it whole, once
  expect(received[warm].slice(seen[warm])).toBe('');
  const since = received.map((r, i) => r.slice(seen[i] ?? 0)).join('');
  expect(since.split('POST /order').length - 1).toBe(1);
  // sent again because it was given that connection (not a new one, had the order of events differed)
  expect(stats.staleResent).toBe(resent + 1);
  c.socket.destroy();
});
