/**
 * A worker thread that dies is started again in its place (proxy/workers/pool.ts), as nginx's
 * master starts a dead worker process again: the others go on serving, the new one serves the
 * table the proxy serves now before it takes a connection, whatever waited for the dead one is
 * answered, and one that keeps dying young waits longer each time.
 *
 * The pool runs in this process, its workers the built worker (dist/proxy/workers/worker.js)
 * with a way to crash them beside it (test/helpers/crashing-proxy-worker.mjs): an exception
 * thrown from the thread's event loop that nothing catches. (Worker.terminate() would not do:
 * a thread that ends with uWS's sockets open aborts the whole process — which is why the worker
 * closes them before it exits.)
 */
import { request as httpRequest } from 'node:http';
import { createServer, type AddressInfo } from 'node:net';
import type { Worker } from 'node:worker_threads';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { WorkerPool as Pool } from '../../proxy/workers/pool.js';
import type { RouteTableSpec } from '../../shared/routes/schema.js';
import { applyRouteDeltas } from '../../shared/routes/delta.js';
import { ROOT, freePort, route, startUpstream, table, waitFor, type Upstream } from './harness.js';

let a: Upstream;
let b: Upstream;
let pool: Pool;
let port = 0;

const workersOf = (p: Pool) => (p as unknown as { workers: Worker[] }).workers;

/** Worker i throws an exception nothing catches; answers when its thread has ended. */
async function crash(i: number): Promise<void> {
  const w = workersOf(pool)[i];
  const exited = new Promise((resolve) => w.once('exit', resolve));
  w.postMessage({ type: 'crash' });
  expect(await exited).toBe(70);
}

/** One request on a connection of its own (so the kernel picks a worker for each): the upstream's name, or the status. */
function fresh(host: string): Promise<string> {
  return new Promise((resolve) => {
    const req = httpRequest({ host: '127.0.0.1', port, path: '/', headers: { host }, agent: false }, (res) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (c: string) => (body += c));
      res.on('end', () => resolve(res.statusCode === 200 ? (JSON.parse(body) as { name: string }).name : String(res.statusCode)));
    });
    req.on('error', (e) => resolve(`error ${e.message}`));
    req.end();
  });
}

/** What 24 fresh connections were answered (both workers take some of them, as a rule). */
async function answers(host: string): Promise<Set<string>> {
  return new Set(await Promise.all(Array.from({ length: 24 }, () => fresh(host))));
}

beforeAll(async () => {
  a = await startUpstream('a');
  b = await startUpstream('b');
  const { WorkerPool } = await import(pathToFileURL(join(ROOT, 'dist', 'proxy', 'workers', 'pool.js')).href) as { WorkerPool: typeof Pool };
  pool = new WorkerPool(null, new URL('../helpers/crashing-proxy-worker.mjs', import.meta.url));
  ({ port } = await pool.start(2, { host: '127.0.0.1', port: await freePort(), accessLogRate: 0, upstreamConnections: 8 }));
  await pool.apply(table([route('r', ['r.test'], [a.address])], 1) as RouteTableSpec);
});

afterAll(async () => {
  await pool?.close();
  await pool?.terminate();
  await a?.close();
  await b?.close();
});

describe('a worker thread that dies', () => {
  it('is started again with the table served now; the other serves meanwhile; a stats request waiting for it is answered', async () => {
    expect(await answers('r.test')).toEqual(new Set(['a']));
    const v1 = table([route('r', ['r.test'], [a.address])], 1) as RouteTableSpec;
    const v2 = applyRouteDeltas(v1, [{ base: 1, version: 2, upsert: [route('r', ['r.test'], [b.address]) as RouteTableSpec['routes'][number]], remove: [] }]);
    const dead = workersOf(pool)[0];
    const stats = pool.stats();
    await crash(0);
    // the survivor answered, the dead one is left out: no wait for a thread that is gone
    expect((await stats).length).toBeGreaterThanOrEqual(1);
    // the other thread takes every new connection meanwhile
    expect(await answers('r.test')).toEqual(new Set(['a']));
    // a delta while it is gone or starting again: the survivor applies it; the new worker is given
    // the table it makes, or the one before and then the delta (posted to it, after its start)
    await pool.applyDeltas([{ base: 1, version: 2, upsert: [route('r', ['r.test'], [b.address]) as RouteTableSpec['routes'][number]], remove: [] }], v2);
    await waitFor(() => pool.restarts === 1 && workersOf(pool)[0] !== dead, 5000);
    await waitFor(() => pool.serving === 2, 5000);
    // every connection, whichever thread takes it, is served by the table of version 2
    expect(await answers('r.test')).toEqual(new Set(['b']));
    expect((await pool.stats()).length).toBe(3); // two threads, and what the dead one counted
  });

  it('one that dies while a table is applied does not fail the apply, and starts with that table', async () => {
    const dead = workersOf(pool)[1];
    const killed = crash(1);
    await pool.apply(table([route('r', ['r.test'], [a.address])], 3) as RouteTableSpec);
    await killed;
    await waitFor(() => pool.restarts === 2 && workersOf(pool)[1] !== dead, 5000);
    await waitFor(() => pool.serving === 2, 5000);
    expect(await answers('r.test')).toEqual(new Set(['a']));
  });

  it('what a dead worker counted is kept: its metering counts go out with the next drain, its counters stay in the stats', async () => {
    await pool.drainMeters();
    const before = (await pool.stats()).reduce((n, x) => n + (x.routes.find((r) => r.id === 'r')?.requests ?? 0), 0);
    // 24 requests on their own connections: both threads take some (as a rule)
    expect(await answers('r.test')).toEqual(new Set(['a']));
    // (worker 0, the one that dies, took some of them)
    const own = await pool.stats();
    expect(own[0].routes.find((r) => r.id === 'r')!.requests).toBeGreaterThan(0);
    await crash(0);
    const metered = (await pool.drainMeters()).filter((e) => e.route === 'r').reduce((n, e) => n + e.requests, 0);
    expect(metered).toBe(24);
    const after = (await pool.stats()).reduce((n, x) => n + (x.routes.find((r) => r.id === 'r')?.requests ?? 0), 0);
    expect(after - before).toBe(24);
    expect(pool.serving).toBeGreaterThanOrEqual(1);
  });

  it('one that keeps dying soon after its start waits longer each time (at once, then 1 s, 2 s…)', async () => {
    // worker 1 was started moments ago: each death is young
    const delays: number[] = [];
    for (let k = 0; k < 3; k++) {
      const restarts = pool.restarts;
      const t0 = Date.now();
      await crash(1);
      await waitFor(() => pool.restarts === restarts + 1, 10_000, 20);
      delays.push(Date.now() - t0);
      await waitFor(() => pool.serving === 2, 5000);
    }
    // (the streak began in the test before, or here: 0, 1, 2 s or 1, 2, 4 s)
    expect(delays[2]).toBeGreaterThanOrEqual(1900);
    expect(delays[2]).toBeGreaterThanOrEqual(2 * delays[1] - 300);
    expect(await answers('r.test')).toEqual(new Set(['a']));
  }, 30_000);

  it('is not started again once the pool closes', async () => {
    const restarts = pool.restarts;
    await pool.close();
    await pool.terminate();
    await new Promise((r) => setTimeout(r, 300));
    expect(pool.restarts).toBe(restarts);
  });
});

describe('starting worker threads', () => {
  it('port 0 is one port for every thread (picked first: uWS shares only a port it is given)', async () => {
    const { WorkerPool } = await import(pathToFileURL(join(ROOT, 'dist', 'proxy', 'workers', 'pool.js')).href) as { WorkerPool: typeof Pool };
    const p = new WorkerPool(null);
    try {
      const got = await p.start(2, { host: '127.0.0.1', port: 0, accessLogRate: 0, upstreamConnections: 8 });
      expect(got.port).toBeGreaterThan(0);
      port = got.port;
      await p.apply(table([route('r', ['r.test'], [a.address])], 1) as RouteTableSpec);
      expect(await answers('r.test')).toEqual(new Set(['a']));
      expect((await p.stats()).length).toBe(2);
    } finally {
      await p.close();
      await p.terminate();
    }
  });

  it('a port taken fails the start with the reason, the process living on', async () => {
    const { WorkerPool } = await import(pathToFileURL(join(ROOT, 'dist', 'proxy', 'workers', 'pool.js')).href) as { WorkerPool: typeof Pool };
    const taken = createServer();
    await new Promise<void>((resolve) => taken.listen(0, '127.0.0.1', resolve));
    const p = new WorkerPool(null);
    try {
      await expect(p.start(2, { host: '127.0.0.1', port: (taken.address() as AddressInfo).port, accessLogRate: 0, upstreamConnections: 8 }))
        .rejects.toThrow(/could not listen on 127\.0\.0\.1:\d+/);
      expect(p.restarts).toBe(0);
    } finally {
      taken.close();
    }
  });
});
