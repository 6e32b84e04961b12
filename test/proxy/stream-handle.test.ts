/**
 * Pins the Node 20 internals proxy/upstream/stream-handle.ts relies on: a head written straight
 * to the libuv handle arrives whole and before what the stream writes after it (also when the
 * write cannot complete at once), a closed socket answers with an error code instead of
 * crashing, and readStop()/readStart() pause and resume a socket's reads.
 */
import { createServer, connect, type Server, type Socket } from 'node:net';
import { once } from 'node:events';
import { createHash } from 'node:crypto';
import { setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { queuedBytes, readStart, readStop, takeReads, writeHead, writeParts } from '../../proxy/upstream/stream-handle.js';

let server: Server;
let port = 0;
const received: Buffer[][] = [];
const open = new Set<Socket>();

beforeAll(async () => {
  server = createServer((s) => {
    open.add(s);
    s.on('close', () => open.delete(s));
    const chunks: Buffer[] = [];
    received.push(chunks);
    s.on('data', (d) => chunks.push(d));
  });
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  port = (server.address() as { port: number }).port;
});
afterAll(() => {
  for (const s of open) s.destroy();
  return new Promise<void>((r) => server.close(() => r()));
});

async function connected(): Promise<Socket> {
  const s = connect({ host: '127.0.0.1', port });
  await once(s, 'connect');
  return s;
}

async function waitForBytes(i: number, n: number): Promise<Buffer> {
  for (let t = 0; t < 1000; t++) {
    const got = received[i] ? Buffer.concat(received[i]) : Buffer.alloc(0);
    if (got.length >= n) return got;
    await new Promise((r) => setTimeout(r, 10));
  }
  throw new Error(`server got ${received[i] ? Buffer.concat(received[i]).length : 0} of ${n} bytes`);
}

describe('stream-handle (Node internals)', () => {
  it('writes a Latin-1 head whole, before a chunk the stream writes after it', async () => {
    const s = await connected();
    await new Promise((r) => setTimeout(r, 20));
    const conn = received.length - 1;
    expect(writeHead(s, 'GET / HTTP/1.1\r\nx-caf\u00e9: \u00ff\r\n\r\n')).toBe(0);
    s.write(Buffer.from('BODY'));
    const got = await waitForBytes(conn, 33);
    expect(got.toString('latin1')).toBe('GET / HTTP/1.1\r\nx-caf\u00e9: \u00ff\r\n\r\nBODY');
    expect(got[21]).toBe(0xe9); // one byte per char
    s.destroy();
  });

  it('a head too big to write at once still arrives whole and in order', async () => {
    const s = await connected();
    await new Promise((r) => setTimeout(r, 20));
    const conn = received.length - 1;
    const big = 'x'.repeat(8 * 1024 * 1024);
    expect(writeHead(s, big)).toBe(0);
    s.write(Buffer.from('END'));
    const got = await waitForBytes(conn, big.length + 3);
    expect(got.length).toBe(big.length + 3);
    expect(got.subarray(big.length).toString()).toBe('END');
    s.destroy();
  });

  it('writes after one that could not complete at once (a request object in use) arrive whole and in order', async () => {
    const s = await connected();
    await new Promise((r) => setTimeout(r, 20));
    const conn = received.length - 1;
    const parts = ['a'.repeat(100), 'b'.repeat(8 * 1024 * 1024), 'c'.repeat(100), 'd'.repeat(4 * 1024 * 1024), 'e'.repeat(10)];
    for (const part of parts) expect(writeHead(s, part)).toBe(0);
    const total = parts.reduce((n, x) => n + x.length, 0);
    const got = (await waitForBytes(conn, total)).toString('latin1');
    expect(got.length).toBe(total);
    expect(got).toBe(parts.join(''));
    s.destroy();
  });

  it('writeParts: a Latin-1 head, a Buffer and a Latin-1 tail in one write, whole and in order, before what the stream writes after', async () => {
    const s = await connected();
    await new Promise((r) => setTimeout(r, 20));
    const conn = received.length - 1;
    expect(writeParts(s, ['POST / HTTP/1.1\r\nx-caf\u00e9: 1\r\n\r\n5\r\n', 'latin1', Buffer.from([0x68, 0xff, 0x00, 0x6c, 0x6f]), 'buffer', '\r\n', 'latin1'])).toBe(0);
    s.write(Buffer.from('0\r\n\r\n'));
    const want = Buffer.concat([Buffer.from('POST / HTTP/1.1\r\nx-caf\u00e9: 1\r\n\r\n5\r\n', 'latin1'), Buffer.from([0x68, 0xff, 0x00, 0x6c, 0x6f]), Buffer.from('\r\n0\r\n\r\n')]);
    expect((await waitForBytes(conn, want.length)).equals(want)).toBe(true);
    s.destroy();
  });

  it('writeParts: a body too big to write at once still arrives whole and in order, its Buffer kept alive until written', async () => {
    const s = await connected();
    await new Promise((r) => setTimeout(r, 20));
    const conn = received.length - 1;
    // the only reference to the body is what writeParts keeps: collected, libuv would send freed memory
    const SIZE = 16 * 1024 * 1024;
    const digest = ((): string => {
      const body = Buffer.alloc(SIZE);
      for (let i = 0; i < SIZE; i += 4096) body[i] = ((i >> 12) & 0xff) || 1;
      expect(writeParts(s, ['HEAD\r\n', 'latin1', body, 'buffer'])).toBe(0);
      // (the case that needs it: libuv could not write it all at once)
      expect(queuedBytes(s)).toBeGreaterThan(0);
      return createHash('sha256').update(body).digest('hex');
    })();
    // the next request's head, straight to libuv too, and a piece through the stream: both after
    expect(writeHead(s, 'NEXT')).toBe(0);
    s.write(Buffer.from('END'));
    setFlagsFromString('--expose-gc');
    const gc = runInNewContext('gc') as () => void;
    for (let i = 0; i < 3; i++) {
      gc();
      Buffer.alloc(SIZE).fill(0xee); // (freed memory would likely be reused, and differ)
    }
    const got = await waitForBytes(conn, 6 + SIZE + 7);
    expect(got.subarray(0, 6).toString()).toBe('HEAD\r\n');
    expect(createHash('sha256').update(got.subarray(6, 6 + SIZE)).digest('hex')).toBe(digest);
    expect(got.subarray(6 + SIZE).toString()).toBe('NEXTEND');
    expect(queuedBytes(s)).toBe(0); // (all of it written: what connection reuse waits for)
    s.destroy();
  });

  it('a destroyed socket answers with an error code', async () => {
    const s = await connected();
    s.destroy();
    expect(writeHead(s, 'GET / HTTP/1.1\r\n\r\n')).toBeLessThan(0);
    expect(writeParts(s, ['GET / HTTP/1.1\r\n\r\n', 'latin1', Buffer.from('x'), 'buffer'])).toBeLessThan(0);
  });

  it('readStop() pauses reads and readStart() resumes them (a socket read through onread, as the upstream client does)', async () => {
    let peer: Socket | null = null;
    const srv = createServer((c) => {
      peer = c;
      c.write('one');
      setTimeout(() => c.write('two'), 50);
    });
    srv.listen(0, '127.0.0.1');
    await once(srv, 'listening');
    const got: string[] = [];
    const s: Socket = connect({
      host: '127.0.0.1',
      port: (srv.address() as { port: number }).port,
      onread: {
        buffer: Buffer.alloc(1024),
        callback: (n, buf) => {
          got.push(Buffer.from(buf.subarray(0, n)).toString());
          readStop(s);
          return true;
        },
      },
    });
    await new Promise((r) => setTimeout(r, 150));
    expect(got).toEqual(['one']);
    readStart(s);
    await new Promise((r) => setTimeout(r, 50));
    expect(got.join('')).toBe('onetwo');
    s.destroy();
    (peer as Socket | null)?.destroy();
    await new Promise<void>((r) => srv.close(() => r()));
  });

  it('takeReads() delivers reads into the onread buffer straight from the handle; the end still reaches the stream', async () => {
    const srv = createServer((c) => {
      c.write('hello');
      setTimeout(() => c.end('world'), 30);
    });
    srv.listen(0, '127.0.0.1');
    await once(srv, 'listening');
    const buf = Buffer.alloc(64);
    const got: string[] = [];
    let streamPath = 0;
    const s: Socket = connect({
      host: '127.0.0.1',
      port: (srv.address() as { port: number }).port,
      onread: { buffer: buf, callback: () => { streamPath++; return true; } },
    });
    takeReads(s, { onRead: (n) => { got.push(buf.toString('latin1', 0, n)); } });
    const ended = once(s, 'end');
    await ended;
    expect(got.join('')).toBe('helloworld');
    expect(streamPath).toBe(0);
    s.destroy();
    await new Promise<void>((r) => srv.close(() => r()));
  });
});
