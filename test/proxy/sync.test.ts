import { afterAll, describe, expect, it } from 'vitest';
import { createServer, type ServerResponse } from 'node:http';
import { once } from 'node:events';
import type { AddressInfo } from 'node:net';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { get, route, startProxy, startUpstream, table, waitFor, type ProxyProc } from './harness.js';

/**
 * The proxy's control-plane subscription against a real SSE server on loopback speaking the
 * /v1/routes/watch protocol (the control plane's own implementation is tested in test/e2e).
 */
function sseServer(token: string) {
  const clients = new Set<ServerResponse>();
  const reports: Array<{ proxyId: string; tableVersion: number | null }> = [];
  /** route ids the proxy asked to wake (POST /v1/routes/:id/activate) */
  const activations: string[] = [];
  const watchUrls: string[] = [];
  let current = '';
  const server = createServer((req, res) => {
    if (req.headers.authorization !== `Bearer ${token}`) { res.writeHead(401); res.end('{"error":{"code":"unauthorized"}}'); return; }
    if (req.url?.split('?')[0] === '/v1/routes/watch') {
      watchUrls.push(req.url);
      res.writeHead(200, { 'content-type': 'text/event-stream' });
      res.write(': hello\n\n');
      if (current) res.write(`event: routes\ndata: ${current}\n\n`);
      clients.add(res);
      res.on('close', () => clients.delete(res));
      return;
    }
    if (req.url === '/v1/proxy/report') {
      let b = '';
      req.on('data', (c) => (b += c));
      req.on('end', () => { reports.push(JSON.parse(b)); res.writeHead(204); res.end(); });
      return;
    }
    const wake = /^\/v1\/routes\/([^/]+)\/activate$/.exec(req.url ?? '');
    if (wake !== null && req.method === 'POST') {
      activations.push(decodeURIComponent(wake[1]));
      res.writeHead(202, { 'content-type': 'application/json' });
      res.end('{"starting":true}');
      return;
    }
    res.writeHead(404); res.end();
  });
  return {
    server, reports, watchUrls, activations,
    publish(t: object) {
      current = JSON.stringify(t);
      for (const c of clients) c.write(`event: routes\ndata: ${current}\n\n`);
    },
    publishRaw(s: string) { for (const c of clients) c.write(s); },
    async listen(port = 0) { server.listen(port, '127.0.0.1'); await once(server, 'listening'); return (server.address() as AddressInfo).port; },
    async close() { for (const c of clients) c.destroy(); server.closeAllConnections(); await new Promise((r) => server.close(r)); },
  };
}

const procs: ProxyProc[] = [];
afterAll(async () => { for (const p of procs) await p.stop(); });

describe('control-plane subscription', () => {
  it('applies pushed tables, reports back, survives the control plane going away, and restarts from the persisted table', async () => {
    const a = await startUpstream('a');
    const b = await startUpstream('b');
    const cp = sseServer('tok');
    const cpPort = await cp.listen();
    const dataDir = mkdtempSync(join(tmpdir(), 'berth-sync-'));
    try {
      cp.publish(table([route('img-1', ['app.test'], [a.address])], 100));
      const args = ['--control-plane', `http://127.0.0.1:${cpPort}`, '--token', 'tok', '--data-dir', dataDir];
      const p = await startProxy(null, args);
      procs.push(p);
      await waitFor(async () => (await get(p, 'app.test')).status === 200);
      expect(JSON.parse((await get(p, 'app.test')).body).name).toBe('a');
      await waitFor(() => cp.reports.some((r) => r.tableVersion === 100));
      // it asks for whole tables, traffic splits included (older proxies do not, and get them without)
      expect(cp.watchUrls[0]).toBe('/v1/routes/watch?features=split%2Caffinity%2Cauth%2Cpipeline');

      // a change is pushed: applied within a moment
      cp.publish(table([route('img-1', ['app.test'], [b.address])], 101));
      await waitFor(async () => JSON.parse((await get(p, 'app.test')).body).name === 'b', 3000);
      await waitFor(() => cp.reports.some((r) => r.tableVersion === 101));

      // an invalid table is ignored
      cp.publishRaw('event: routes\ndata: {"version": 102, "routes": [{"id": 1}]}\n\n');
      await new Promise((r) => setTimeout(r, 200));
      expect(JSON.parse((await get(p, 'app.test')).body).name).toBe('b');

      // control plane gone: the proxy keeps serving the last table
      await cp.close();
      for (let i = 0; i < 5; i++) expect((await get(p, 'app.test')).status).toBe(200);

      // proxy restarted while the control plane is down: serves the persisted table
      await p.stop();
      const p2 = await startProxy(null, args);
      procs.push(p2);
      await waitFor(async () => (await get(p2, 'app.test')).status === 200, 5000);
      expect(JSON.parse((await get(p2, 'app.test')).body).name).toBe('b');

      // control plane back on the same port: the proxy reconnects and takes new tables
      const cp2 = sseServer('tok');
      await cp2.listen(cpPort);
      cp2.publish(table([route('img-1', ['app.test'], [a.address])], 103));
      await waitFor(async () => JSON.parse((await get(p2, 'app.test')).body).name === 'a', 15_000);
      await cp2.close();
    } finally {
      // stop the proxies before removing the data dir they write (the persisted table)
      for (const p of procs.splice(0)) await p.stop();
      await a.close();
      await b.close();
      rmSync(dataDir, { recursive: true, force: true });
    }
  }, 60_000);

  it.each([
    ['', {}, false],
    [', with no retries', { retry: { attempts: 0 } }, false],
    [', its new instance on the same address', {}, true],
  ] as const)('an app scaled to zero whose instance is gone before the table says so is woken, not answered from the fallback cache%s', async (_what, extra, samePort) => {
    const a = await startUpstream('a');
    const cp = sseServer('tok');
    const cpPort = await cp.listen();
    const dataDir = mkdtempSync(join(tmpdir(), 'berth-sync-'));
    let b: Awaited<ReturnType<typeof startUpstream>> | null = null;
    try {
      // min_instances 0: the control plane marks the route `wake` while it has an instance too
      cp.publish(table([route('img-1', ['app.test'], [a.address], { wake: true, ...extra })], 200));
      const p = await startProxy(null, ['--control-plane', `http://127.0.0.1:${cpPort}`, '--token', 'tok', '--data-dir', dataDir]);
      procs.push(p);
      await waitFor(async () => (await get(p, 'app.test')).status === 200);
      for (let i = 0; i < 3; i++) expect(JSON.parse((await get(p, 'app.test')).body).name).toBe('a'); // pooled, and in the fallback cache
      // the instance stops (its keep-alive connections end, its port refuses); the table still names it
      await a.close();
      const held = get(p, 'app.test');
      await waitFor(() => cp.activations.includes('img-1'), 5000);
      b = await startUpstream('b', undefined, samePort ? Number(a.address.split(':')[1]) : 0);
      cp.publish(table([route('img-1', ['app.test'], [b.address], { wake: true, ...extra })], 201));
      const r = await held;
      expect(r.status).toBe(200);
      expect(JSON.parse(r.body).name).toBe('b');
    } finally {
      for (const p of procs.splice(0)) await p.stop();
      await cp.close();
      await b?.close();
      rmSync(dataDir, { recursive: true, force: true });
    }
  }, 30_000);

  it('a burst of tables costs a few applies, not one each: it ends on the newest', async () => {
    const a = await startUpstream('a');
    const cp = sseServer('tok');
    const cpPort = await cp.listen();
    const dataDir = mkdtempSync(join(tmpdir(), 'berth-sync-'));
    try {
      // 2,000 routes a table, so that each apply takes a while
      const big = (v: number) => table(Array.from({ length: 2000 }, (_, i) => route(`img-${i + 1}`, [`app${i}.test`], [a.address])), v);
      cp.publish(big(300));
      const p = await startProxy(null, ['--control-plane', `http://127.0.0.1:${cpPort}`, '--token', 'tok', '--data-dir', dataDir]);
      procs.push(p);
      await waitFor(async () => (await get(p, 'app0.test')).status === 200);
      const applied = () => (p.logs().match(/"route table applied"/g) ?? []).length;
      const before = applied();
      // a tenant toggling a setting in a loop: 100 tables, as fast as they can be written
      for (let v = 301; v <= 400; v++) cp.publish(big(v));
      await waitFor(async () => (await fetch(`${p.admin}/readyz`).then((r) => r.json())).tableVersion === 400, 20_000);
      const n = applied() - before;
      expect(n).toBeGreaterThan(0);
      expect(n).toBeLessThan(50);
    } finally {
      for (const p of procs.splice(0)) await p.stop();
      await cp.close();
      await a.close();
      rmSync(dataDir, { recursive: true, force: true });
    }
  }, 40_000);

  it('reconnects when the stream goes silent (half-open connection) instead of keeping a stale table', async () => {
    const cp = sseServer('tok');
    let connections = 0;
    cp.server.prependListener('request', (req) => { if (req.url?.split('?')[0] === '/v1/routes/watch') connections++; });
    const port = await cp.listen();
    const a = await startUpstream('a');
    try {
      cp.publish(table([route('img-1', ['quiet.test'], [a.address])], 1));
      const p = await startProxy(null, ['--control-plane', `http://127.0.0.1:${port}`, '--token', 'tok', '--watch-idle-ms', '300']);
      procs.push(p);
      await waitFor(async () => (await get(p, 'quiet.test')).status === 200);
      // the server never pings: after 300 ms of silence the proxy must drop the stream and resubscribe
      await waitFor(() => connections >= 2, 5000);
      expect((await get(p, 'quiet.test')).status).toBe(200);
    } finally {
      await cp.close();
      await a.close();
    }
  });

  it('refuses to start with --control-plane but no token', async () => {
    await expect(startProxy(null, ['--control-plane', 'http://127.0.0.1:1'])).rejects.toThrow(/--token/);
  });
});
