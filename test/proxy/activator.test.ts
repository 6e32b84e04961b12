import { createServer, type Server } from 'node:http';
import type { AddressInfo, Socket } from 'node:net';
import { pino } from 'pino';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ACTIVATE_CONNECTIONS, Activator } from '../../proxy/sync/activator.js';

/**
 * The proxy's wake calls (proxy/sync/activator.ts) to a control plane: a burst over many
 * scaled-to-zero routes is one call per route, over at most ACTIVATE_CONNECTIONS connections
 * (the API closes connections past its per-address cap), each with the proxy token.
 */
let server: Server;
let url: string;
const asked: string[] = [];
let open = 0;
let most = 0;

beforeAll(async () => {
  server = createServer((req, res) => {
    asked.push(`${req.method} ${req.url} ${req.headers.authorization}`);
    // a slow control plane: every call waits, so a burst would need a connection each
    setTimeout(() => res.end('{}'), 300);
  });
  server.on('connection', (s: Socket) => {
    most = Math.max(most, ++open);
    s.on('close', () => open--);
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  url = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
});

afterAll(async () => {
  server.closeAllConnections();
  await new Promise((r) => server.close(r));
});

describe('Activator', () => {
  it('wakes 60 routes at once over at most ACTIVATE_CONNECTIONS connections, once per route, with the token', async () => {
    const a = new Activator(url, 'tok', pino({ level: 'silent' }));
    try {
      for (let i = 0; i < 60; i++) a.activate(`r${i}`);
      for (let i = 0; i < 60; i++) a.activate(`r${i}`); // (asked a moment ago: not again)
      for (const until = Date.now() + 10_000; asked.length < 60 && Date.now() < until;) await new Promise((r) => setTimeout(r, 20));
      expect(asked.length).toBe(60);
      expect(new Set(asked).size).toBe(60);
      expect(asked.every((l) => /^POST \/v1\/routes\/r\d+\/activate Bearer tok$/.test(l))).toBe(true);
      expect(most).toBeGreaterThan(1);
      expect(most).toBeLessThanOrEqual(ACTIVATE_CONNECTIONS);
    } finally {
      await a.close();
    }
  });
});
