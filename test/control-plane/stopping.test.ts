/**
 * A control plane that is stopping answers what still reaches it (a request pipelined on a busy
 * keep-alive connection: closing reaps only idle ones) with 503 `shutting_down` in the API's
 * shape, Retry-After and Connection: close — not Fastify's own body — and the request in flight
 * finishes first. A real server and a raw socket.
 */
import { connect } from 'node:net';
import { expect, it } from 'vitest';
import { Api } from '../helpers/api.js';
import { startTestControlPlane } from '../helpers/control-plane.js';

it('a request that arrives while it stops gets 503 shutting_down in the API\'s shape; the one in flight is answered', async () => {
  const t = await startTestControlPlane({ env: 'development' });
  try {
    await new Api(t.cp.url).signup('stopping@example.com');
    const { port } = new URL(t.cp.url);
    const sock = connect(Number(port), '127.0.0.1');
    let got = '';
    sock.on('data', (b) => { got += b.toString('latin1'); });
    const ended = new Promise<void>((resolve) => sock.on('close', () => resolve()));
    await new Promise<void>((resolve) => sock.once('connect', () => resolve()));
    // in flight: a request whose body is still coming
    const body = JSON.stringify({ email: 'stopping@example.com', password: 'correct-horse-1' });
    sock.write(`POST /api/auth/login HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: ${body.length}\r\n\r\n${body.slice(0, 5)}`);
    await new Promise((r) => setTimeout(r, 300));
    const closing = t.cp.close();
    await new Promise((r) => setTimeout(r, 300));
    // its body ends, and another request follows on the same connection
    sock.write(`${body.slice(5)}GET /api/info HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n`);
    await ended;
    await closing;
    const answers = got.split(/(?=HTTP\/1\.1 )/);
    expect(answers.map((a) => a.split('\r\n')[0])).toEqual(['HTTP/1.1 200 OK', 'HTTP/1.1 503 Service Unavailable']);
    const [head, json] = answers[1].split('\r\n\r\n');
    expect(head.toLowerCase()).toContain('connection: close');
    expect(head.toLowerCase()).toContain('retry-after: 1');
    expect(JSON.parse(json).error).toMatchObject({ code: 'shutting_down', message: 'the control plane is stopping; try again in a moment' });
  } finally {
    await t.close(); // (the control plane's close is the one already under way)
  }
}, 30_000);
