/**
 * health/checker.ts: a starting instance that never answers is said to be unhealthy after the
 * startup grace by the clock — not after a count of probes, which a probe hanging until its
 * timeout stretched from 30 s to 20 minutes of the 25 ms loop.
 */
import { createServer, type Server, type Socket } from 'node:net';
import { once } from 'node:events';
import { afterAll, expect, it } from 'vitest';
import pino from 'pino';
import { HealthChecker } from '../../control-plane/health/checker.js';

const sockets: Socket[] = [];
let server: Server | undefined;
afterAll(() => { for (const s of sockets) s.destroy(); server?.close(); });

it('an instance that accepts and never answers is unhealthy after the grace, though each probe waits its whole timeout', async () => {
  // accepts, reads, never answers: every probe takes its whole timeout
  server = createServer((s) => { sockets.push(s); s.resume(); });
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  const port = (server.address() as { port: number }).port;
  let health = 'unknown';
  const transitions: Array<[string, number]> = [];
  const db = {
    query: async () => ({ rows: [{ id: 1, health, host_port: port, container_ip: null, internal_port: 8080, health_path: '/' }] }),
  };
  const t0 = Date.now();
  const checker = new HealthChecker(db as never, { intervalMs: 100, timeoutMs: 300, healthyThreshold: 1, unhealthyThreshold: 2, startupGraceMs: 1500 }, '127.0.0.1',
    async (_id, h) => { health = h; transitions.push([h, Date.now() - t0]); }, pino({ level: 'silent' }));
  checker.start();
  try {
    await new Promise<void>((resolve, reject) => {
      const until = Date.now() + 8000;
      const look = setInterval(() => {
        if (transitions.length > 0) { clearInterval(look); resolve(); }
        else if (Date.now() > until) { clearInterval(look); reject(new Error('still unknown after 8 s')); }
      }, 50);
    });
  } finally {
    checker.stop();
  }
  expect(transitions[0][0]).toBe('unhealthy');
  expect(transitions[0][1]).toBeGreaterThanOrEqual(1500);
  expect(transitions[0][1]).toBeLessThan(3000);
}, 15_000);
