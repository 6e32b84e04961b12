/**
 * A request body that never finishes must not hold an endpoint's concurrency slot (or the
 * upstream connection) for good: while the body goes out, the headers timeout runs from the
 * request's start and again from each 16 KiB of it — a client trickling bytes, or an app that
 * stopped reading them, gets 408 when it runs out; a steady upload of any length goes through. (Before, a slow POST kept the slot until uWS's own idle timeout, and one trickling a
 * byte every few seconds, or one paused because the app stopped reading, kept it forever.)
 */
import { connect, createServer, type Server, type Socket } from 'node:net';
import { once } from 'node:events';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { get, route, startProxy, startUpstream, table, type ProxyProc, type Upstream } from '../proxy/harness.js';

let up: Upstream;
let deaf: Server;
const deafSockets: Socket[] = [];
let p: ProxyProc;

beforeAll(async () => {
  up = await startUpstream('app');
  // an app that accepts and never reads a byte
  deaf = createServer((s) => { deafSockets.push(s); s.pause(); });
  deaf.listen(0, '127.0.0.1');
  await once(deaf, 'listening');
  const settings = { timeouts: { headersMs: 1000, idleMs: 1000 }, concurrency: { perEndpoint: 1, maxQueue: 10, queueTimeoutMs: 5000 } };
  p = await startProxy(table([
    route('app', ['slow.test'], [up.address], settings),
    route('deaf', ['deaf.test'], [`127.0.0.1:${(deaf.address() as { port: number }).port}`], settings),
  ]));
});
afterAll(async () => {
  await p?.stop();
  await up?.close();
  for (const s of deafSockets) s.destroy();
  deaf?.close();
});

/** Send `head` and `first`, then trickle a byte every `everyMs`; resolves with what came back (and when). */
function trickle(host: string, length: number, everyMs: number, maxMs: number): Promise<{ text: string; ms: number }> {
  return new Promise((resolve) => {
    const t0 = Date.now();
    const s = connect(p.port, '127.0.0.1');
    let text = '';
    let timer: NodeJS.Timeout | undefined;
    const done = () => { clearInterval(timer); clearTimeout(cap); s.destroy(); resolve({ text, ms: Date.now() - t0 }); };
    const cap = setTimeout(done, maxMs);
    s.on('data', (c) => { text += c.toString('latin1'); if (/\r\n\r\n/.test(text)) done(); });
    s.on('close', done);
    s.on('error', () => {});
    s.write(`POST /upload HTTP/1.1\r\nHost: ${host}\r\nContent-Length: ${length}\r\n\r\nx`);
    timer = setInterval(() => { if (!s.destroyed) s.write('x'); }, everyMs);
  });
}

describe('a request body that does not finish in time', () => {
  it('a client trickling its body gets 408 when the timeout runs out, and the endpoint\'s slot is free again', async () => {
    const r = await trickle('slow.test', 1_000_000, 300, 6000);
    expect(r.text).toMatch(/^HTTP\/1\.1 408 /);
    expect(r.text).toMatch(/x-berth-error: request_timeout/i);
    expect(r.ms).toBeLessThan(3000);
    // the cap (1 per endpoint) is free: an ordinary request is served at once, not queued
    const t0 = Date.now();
    expect((await get(p, 'slow.test', '/after')).status).toBe(200);
    expect(Date.now() - t0).toBeLessThan(500);
  });

  it('a steady upload longer than the timeout goes through: each 16 KiB of body pushes it back', async () => {
    const chunk = Buffer.alloc(64 * 1024, 97);
    const n = 25; // 1.6 MiB over 2.5 s, against a 1 s timeout
    const s = connect(p.port, '127.0.0.1');
    let text = '';
    s.on('data', (c) => { text += c.toString('latin1'); });
    s.on('error', () => {});
    s.write(`POST /steady HTTP/1.1\r\nHost: slow.test\r\nContent-Length: ${chunk.length * n}\r\n\r\n`);
    for (let i = 0; i < n; i++) {
      s.write(chunk);
      await new Promise((r) => setTimeout(r, 100));
    }
    await new Promise<void>((resolve) => {
      const t0 = Date.now();
      const check = setInterval(() => { if (/"bytes":\d+/.test(text) || Date.now() - t0 > 4000) { clearInterval(check); resolve(); } }, 20);
    });
    s.destroy();
    expect(text).toMatch(/^HTTP\/1\.1 200 /);
    expect(text).toContain(`"bytes":${chunk.length * n}`);
  });

  it('an app that stops reading the body: 408 after the timeout (the client was paused, not forgotten)', async () => {
    const s = connect(p.port, '127.0.0.1');
    let text = '';
    s.on('data', (c) => { text += c.toString('latin1'); });
    s.on('error', () => {});
    const t0 = Date.now();
    s.write('POST /upload HTTP/1.1\r\nHost: deaf.test\r\nContent-Length: 67108864\r\n\r\n');
    // far more than the socket buffers on the way hold
    const chunk = Buffer.alloc(1 << 20, 120);
    for (let i = 0; i < 16; i++) s.write(chunk);
    await new Promise<void>((resolve) => {
      const check = setInterval(() => { if (/\r\n\r\n/.test(text) || Date.now() - t0 > 6000) { clearInterval(check); resolve(); } }, 50);
    });
    s.destroy();
    expect(text).toMatch(/^HTTP\/1\.1 408 /);
    expect(Date.now() - t0).toBeLessThan(4000);
  });
});
