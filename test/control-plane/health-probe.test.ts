import { createServer, type Server } from 'node:http';
import type { Socket } from 'node:net';
import { afterAll, beforeAll, expect, it, describe } from 'vitest';
import { probe } from '../../control-plane/health/checker.js';

/** HTTP health probes against a loopback server whose health endpoint streams forever. */
describe('health probe (HTTP)', () => {
  let server: Server;
  let port: number;
  const open = new Set<Socket>();
  const timers = new Set<NodeJS.Timeout>();

  beforeAll(async () => {
    server = createServer((_req, res) => {
      res.writeHead(200, { 'content-type': 'text/plain' });
      const t = setInterval(() => res.write('still here\n'), 20);
      timers.add(t);
      res.on('close', () => { clearInterval(t); timers.delete(t); });
    });
    server.on('connection', (s) => { open.add(s); s.on('close', () => open.delete(s)); });
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
    port = (server.address() as { port: number }).port;
  });

  afterAll(async () => {
    for (const t of timers) clearInterval(t);
    for (const s of open) s.destroy();
    await new Promise((r) => server.close(r));
  });

  it('closes the connection after reading the status, even when the body never ends', async () => {
    for (let i = 0; i < 20; i++) {
      const r = await probe({ host: '127.0.0.1', port, containerIp: null, internalPort: null, path: '/health' }, 1000);
      expect(r).toEqual({ ok: true, detail: 'HTTP 200 from GET /health' });
    }
    const deadline = Date.now() + 2000;
    while (open.size > 0 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 20));
    expect(open.size).toBe(0);
  });
});
