import http, { type Server } from 'node:http';
import { connect, type Socket } from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startTestControlPlane, type TestControlPlane } from '../helpers/control-plane.js';

/**
 * Slow clients against the control plane's API server (control-plane/app.ts: Fastify on Node's
 * http.Server). Pins the limits it runs with — the whole request within 10 minutes
 * (`requestTimeout`, berth's), the head within 60 s (Node's `headersTimeout`, checked every 30 s:
 * a slowloris is closed 60–90 s after it connected), a 1 MiB JSON body — and that they are enforced:
 * a head trickled byte by byte, a connection that never sends a byte and a body trickled after its
 * head each get 408 and a closed connection, while other clients are answered meanwhile.
 *
 * The control plane takes no option for these limits, and waiting 60–90 s for each is too slow a
 * test: after checking the configured values, the tests lower `headersTimeout` and `requestTimeout`
 * on the live server (Node reads them at each check) and have the connections checked every 100 ms
 * (`connectionsCheckingInterval`, added to the options Fastify passes to `http.createServer`).
 */
let t: TestControlPlane;
let server: Server;
let port: number;
/** the options the control plane's Fastify passed to http.createServer */
let passed: http.ServerOptions | undefined;

const CHECK_MS = 100;

beforeAll(async () => {
  const createServer = http.createServer;
  const made = new Map<Server, http.ServerOptions | undefined>();
  (http as { createServer: unknown }).createServer = (opts: http.ServerOptions | undefined, handler: http.RequestListener) => {
    const s = createServer.call(http, { ...(opts ?? {}), connectionsCheckingInterval: CHECK_MS }, handler);
    made.set(s, opts);
    return s;
  };
  try {
    t = await startTestControlPlane({ seedDefaultUser: false, dockerHost: 'unix:///nonexistent/docker.sock' });
  } finally {
    (http as { createServer: unknown }).createServer = createServer;
  }
  server = t.cp.app.server as Server;
  expect(made.has(server), 'the API server was made through http.createServer').toBe(true);
  passed = made.get(server);
  port = Number(new URL(t.cp.url).port);
});

afterAll(async () => {
  await t?.close();
});

interface Slow { socket: Socket; received: () => string; closedAfter: Promise<number> }

/** An answer in the API's error shape, with its request id in a header too. */
function expectApiError(raw: string, code: string): void {
  const [head, body] = raw.split('\r\n\r\n');
  const id = /\r\nx-request-id: (\S+)/i.exec(head)?.[1];
  expect(head).toMatch(/\r\ncontent-type: application\/json/i);
  expect(JSON.parse(body)).toEqual({ error: { code, message: expect.any(String), requestId: id } });
}

/** A raw connection: `closedAfter` is the time from connecting to the server closing it. */
function open(halfOpen = false): Slow {
  const started = Date.now();
  // (halfOpen: a client that keeps its side open and sending after the server's FIN, as a slowloris would)
  const socket = connect({ port, host: '127.0.0.1', allowHalfOpen: halfOpen });
  let data = '';
  socket.setEncoding('latin1');
  socket.on('data', (c: string) => { data += c; });
  socket.on('error', () => {});
  const closedAfter = new Promise<number>((resolve) => socket.on('close', () => resolve(Date.now() - started)));
  return { socket, received: () => data, closedAfter };
}

/** Write `text` one byte every `everyMs` until the socket closes (never finishing on its own if `text` is long). */
function trickle(s: Slow, text: string, everyMs: number): void {
  let i = 0;
  const timer = setInterval(() => {
    if (s.socket.destroyed || i >= text.length) { clearInterval(timer); return; }
    s.socket.write(text[i++]);
  }, everyMs);
  s.socket.on('close', () => clearInterval(timer));
}

/** A normal client, timed. */
async function timedGet(path: string): Promise<{ status: number; ms: number }> {
  const t0 = Date.now();
  const r = await fetch(`${t.cp.url}${path}`);
  await r.arrayBuffer();
  return { status: r.status, ms: Date.now() - t0 };
}

describe('the limits the API server is configured with', () => {
  it('whole request 10 min, head 60 s (Node\'s default, checked every 30 s), keep-alive 72 s, JSON bodies 1 MiB', async () => {
    expect(server.requestTimeout).toBe(10 * 60_000);
    expect(server.headersTimeout).toBe(60_000);
    expect(server.headersTimeout).toBeLessThanOrEqual(server.requestTimeout);
    // the control plane passes no http options of its own: Node checks the connections every 30 s
    expect(passed?.connectionsCheckingInterval).toBeUndefined();
    expect(server.keepAliveTimeout).toBe(72_000);
    expect(t.cp.app.initialConfig.bodyLimit).toBe(1024 * 1024);
    const big = await fetch(`${t.cp.url}/api/auth/login`, {
      method: 'POST', headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ email: 'x@example.com', password: 'p'.repeat(1024 * 1024) }),
    });
    expect(big.status).toBe(413);
  });
});

describe('slow clients are cut off, others are served', () => {
  const HEAD_MS = 1500;
  const REQUEST_MS = 3000;
  // the check runs every CHECK_MS; the rest is a loaded machine's slack
  const MARGIN_MS = CHECK_MS + 1500;

  beforeAll(() => {
    server.headersTimeout = HEAD_MS;
    server.requestTimeout = REQUEST_MS;
  });

  it('slowloris heads (a byte every 100 ms, never ending) and a silent connection: 408 and closed within headersTimeout', async () => {
    const headers = Array.from({ length: 100 }, (_, i) => `X-Slow-${i}: ${'a'.repeat(20)}\r\n`).join('');
    const slow = Array.from({ length: 5 }, () => open());
    for (const s of slow) {
      s.socket.write('GET /api/info HTTP/1.1\r\nHost: 127.0.0.1\r\n');
      trickle(s, headers, 100);
    }
    const silent = open();
    // one that ignores the answer and goes on sending: its socket goes all the same
    const stubborn = open(true);
    stubborn.socket.write('GET /api/info HTTP/1.1\r\nHost: 127.0.0.1\r\n');
    trickle(stubborn, headers, 100);

    // meanwhile, other clients are answered at once, again and again
    const served: { status: number; ms: number }[] = [];
    const busy = (async () => {
      for (let i = 0; i < 6; i++) {
        served.push(await timedGet('/api/info'));
        await new Promise((r) => setTimeout(r, 250));
      }
    })();

    const took = await Promise.all([...slow, silent, stubborn].map((s) => s.closedAfter));
    await busy;
    for (const [i, s] of [...slow, silent, stubborn].entries()) {
      expect(s.received(), `connection ${i}`).toMatch(/^HTTP\/1\.1 408 /);
      expectApiError(s.received(), 'request_timeout');
      expect(took[i], `connection ${i} closed after ${took[i]} ms`).toBeGreaterThanOrEqual(HEAD_MS - 100);
      expect(took[i], `connection ${i} closed after ${took[i]} ms`).toBeLessThanOrEqual(HEAD_MS + MARGIN_MS);
    }
    for (const r of served) expect(r.status).toBe(200);
    expect(Math.max(...served.map((r) => r.ms)), 'slowest normal request (ms)').toBeLessThan(1000);
  });

  it('a body trickled after a complete head (a login): 408 and closed within requestTimeout', async () => {
    const body = JSON.stringify({ email: 'slow@example.com', password: 'x'.repeat(200) });
    const s = open();
    s.socket.write(`POST /api/auth/login HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: ${body.length}\r\n\r\n`);
    trickle(s, body, 100); // 200+ bytes at 10 a second: not done before the limit
    const normal = await timedGet('/healthz');
    expect(normal.status).toBe(200);
    const took = await s.closedAfter;
    expect(s.received()).toMatch(/^HTTP\/1\.1 408 /);
    expectApiError(s.received(), 'request_timeout');
    expect(took).toBeGreaterThanOrEqual(REQUEST_MS - 100);
    expect(took).toBeLessThanOrEqual(REQUEST_MS + MARGIN_MS);
  });
});

describe('bytes that are not a request', () => {
  it('a malformed request line is a 400 and an oversized head a 431, in the API\'s error shape; the connection is closed', async () => {
    for (const [bytes, status, code] of [
      ['GET /api/info HTTP/1.1\r\nHost: 127.0.0.1\r\nBad Header\r\n\r\n', 400, 'bad_request'],
      ['NOT A REQUEST\r\n\r\n', 400, 'bad_request'],
      [`GET /api/info HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Big: ${'a'.repeat(20_000)}\r\n\r\n`, 431, 'headers_too_large'],
    ] as const) {
      const s = open();
      s.socket.write(bytes);
      await s.closedAfter;
      expect(s.received(), JSON.stringify(bytes.slice(0, 40))).toMatch(new RegExp(`^HTTP/1\\.1 ${status} `));
      expectApiError(s.received(), code);
    }
  });
});
