/**
 * A bug that throws while a request is told of an upstream failure (upstream/connection.ts `tell`).
 * Those calls come from socket events and timers: a throw there ended the whole proxy (an
 * uncaught exception, every tenant's requests with it), or, where it was caught, left the client
 * waiting for its own timeout. Now it is logged and the request abandoned: its client's
 * connection closed at once, the request counted as the proxy's error, the endpoint's books
 * settled. The bug is put in by hand here (a handler that throws; the exchange's method replaced
 * for one request): no code path of the proxy is known to throw there.
 */
import { connect, createServer, type Server, type Socket } from 'node:net';
import { once } from 'node:events';
import { pino } from 'pino';
import { afterAll, afterEach, beforeAll, expect, it } from 'vitest';
import { DataPlane } from '../../proxy/server/data-plane.js';
import { Exchange } from '../../proxy/server/exchange.js';
import { runtime } from '../../proxy/server/state.js';
import { UpstreamPool } from '../../proxy/upstream/pool.js';
import type { UpstreamConnection, UpstreamError, UpstreamHandler } from '../../proxy/upstream/connection.js';
import { validateRouteTable } from '../../shared/routes/validate.js';
import { freePort } from '../helpers/ports.js';
import { TestUpstreamRequest } from '../helpers/upstream-handler.js';

/** What the proxy wrote to stderr meanwhile (tell logs the bug there). */
const logged: string[] = [];
const write = process.stderr.write.bind(process.stderr);
beforeAll(() => {
  process.stderr.write = ((chunk: string | Uint8Array, ...rest: unknown[]) => {
    logged.push(String(chunk));
    return (write as (...a: unknown[]) => boolean)(chunk, ...rest);
  }) as typeof process.stderr.write;
});
afterAll(() => {
  process.stderr.write = write;
});

const undo: Array<() => unknown> = [];
afterEach(async () => {
  while (undo.length) await undo.pop()!();
});

/** A loopback upstream (closed after the test): `onConnection` gets each connection; its port and connections. */
async function upstream(onConnection: (c: Socket) => void): Promise<{ port: number; conns: Socket[] }> {
  const conns: Socket[] = [];
  const up: Server = createServer((c) => {
    conns.push(c);
    c.on('error', () => {});
    onConnection(c);
  });
  up.listen(0, '127.0.0.1');
  await once(up, 'listening');
  undo.push(() => new Promise<void>((r) => { for (const c of conns) c.destroy(); up.close(() => r()); }));
  return { port: (up.address() as { port: number }).port, conns };
}

/** Answers every read with a 200 "ok". */
const answering = (c: Socket) => c.on('data', () => c.write('HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok'));

/** A request whose failure handler (or, with `on: 'start'`, its start) throws, as a buggy one would. */
class Throwing extends TestUpstreamRequest implements UpstreamHandler {
  told = 0;
  answered = false;
  conn: UpstreamConnection | null = null;
  readonly abandoned: Promise<void>;
  readonly ended: Promise<void>;
  private onAbandon!: () => void;
  private onEnd!: () => void;
  readonly hasBody: boolean = false;
  readonly upstreamHead: string = 'GET / HTTP/1.1\r\nhost: app.test\r\n\r\n';
  constructor(private readonly on: 'error' | 'start' | 'drain' | 'nothing' = 'error') {
    super();
    this.abandoned = new Promise((r) => (this.onAbandon = r));
    this.ended = new Promise((r) => (this.onEnd = r));
  }
  onUpstreamStart(conn: UpstreamConnection): void {
    this.conn = conn;
    if (this.on === 'start') throw new Error('a bug in the start');
  }
  onUpstreamHead(): void {}
  flushHead(): void {}
  onUpstreamData(): boolean {
    return true;
  }
  onUpstreamEnd(): void {
    this.answered = true;
    this.onEnd();
  }
  onUpstreamError(_err: UpstreamError): void {
    this.told++;
    if (this.on === 'error') throw new Error('a bug in the failure path');
    this.onEnd();
  }
  abandon(): void {
    // (as the exchange does: off the connection it is on)
    if (this.conn !== null && this.conn.carries(this)) this.conn.abort(this);
    this.onAbandon();
  }
  onUpstreamDrain(): void {
    if (this.on === 'drain') throw new Error('a bug resuming the body');
  }
  onPipelineStall(): void {}
}

/** A chunked POST whose body the test writes itself. */
class ThrowingUpload extends Throwing {
  override readonly hasBody = true;
  override readonly upstreamHead = 'POST / HTTP/1.1\r\nhost: app.test\r\ntransfer-encoding: chunked\r\n\r\n';
}

it('a refused connection whose request throws when told: logged, the request abandoned, the process goes on', async () => {
  // (nothing listens there: the connect is refused, and the pool tells the waiting request from the socket's close event)
  const pool = new UpstreamPool(`127.0.0.1:${await freePort()}`, { connections: 2, keepAliveTimeoutMs: 10_000, connectMs: 2000 });
  undo.push(() => pool.close());
  const h = new Throwing();
  pool.dispatch(h);
  await h.abandoned;
  expect(h.told).toBe(1);
  expect(logged.join('')).toMatch(/internal error #\d+ telling a request its connection failed: Error: a bug in the failure path/);
  // (an uncaught exception would have failed this file: vitest reports errors thrown outside a test's promise)
  await new Promise((r) => setTimeout(r, 100));
}, 10_000);

it('a waiting request whose start throws when a connection frees up: logged, abandoned (its connection with it), the pool serves on', async () => {
  const up = await upstream(answering);
  // one connection: the second request waits for it, and is started from the first's answer (a socket read)
  const pool = new UpstreamPool(`127.0.0.1:${up.port}`, { connections: 1, keepAliveTimeoutMs: 10_000, connectMs: 2000 });
  undo.push(() => pool.close());
  const first = new Throwing('nothing');
  const second = new Throwing('start');
  pool.dispatch(first);
  pool.dispatch(second);
  await first.ended;
  expect(first.answered).toBe(true);
  await second.abandoned;
  expect(logged.join('')).toMatch(/internal error #\d+ starting a waiting request: Error: a bug in the start/);
  const third = new Throwing('nothing');
  pool.dispatch(third);
  await third.ended;
  expect(third.answered).toBe(true);
}, 10_000);

it('a request whose body drains into a handler that throws: logged, abandoned (its connection with it)', async () => {
  // an upstream that reads nothing until told: the body fills the socket
  const { port, conns } = await upstream((c) => c.pause());
  const pool = new UpstreamPool(`127.0.0.1:${port}`, { connections: 1, keepAliveTimeoutMs: 10_000, connectMs: 2000 });
  undo.push(() => pool.close());
  const h = new ThrowingUpload('drain');
  pool.dispatch(h);
  for (let i = 0; i < 200 && (h.conn === null || conns.length === 0); i++) await new Promise((r) => setTimeout(r, 10));
  const conn = h.conn!;
  const fill = Buffer.alloc(65536, 'a');
  let full = false;
  for (let i = 0; i < 10_000 && !full; i++) {
    full = !conn.writeBody(fill, true);
    if (i % 16 === 15) await new Promise((r) => setImmediate(r));
  }
  expect(full).toBe(true);
  // the upstream reads: the socket drains, and telling the request throws
  conns[0].resume();
  await h.abandoned;
  expect(logged.join('')).toMatch(/internal error #\d+ resuming a request body: Error: a bug resuming the body/);
  // off its connection: the upstream sees it close
  await once(conns[0], 'close');
}, 10_000);

it('a request the data plane was failing is abandoned: its client is let go at once, the error counted, the endpoint\'s books settled', async () => {
  // one route to a port nobody listens on (refused: no retry), one to a working upstream
  const up = await upstream(answering);
  const plane = new DataPlane({ logger: pino({ level: 'silent' }), accessLogRate: 0, upstreamConnections: 4 });
  await plane.listen('127.0.0.1', 0);
  undo.push(() => plane.close(0));
  plane.apply(validateRouteTable({
    version: 1,
    routes: [
      { id: 'broken', hosts: ['broken.test'], endpoints: [{ id: 'e0', address: `127.0.0.1:${await freePort()}` }], retry: { attempts: 0 }, fallbackCache: { enabled: false } },
      { id: 'fine', hosts: ['fine.test'], endpoints: [{ id: 'e1', address: `127.0.0.1:${up.port}` }] },
    ],
  }));
  const route = runtime.table!.routes.find((r) => r.id === 'broken')!;
  const errorsBefore = route.stats.errors;
  // the bug: telling an exchange of its failure throws
  const original = Exchange.prototype.onUpstreamError;
  Exchange.prototype.onUpstreamError = function (this: Exchange) {
    throw new Error('a bug in the exchange');
  };
  undo.push(() => { Exchange.prototype.onUpstreamError = original; });

  const c = connect(plane.port, '127.0.0.1');
  c.on('error', () => {});
  await once(c, 'connect');
  let got = '';
  c.on('data', (d: Buffer) => { got += d.toString('latin1'); });
  const t0 = Date.now();
  c.write('GET / HTTP/1.1\r\nhost: broken.test\r\n\r\n');
  await once(c, 'close');
  // at once, not after a timeout (nothing can be said: the state the bug left is unknown)
  expect(Date.now() - t0).toBeLessThan(2000);
  expect(got).toBe('');
  expect(logged.join('')).toMatch(/internal error #\d+ telling a request its connection failed: Error: a bug in the exchange/);
  expect(route.stats.errors).toBe(errorsBefore + 1);
  expect(route.stats.inflight).toBe(0);
  expect(route.targets[0].endpoint.inflight).toBe(0);

  // the data plane serves on
  Exchange.prototype.onUpstreamError = original;
  const d = connect(plane.port, '127.0.0.1');
  d.on('error', () => {});
  let answer = '';
  d.on('data', (b: Buffer) => { answer += b.toString('latin1'); });
  d.write('GET / HTTP/1.1\r\nhost: fine.test\r\n\r\n');
  for (let i = 0; i < 100 && !answer.endsWith('ok'); i++) await new Promise((r) => setTimeout(r, 20));
  expect(answer).toMatch(/^HTTP\/1\.1 200 OK\r\n[\s\S]*ok$/);
  d.destroy();
}, 10_000);

it('a bug after the books were settled (answering a retry that found no other endpoint) does not give the endpoint back twice', async () => {
  const plane = new DataPlane({ logger: pino({ level: 'silent' }), accessLogRate: 0, upstreamConnections: 4 });
  await plane.listen('127.0.0.1', 0);
  undo.push(() => plane.close(0));
  // one refused endpoint, one retry: the failure is charged, the retry finds no other endpoint, and answering that throws
  plane.apply(validateRouteTable({
    version: 1,
    routes: [{ id: 'lonely', hosts: ['lonely.test'], endpoints: [{ id: 'e0', address: `127.0.0.1:${await freePort()}` }], retry: { attempts: 1 }, fallbackCache: { enabled: false } }],
  }));
  const route = runtime.table!.routes.find((r) => r.id === 'lonely')!;
  const proto = Exchange.prototype as unknown as { fail: (...a: unknown[]) => void };
  const original = proto.fail;
  proto.fail = function () {
    throw new Error('a bug answering');
  };
  undo.push(() => { proto.fail = original; });
  const c = connect(plane.port, '127.0.0.1');
  c.on('error', () => {});
  await once(c, 'connect');
  c.write('GET / HTTP/1.1\r\nhost: lonely.test\r\n\r\n');
  await once(c, 'close');
  expect(logged.join('')).toMatch(/Error: a bug answering/);
  // given back once (by the charge), not again by abandon: below zero it would count as free capacity
  expect(route.targets[0].endpoint.inflight).toBe(0);
  expect(route.stats.inflight).toBe(0);
}, 10_000);
