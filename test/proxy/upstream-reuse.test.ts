/**
 * What berth's upstream client (proxy/upstream/connection.ts) writes, and when.
 *
 * A request goes out at the end of the event-loop turn it was sent in, its head with the first
 * piece of its body (and the body's end) when they came in that turn; later pieces follow, framed
 * as sent; a request given up within its turn never reaches the upstream; bytes read before its
 * head went out are never taken as its answer.
 *
 * It never puts a request head ahead of the
 * previous request's body on a reused connection. A head sent alone goes straight to libuv
 * (stream-handle.ts writeHead) while body chunks go through the socket's stream, which holds
 * them in its buffer while a write is pending on a full socket: a connection reused then sent the
 * next head before that body's tail, and the app read a client's request inside another's body
 * (found by a security review). In-process, against a raw upstream that reads nothing until told.
 */
import { connect, createServer, type Server, type Socket } from 'node:net';
import { once } from 'node:events';
import { afterEach, expect, it } from 'vitest';
import { UpstreamPool } from '../../proxy/upstream/pool.js';
import { TestUpstreamRequest } from '../helpers/upstream-handler.js';
import { E_NOT_SENT, type UpstreamConnection, type UpstreamError, type UpstreamHandler } from '../../proxy/upstream/connection.js';

class Request extends TestUpstreamRequest implements UpstreamHandler {
  conn: UpstreamConnection | null = null;
  failed: string | null = null;
  error: UpstreamError | null = null;
  readonly started: Promise<void>;
  readonly ended: Promise<void>;
  private onStart!: () => void;
  private onEnd!: () => void;
  constructor(readonly upstreamHead: string, readonly hasBody: boolean) {
    super();
    this.started = new Promise((r) => (this.onStart = r));
    this.ended = new Promise((r) => (this.onEnd = r));
  }
  onUpstreamStart(conn: UpstreamConnection): void {
    this.conn = conn;
    this.onStart();
  }
  onUpstreamHead(): void {}
  flushHead(): void {}
  onUpstreamData(): boolean {
    return true;
  }
  onUpstreamEnd(): void {
    this.onEnd();
  }
  onUpstreamError(err: UpstreamError): void {
    this.failed = err.message;
    this.error = err;
    this.onEnd();
  }
  abandon(): void {}
  onUpstreamDrain(): void {}
  onPipelineStall(): void {}
}

const cleanup: Array<() => unknown> = [];
afterEach(async () => {
  while (cleanup.length) await cleanup.pop()!();
});

/**
 * An upstream recording each connection's bytes in order: the first connection stops reading
 * after the first request's head (`onStall` runs then, given the socket); `GET /second` is
 * answered anywhere.
 */
async function stallingUpstream(onStall: (c: Socket) => void) {
  const received: string[] = [];
  const sockets: Socket[] = [];
  const server: Server = createServer((c) => {
    const i = sockets.push(c) - 1;
    received[i] = '';
    c.on('error', () => {});
    c.on('data', (d: Buffer) => {
      received[i] += d.toString('latin1');
      if (i === 0 && received[i].includes('\r\n\r\n') && !c.isPaused() && !received[i].includes('#stalled')) {
        c.pause();
        received[i] += '#stalled';
        onStall(c);
      }
      if (received[i].includes('GET /second ') && !received[i].endsWith('#answered')) {
        received[i] += '#answered';
        c.write('HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok');
      }
    });
  });
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  cleanup.push(() => new Promise<void>((r) => { for (const x of sockets) x.destroy(); server.close(() => r()); }));
  const pool = new UpstreamPool(`127.0.0.1:${(server.address() as { port: number }).port}`, { connections: 4, keepAliveTimeoutMs: 10_000, connectMs: 2000 });
  return { received, sockets, pool };
}

it('a connection whose request body is still in the stream\'s buffer when the answer ends is not reused: the next head never goes ahead of it', async () => {
  // the upstream: each connection's bytes in order; the first connection reads nothing after the
  // first request's head until told; `GET /second` is answered anywhere
  const { received, sockets, pool } = await stallingUpstream(() => {});

  const first = new Request('POST /first HTTP/1.1\r\nhost: app.test\r\ntransfer-encoding: chunked\r\n\r\n', true);
  pool.dispatch(first);
  await first.started;
  const conn = first.conn!;
  const socket = (conn as unknown as { socket: Socket }).socket;
  // fill the socket until a write is pending (the upstream reads nothing), every write accepted
  const fill = Buffer.alloc(8192, 'a');
  for (let i = 0; socket.writableLength === 0; i++) {
    expect(conn.writeBody(fill, true)).toBe(true);
    if (i > 100_000) throw new Error('the socket never filled');
    if (i % 64 === 63) await new Promise((r) => setImmediate(r));
  }
  // the body's tail, accepted into the stream's buffer, and its end: the request is whole
  expect(conn.writeBody(Buffer.from('TAIL'), true)).toBe(true);
  conn.endBody(true);
  expect(socket.writableLength).toBeGreaterThan(0);
  // the app answers without reading the body (keep-alive)
  sockets[0].write('HTTP/1.1 403 Forbidden\r\ncontent-length: 2\r\n\r\nno');
  await first.ended;
  expect(first.failed).toBeNull();

  const second = new Request('GET /second HTTP/1.1\r\nhost: app.test\r\n\r\n', false);
  pool.dispatch(second);
  await new Promise((r) => setTimeout(r, 200));
  sockets[0].resume();
  await second.ended;
  expect(second.failed).toBeNull();
  await new Promise((r) => setTimeout(r, 200));
  // wherever the second request went, it starts a connection or follows the first request whole
  const at = received.findIndex((t) => t.includes('GET /second '));
  expect(at).toBeGreaterThanOrEqual(0);
  const before = received[at].slice(0, received[at].indexOf('GET /second '));
  expect(before === '' || before.endsWith('TAIL\r\n0\r\n\r\n'), `the second head came after: …${JSON.stringify(before.slice(-40))}`).toBe(true);
});

/** Sends its body pieces (and the end) in the very turn its connection is handed to it. */
class WritingRequest extends Request {
  constructor(upstreamHead: string, private readonly pieces: string[], private readonly chunked: boolean) {
    super(upstreamHead, true);
  }
  override onUpstreamStart(conn: UpstreamConnection): void {
    super.onUpstreamStart(conn);
    for (const p of this.pieces) expect(conn.writeBody(Buffer.from(p), this.chunked)).toBe(true);
    conn.endBody(this.chunked);
  }
}

/** An upstream recording each connection's bytes; answers 200 once `done(bytes)` says the request is whole. */
async function recordingUpstream(done: (bytes: string) => boolean) {
  const received: string[] = [];
  const closed: Array<Promise<unknown>> = [];
  const sockets: Socket[] = [];
  const server: Server = createServer((c) => {
    const i = sockets.push(c) - 1;
    // (no Nagle: a write the test makes must reach the proxy's socket before the next one it makes)
    c.setNoDelay(true);
    received[i] = '';
    closed[i] = once(c, 'close');
    c.on('error', () => {});
    c.on('data', (d: Buffer) => {
      received[i] += d.toString('latin1');
      if (done(received[i])) c.write('HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok');
    });
  });
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  cleanup.push(() => new Promise<void>((r) => { for (const s of sockets) s.destroy(); server.close(() => r()); }));
  const pool = new UpstreamPool(`127.0.0.1:${(server.address() as { port: number }).port}`, { connections: 4, keepAliveTimeoutMs: 10_000, connectMs: 2000 });
  return { received, closed, sockets, pool };
}

it.each([
  ['chunked, two pieces', 'transfer-encoding: chunked', ['hello', ' world'], true, '5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n'],
  ['chunked, one piece', 'transfer-encoding: chunked', ['hello'], true, '5\r\nhello\r\n0\r\n\r\n'],
  ['content-length, two pieces', 'content-length: 11', ['hello', ' world'], false, 'hello world'],
  ['content-length, one piece', 'content-length: 5', ['hello'], false, 'hello'],
] as const)('a body sent in the turn its request went out follows the head whole and in order (%s)', async (_name, framing, pieces, chunked, body) => {
  const head = `POST /up HTTP/1.1\r\nhost: app.test\r\n${framing}\r\n\r\n`;
  const up = await recordingUpstream((b) => b === head + body);
  const req = new WritingRequest(head, [...pieces], chunked);
  up.pool.dispatch(req);
  await req.ended;
  expect(req.failed).toBeNull();
  expect(up.received[0]).toBe(head + body);
});

it('a request given up in the turn it was sent never reaches the upstream', async () => {
  const up = await recordingUpstream(() => false);
  class Abandoned extends Request {
    override onUpstreamStart(conn: UpstreamConnection): void {
      super.onUpstreamStart(conn);
      conn.abort(this);
    }
  }
  const req = new Abandoned('GET /gone HTTP/1.1\r\nhost: app.test\r\n\r\n', false);
  up.pool.dispatch(req);
  await req.started;
  while (up.closed[0] === undefined) await new Promise((r) => setTimeout(r, 5));
  await up.closed[0];
  expect(up.received[0]).toBe('');
});

it('a connection whose head and first body piece libuv has not all written when the answer ends is not reused either', async () => {
  // the app reads the head, stops reading and answers at once (keep-alive): the 8 MiB body sent
  // with the head in one write straight to libuv is still in libuv's queue
  const { received, pool } = await stallingUpstream((c) => c.write('HTTP/1.1 413 Payload Too Large\r\ncontent-length: 2\r\n\r\nno'));
  const size = 8 * 1024 * 1024;
  const first = new WritingRequest(`POST /first HTTP/1.1\r\nhost: app.test\r\ncontent-length: ${size}\r\n\r\n`, ['x'.repeat(size)], false);
  pool.dispatch(first);
  await first.ended;
  expect(first.failed).toBeNull();
  const second = new Request('GET /second HTTP/1.1\r\nhost: app.test\r\n\r\n', false);
  pool.dispatch(second);
  await second.ended;
  expect(second.failed).toBeNull();
  // on another connection: on the first, it would have followed a body the app never read
  expect(received[0]).not.toContain('GET /second');
});

/**
 * One poll of the event loop reads a trigger socket's byte, whose handler calls `dispatch`, and
 * then what `upstream` does now (epoll reports sockets in the order they became readable).
 */
async function inOnePoll(dispatch: () => void, upstream: () => void): Promise<void> {
  const server = createServer();
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  const accepted = once(server, 'connection');
  const trigger = connect((server.address() as { port: number }).port, '127.0.0.1');
  const [peer] = (await accepted) as [Socket];
  cleanup.push(() => new Promise<void>((r) => { trigger.destroy(); peer.destroy(); server.close(() => r()); }));
  await once(trigger, 'connect');
  trigger.on('data', dispatch);
  peer.write('x');
  upstream();
}

/** A recording upstream whose pool holds one idle connection (a GET went out on it and was answered). */
async function withIdleConnection() {
  const up = await recordingUpstream((b) => b.endsWith('\r\n\r\n'));
  const first = new Request('GET /first HTTP/1.1\r\nhost: app.test\r\n\r\n', false);
  up.pool.dispatch(first);
  await first.ended;
  expect(first.failed).toBeNull();
  return up;
}

it('bytes an upstream sent on an idle connection, read in the turn a request is given it, are never taken as that request\'s answer', async () => {
  const up = await withIdleConnection();
  // the connection is idle in the pool. A trigger socket becomes readable, then the upstream sends
  // an answer nobody asked for: one poll of the event loop reads both, the trigger first, and its
  // handler gives the idle connection a request — whose head goes out only at the end of the turn
  const second = new Request('GET /second HTTP/1.1\r\nhost: app.test\r\n\r\n', false);
  await inOnePoll(() => up.pool.dispatch(second), () => up.sockets[0].write('HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nstray'));
  await second.ended;
  // the connection is closed instead, and the request told it never went out (an exchange sends
  // it again, whatever its method)
  expect(second.error?.code).toBe(E_NOT_SENT);
  expect(up.received[0]).not.toContain('GET /second');
});

it.each([
  ['ends the connection', (s: Socket) => s.end()],
  ['sends bytes nobody asked for', (s: Socket) => s.write('HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nstray')],
  ['resets the connection', (s: Socket) => s.resetAndDestroy()],
] as const)('an upstream that %s in the turn a POST is given its idle connection: told E_NOT_SENT, with every body piece it took, nothing written', async (_what, act) => {
  const up = await withIdleConnection();
  const post = new Request('POST /second HTTP/1.1\r\nhost: app.test\r\ncontent-length: 11\r\n\r\n', true);
  // the first piece comes with the request; the second after the upstream's doing was read and
  // the turn's heads went out (or would have), and the body's end
  await inOnePoll(() => {
    up.pool.dispatch(post);
    expect(post.conn!.writeBody(Buffer.from('hello'), false)).toBe(true);
    setImmediate(() => {
      expect(post.conn!.writeBody(Buffer.from(' world'), false)).toBe(true);
      post.conn!.endBody(false);
    });
  }, () => act(up.sockets[0]));
  await post.ended;
  expect(post.error?.code).toBe(E_NOT_SENT);
  expect((post.error?.body ?? []).map((b) => b.toString())).toEqual(['hello', ' world']);
  await up.closed[0];
  expect(up.received[0]).not.toContain('POST');
});
