import { afterAll, describe, expect, it } from 'vitest';
import { createServer, type ServerResponse } from 'node:http';
import { once } from 'node:events';
import type { AddressInfo } from 'node:net';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { get, route, startProxy, startUpstream, table, waitFor, type ProxyProc, type Upstream } from './harness.js';

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
  /** what a wake call is answered (the control plane's: 202 starting, or 409 when no instance can start) */
  const wakeAnswer = { status: 202, body: '{"starting":true}' };
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
      res.writeHead(wakeAnswer.status, { 'content-type': 'application/json' });
      res.end(wakeAnswer.body);
      return;
    }
    res.writeHead(404); res.end();
  });
  return {
    server, reports, watchUrls, activations, wakeAnswer,
    publish(t: object) {
      current = JSON.stringify(t);
      for (const c of clients) c.write(`event: routes\ndata: ${current}\n\n`);
    },
    publishRaw(s: string) { for (const c of clients) c.write(s); },
    /** a route change (`event: delta`) to the clients; `current` is what a new stream starts with */
    publishDelta(d: object, next: object) {
      current = JSON.stringify(next);
      for (const c of clients) c.write(`event: delta\ndata: ${JSON.stringify(d)}\n\n`);
    },
    /** the table a new stream starts with, sent to no one now */
    setCurrent(t: object) { current = JSON.stringify(t); },
    async listen(port = 0) { server.listen(port, '127.0.0.1'); await once(server, 'listening'); return (server.address() as AddressInfo).port; },
    async close() { for (const c of clients) c.destroy(); server.closeAllConnections(); await new Promise((r) => server.close(r)); },
  };
}

const procs: ProxyProc[] = [];
afterAll(async () => { for (const p of procs) await p.stop(); });

/** Two upstreams answering their names ('a', 'b'), a watch server and a data dir; all stopped and removed after `fn` (the proxies first: they write the data dir). */
async function withRig(fn: (rig: { a: Upstream; b: Upstream; cp: ReturnType<typeof sseServer>; cpPort: number; dataDir: string }) => Promise<void>): Promise<void> {
  const a = await startUpstream('a');
  const b = await startUpstream('b');
  const cp = sseServer('tok');
  const cpPort = await cp.listen();
  const dataDir = mkdtempSync(join(tmpdir(), 'berth-sync-'));
  try {
    await fn({ a, b, cp, cpPort, dataDir });
  } finally {
    for (const p of procs.splice(0)) await p.stop();
    await cp.close();
    await a.close();
    await b.close();
    rmSync(dataDir, { recursive: true, force: true });
  }
}

describe('control-plane subscription', () => {
  it('applies pushed tables, reports back, survives the control plane going away, and restarts from the persisted table', async () => {
    await withRig(async ({ a, b, cp, cpPort, dataDir }) => {
      cp.publish(table([route('img-1', ['app.test'], [a.address])], 100));
      const args = ['--control-plane', `http://127.0.0.1:${cpPort}`, '--token', 'tok', '--data-dir', dataDir];
      const p = await startProxy(null, args);
      procs.push(p);
      await waitFor(async () => (await get(p, 'app.test')).status === 200);
      expect(JSON.parse((await get(p, 'app.test')).body).name).toBe('a');
      await waitFor(() => cp.reports.some((r) => r.tableVersion === 100));
      // it asks for whole tables, traffic splits included (older proxies do not, and get them without)
      expect(cp.watchUrls[0]).toBe('/v1/routes/watch?features=split%2Caffinity%2Cauth%2Cpipeline%2Cdelta');

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
    });
  }, 60_000);

  it.each([[1], [2]])('applies route deltas (%i worker threads): changed routes in place, removals, a delta that does not fit ends the stream for a whole table; the merged table is persisted', async (workers) => {
    await withRig(async ({ a, b, cp, cpPort, dataDir }) => {
    const name = async (p: ProxyProc, host: string) => {
      const r = await get(p, host);
      return r.status === 200 ? (JSON.parse(r.body) as { name: string }).name : r.status;
    };
      const r1 = route('img-1', ['one.test'], [a.address]);
      const r2 = route('img-2', ['two.test'], [a.address]);
      cp.publish(table([r1, r2], 1));
      const args = ['--control-plane', `http://127.0.0.1:${cpPort}`, '--token', 'tok', '--data-dir', dataDir, '--workers', String(workers)];
      const p = await startProxy(null, args);
      procs.push(p);
      await waitFor(async () => (await name(p, 'one.test')) === 'a');

      // a route changed: only it moves
      const r1b = route('img-1', ['one.test'], [b.address]);
      cp.publishDelta({ base: 1, version: 2, upsert: [r1b], remove: [] }, table([r1b, r2], 2));
      await waitFor(async () => (await name(p, 'one.test')) === 'b', 3000);
      expect(await name(p, 'two.test')).toBe('a');
      await waitFor(() => cp.reports.some((r) => r.tableVersion === 2));

      // one added, one removed, in one delta; then a second delta on top of it
      const r3 = route('img-3', ['three.test'], [b.address]);
      cp.publishDelta({ base: 2, version: 3, upsert: [r3], remove: ['img-2'] }, table([r1b, r3], 3));
      const r3a = route('img-3', ['three.test', '*.three.test'], [a.address]);
      cp.publishDelta({ base: 3, version: 4, upsert: [r3a], remove: [] }, table([r1b, r3a], 4));
      await waitFor(async () => (await name(p, 'x.three.test')) === 'a', 3000);
      expect(await name(p, 'two.test')).toBe(404);
      expect(await name(p, 'three.test')).toBe('a');
      expect(await name(p, 'one.test')).toBe('b');
      expect(cp.watchUrls).toHaveLength(1);
      // applied as deltas on every thread (not the whole table sent to each)
      expect(p.logs()).toMatch(/"version":2,"routes":2,.*"deltas":1/);
      expect(p.logs()).not.toMatch(/route deltas failed/);

      // a delta from a table this proxy does not have: it keeps serving, drops the stream and
      // reads the whole table again
      const whole5 = table([route('img-1', ['one.test'], [a.address]), r3a], 5);
      cp.publishDelta({ base: 3, version: 5, upsert: [], remove: ['img-1'] }, whole5);
      await waitFor(() => cp.watchUrls.length === 2, 5000);
      await waitFor(async () => (await name(p, 'one.test')) === 'a', 5000);
      await waitFor(() => cp.reports.some((r) => r.tableVersion === 5));

      // a delta that would make a bad table (a host served twice), or removes a route the table
      // does not have: the same (the reconnects back off; the other refusals: units.test.ts)
      for (const bad of [
        `event: delta\ndata: ${JSON.stringify({ base: 5, version: 6, upsert: [route('img-9', ['one.test'], [b.address])], remove: [] })}\n\n`,
        'event: delta\ndata: {"base": 5, "version": 6, "upsert": [], "remove": ["img-404"]}\n\n',
      ]) {
        const streams = cp.watchUrls.length;
        cp.publishRaw(bad);
        await waitFor(() => cp.watchUrls.length === streams + 1, 5000);
        expect(await name(p, 'one.test')).toBe('a');
        expect(await name(p, 'three.test')).toBe('a');
      }

      // the table deltas made is what a restarted proxy serves before the control plane answers
      const r1c = route('img-1', ['one.test', 'uno.test'], [b.address]);
      cp.publishDelta({ base: 5, version: 7, upsert: [r1c], remove: [] }, table([r1c, r3a], 7));
      await waitFor(async () => (await name(p, 'uno.test')) === 'b', 3000);
      await cp.close();
      await p.stop();
      const p2 = await startProxy(null, args);
      procs.push(p2);
      await waitFor(async () => (await name(p2, 'uno.test')) === 'b', 5000);
      expect(await name(p2, 'x.three.test')).toBe('a');
    });
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

  it.each([['one thread', []], ['two worker threads', ['--workers', '2']]] as const)('a wake the control plane cannot do (its owner\'s quota is full) answers the held requests 503 at once (%s)', async (_what, workers) => {
    const cp = sseServer('tok');
    const cpPort = await cp.listen();
    const dataDir = mkdtempSync(join(tmpdir(), 'berth-sync-'));
    try {
      cp.wakeAnswer.status = 409;
      cp.wakeAnswer.body = '{"error":{"code":"container_quota_exceeded","message":"route img-1 has no instance and its owner\'s container quota is full: none can start now"}}';
      // scaled to zero: no endpoint, held for a wake (for up to 30 s by default)
      cp.publish(table([route('img-1', ['app.test'], [], { wake: true })], 300));
      const p = await startProxy(null, ['--control-plane', `http://127.0.0.1:${cpPort}`, '--token', 'tok', '--data-dir', dataDir, ...workers]);
      procs.push(p);
      await waitFor(async () => (await get(p, 'other.test')).status === 404); // the table is in
      const t0 = Date.now();
      const rs = await Promise.all([get(p, 'app.test'), get(p, 'app.test', '/x')]);
      expect(Date.now() - t0).toBeLessThan(5000);
      for (const r of rs) {
        expect([r.status, r.headers['x-berth-error']]).toEqual([503, 'not_started']);
        expect(r.body).toMatch(/^503 not_started: route "img-1": the app is at zero instances and cannot start one now/);
      }
      expect(cp.activations).toContain('img-1');
      // a wake that works again: the next request is held and answered by the new instance
      cp.wakeAnswer.status = 202;
      cp.wakeAnswer.body = '{"starting":true}';
      const a = await startUpstream('a');
      try {
        const held = get(p, 'app.test');
        await waitFor(() => cp.activations.length >= 2, 10_000);
        cp.publish(table([route('img-1', ['app.test'], [a.address], { wake: true })], 301));
        expect((await held).status).toBe(200);
      } finally {
        await a.close();
      }
    } finally {
      for (const p of procs.splice(0)) await p.stop();
      await cp.close();
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
