import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { renameSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { spawnSync } from 'node:child_process';
import { availableParallelism } from 'node:os';
import { request } from 'undici';
import { freePort, get, patchRoutes, putRoutes, ROOT, route, startProxy, startUpstream, table, waitFor, type ProxyProc, type Upstream } from './harness.js';

let a: Upstream;
let b: Upstream;
let p: ProxyProc;
beforeAll(async () => {
  a = await startUpstream('a');
  b = await startUpstream('b');
  p = await startProxy(table([route('main', ['main.test'], [a.address])], 1));
});
afterAll(async () => {
  await p?.stop();
  await a?.close();
  await b?.close();
});

async function json(url: string, init?: Parameters<typeof request>[1]): Promise<{ status: number; body: any }> {
  const r = await request(url, init);
  const text = await r.body.text();
  return { status: r.statusCode, body: text.startsWith('{') ? JSON.parse(text) : text };
}

describe('admin listener', () => {
  it('healthz, readyz, GET /routes', async () => {
    expect((await json(`${p.admin}/healthz`)).status).toBe(200);
    const ready = await json(`${p.admin}/readyz`);
    expect(ready.status).toBe(200);
    expect(ready.body.tableVersion).toBe(1);
    const routes = await json(`${p.admin}/routes`);
    expect(routes.body.version).toBe(1);
    expect(routes.body.routes[0].hosts).toEqual(['main.test']);
  });

  it('PUT /routes rejects an invalid table whole with 400 naming the field; the old table keeps serving', async () => {
    const bad = await putRoutes(p, { version: 2, routes: [{ id: 'x', hosts: ['main.test'], endpoints: [{ id: 'e', address: '127.0.0.1:99999' }] }] });
    expect(bad.status).toBe(400);
    const err = JSON.parse(bad.body).error;
    expect(err.code).toBe('invalid_route_table');
    expect(err.field).toBe('routes.0.endpoints.0.address');
    expect(err.message).toContain('routes.0.endpoints.0.address');
    const notJson = await putRoutes(p, '{"version": 3, routes');
    expect(notJson.status).toBe(400);
    expect(JSON.parse(notJson.body).error.message).toMatch(/not valid JSON/);
    expect(JSON.parse((await get(p, 'main.test')).body).name).toBe('a');
    expect((await json(`${p.admin}/routes`)).body.version).toBe(1);
  });

  it('PUT /routes swaps the table atomically', async () => {
    const ok = await putRoutes(p, table([route('main', ['main.test'], [b.address])], 5));
    expect(ok.status).toBe(200);
    expect(JSON.parse(ok.body).version).toBe(5);
    expect(JSON.parse((await get(p, 'main.test')).body).name).toBe('b');
  });

  it('PATCH /routes applies a delta to the table served: routes added, changed and removed; the rest keep serving', async () => {
    expect((await putRoutes(p, table([route('main', ['main.test'], [a.address]), route('old', ['old.test'], [a.address])], 10))).status).toBe(200);
    const ok = await patchRoutes(p, { base: 10, version: 11, upsert: [route('main', ['main.test'], [b.address]), route('new', ['new.test'], [b.address])], remove: ['old'] });
    expect(ok.status).toBe(200);
    expect(JSON.parse(ok.body)).toMatchObject({ applied: true, version: 11, routes: 2 });
    expect(JSON.parse((await get(p, 'main.test')).body).name).toBe('b');
    expect(JSON.parse((await get(p, 'new.test')).body).name).toBe('b');
    expect((await get(p, 'old.test')).status).toBe(404);
    const served = (await json(`${p.admin}/routes`)).body;
    expect(served.version).toBe(11);
    expect(served.routes.map((r: { id: string }) => r.id).sort()).toEqual(['main', 'new']);
  });

  it('PATCH /routes refuses a delta from another version (409), one that does not fit the table (400 naming the field), malformed ones and writes without the token; the table keeps serving', async () => {
    expect((await putRoutes(p, table([route('main', ['main.test'], [a.address]), route('two', ['two.test'], [b.address])], 20))).status).toBe(200);
    const stale = await patchRoutes(p, { base: 19, version: 21, upsert: [], remove: ['two'] });
    expect(stale.status).toBe(409);
    expect(JSON.parse(stale.body).error).toMatchObject({ code: 'base_mismatch', tableVersion: 20 });
    // a host another route serves
    const taken = await patchRoutes(p, { base: 20, version: 21, upsert: [route('three', ['two.test'], [a.address])], remove: [] });
    expect(taken.status).toBe(400);
    expect(JSON.parse(taken.body).error).toMatchObject({ code: 'invalid_route_delta', field: 'upsert.0.hosts.0' });
    const gone = await patchRoutes(p, { base: 20, version: 21, upsert: [], remove: ['nope'] });
    expect(gone.status).toBe(400);
    expect(JSON.parse(gone.body).error.message).toContain('"nope" is not a route of version 20');
    for (const bad of ['{"base": 20', '[]', JSON.stringify({ base: 20, version: 21, upsert: [{ id: 'x' }], remove: [] }),
      JSON.stringify({ base: 20, version: 20, upsert: [], remove: [] }), JSON.stringify({ base: 20, version: 1e300, upsert: [], remove: [] })]) {
      const r = await patchRoutes(p, bad);
      expect(r.status).toBe(400);
      expect(JSON.parse(r.body).error.code).toBe('invalid_route_delta');
    }
    expect((await patchRoutes(p, { base: 20, version: 21, upsert: [], remove: ['two'] }, 'wrong-token')).status).toBe(401);
    expect((await json(`${p.admin}/routes`)).body.version).toBe(20);
    expect(JSON.parse((await get(p, 'two.test')).body).name).toBe('b');
    // the index a refused delta used is rebuilt: a good one from the same table still applies
    expect((await patchRoutes(p, { base: 20, version: 21, upsert: [route('three', ['three.test'], [a.address])], remove: ['two'] })).status).toBe(200);
    expect(JSON.parse((await get(p, 'three.test')).body).name).toBe('a');
    expect((await get(p, 'two.test')).status).toBe(404);
    // (the table the tests below expect)
    expect((await putRoutes(p, table([route('main', ['main.test'], [b.address])], 5))).status).toBe(200);
  });

  it('/metrics is Prometheus text with requests, latency histogram, breaker state, in-flight, fallback hits', async () => {
    await get(p, 'main.test');
    await get(p, 'unknown.test');
    const m = (await json(`${p.admin}/metrics`)).body as string;
    expect(m).toMatch(/berth_proxy_requests_total\{route="main",class="2xx"\} [1-9]/);
    expect(m).toMatch(/berth_proxy_unrouted_requests_total\{reason="no_route"\} [1-9]/);
    expect(m).toContain('berth_proxy_upstream_latency_seconds_bucket{route="main",le="+Inf"}');
    expect(m).toContain(`berth_proxy_endpoint_circuit_state{endpoint="${b.address}"} 0`);
    expect(m).toContain('berth_proxy_inflight_requests{route="main"} 0');
    expect(m).toContain('berth_proxy_fallback_hits_total{route="main"} 0');
    expect(m).toContain('berth_proxy_route_table_version 5');
  });

  it('/stats is JSON per route and endpoint', async () => {
    const s = (await json(`${p.admin}/stats`)).body;
    expect(s.tableVersion).toBe(5);
    expect(s.routes.find((r: { id: string }) => r.id === 'main').requests).toBeGreaterThan(0);
    expect(s.endpoints.find((e: { address: string }) => e.address === b.address).state).toBe('closed');
  });

  it('hot-reloads the routes file, and ignores an invalid one', async () => {
    const tmp = join(p.dir, 'next.json');
    writeFileSync(tmp, JSON.stringify(table([route('main', ['main.test'], [a.address]), route('new', ['new.test'], [b.address])], 10)));
    renameSync(tmp, p.routesFile); // atomic replace, as deploy tools do
    await waitFor(async () => (await get(p, 'new.test')).status === 200, 5000);
    expect(JSON.parse((await get(p, 'main.test')).body).name).toBe('a');
    writeFileSync(p.routesFile, '{"version": 11, "routes": [{"id": "broken"}]}');
    await new Promise((r) => setTimeout(r, 400));
    expect((await get(p, 'new.test')).status).toBe(200);
    expect((await json(`${p.admin}/routes`)).body.version).toBe(10);
    expect(p.logs()).toContain('rejected, keeping the current table');
  });
});

describe('table swaps under load', () => {
  it('drops no in-flight request, and applies a 10,000-route table', async () => {
    const slowish = await startUpstream('slowish', (_q, res) => setTimeout(() => res.end('ok'), 30));
    try {
      await putRoutes(p, table([route('load', ['load.test'], [slowish.address, a.address])], 20));
      let failures = 0;
      let done = 0;
      let stop = false;
      const workers = Array.from({ length: 16 }, async () => {
        while (!stop) {
          const r = await get(p, 'load.test').catch(() => null);
          if (!r || r.status !== 200) failures++;
          done++;
        }
      });
      const big = Array.from({ length: 10_000 }, (_, i) => route(`r${i}`, [`app-${i}.example.com`], [`127.0.0.1:${20000 + (i % 1000)}`]));
      let applyMs = 0;
      for (let v = 21; v < 27; v++) {
        const routes = [route('load', ['load.test'], v % 2 ? [a.address, slowish.address] : [slowish.address]), ...(v === 24 ? big : [])];
        const r = await putRoutes(p, table(routes, v));
        expect(r.status).toBe(200);
        if (v === 24) applyMs = JSON.parse(r.body).applyMs;
        await new Promise((res) => setTimeout(res, 100));
      }
      stop = true;
      await Promise.all(workers);
      console.log(`swaps under load: ${done} requests, ${failures} failed; 10,000-route table compiled in ${applyMs} ms`);
      expect(done).toBeGreaterThan(100);
      expect(failures).toBe(0);
    } finally {
      await slowish.close();
    }
  }, 60_000);
});

describe('draining endpoints', () => {
  it('an endpoint removed from the table is reported as draining until its in-flight requests finish', async () => {
    const slow = await startUpstream('slow', (_q, res) => setTimeout(() => res.end('done'), 700));
    try {
      await putRoutes(p, table([route('drain', ['drain.test'], [slow.address])], 40));
      const pending = get(p, 'drain.test');
      await new Promise((r) => setTimeout(r, 150));
      await putRoutes(p, table([route('drain', ['drain.test'], [a.address])], 41));
      const s = (await json(`${p.admin}/stats`)).body;
      const ep = s.endpoints.find((e: { address: string }) => e.address === slow.address);
      expect(ep).toMatchObject({ state: 'draining', inflight: 1 });
      const r = await pending;
      expect(r.status).toBe(200);
      expect(r.body).toBe('done');
      const after = (await json(`${p.admin}/stats`)).body;
      expect(after.endpoints.find((e: { address: string }) => e.address === slow.address)).toBeUndefined();
    } finally {
      await slow.close();
    }
  });
});

describe('CLI', () => {
  const cli = (...args: string[]) => spawnSync(process.execPath, [join(ROOT, 'bin', 'berth.js'), ...args], { encoding: 'utf8', timeout: 15_000 });
  it('--help on every command', () => {
    expect(cli('--help').stdout).toContain('berth <command>');
    const h = cli('proxy', '--help');
    expect(h.status).toBe(0);
    expect(h.stdout).toContain('--routes');
    expect(h.stdout).toContain('--workers');
  });
  it('bad flags and bad tables fail with a clear message', () => {
    const r = cli('proxy', '--bogus', 'x');
    expect(r.status).toBe(2);
    expect(r.stderr).toContain('unknown flag --bogus');
    const nosrc = cli('proxy', '--listen', '127.0.0.1:0');
    expect(nosrc.stderr).toContain('--routes FILE or --control-plane');
    const missing = cli('proxy', '--listen', '127.0.0.1:0', '--admin', '127.0.0.1:0', '--routes', '/nonexistent/routes.json');
    expect(missing.status).toBe(1);
    expect(missing.stderr).toContain('cannot read route table');
    for (const w of ['0', '65', '1.5', 'many']) {
      const bad = cli('proxy', '--listen', '127.0.0.1:0', '--routes', p.routesFile, '--workers', w);
      expect(bad.status).toBe(2);
      expect(bad.stderr).toContain('--workers must be an integer 1-64, or auto');
    }
  });
  it('refuses a non-loopback admin listener without a token', async () => {
    const r = cli('proxy', '--listen', '127.0.0.1:0', '--admin', `0.0.0.0:${await freePort()}`, '--routes', p.routesFile);
    expect(r.status).toBe(1);
    expect(r.stderr).toContain('--admin-token');
  });
  it('requires the admin token when one is set', async () => {
    const q = await startProxy(table([route('t', ['t.test'], [a.address])]), ['--admin-token', 's3cret']);
    try {
      expect((await json(`${q.admin}/routes`)).status).toBe(401);
      expect((await json(`${q.admin}/routes`, { headers: { authorization: 'Bearer s3cret' } })).status).toBe(200);
      expect((await json(`${q.admin}/healthz`)).status).toBe(200);
    } finally {
      await q.stop();
    }
  });
});

describe('worker threads', () => {
  it('--workers 2 serves on one port with the same table', async () => {
    const q = await startProxy(table([route('w', ['w.test'], [a.address, b.address])]), ['--workers', '2']);
    try {
      const results = await Promise.all(Array.from({ length: 40 }, () => get(q, 'w.test')));
      expect(results.every((r) => r.status === 200)).toBe(true);
      const put = await putRoutes(q, table([route('w2', ['w2.test'], [b.address])], 2));
      expect(put.status).toBe(200);
      const after = await Promise.all(Array.from({ length: 20 }, () => get(q, 'w2.test')));
      expect(after.every((r) => r.status === 200 && JSON.parse(r.body).name === 'b')).toBe(true);
      const s = (await json(`${q.admin}/stats`)).body;
      expect(s.workers).toBe(2);
      expect(s.workerRestarts).toBe(0);
      expect(s.global.requests).toBe(60);
      expect((await json(`${q.admin}/metrics`)).body).toContain('berth_proxy_worker_restarts_total 0\n');
      // a delta reaches every worker
      expect((await patchRoutes(q, { base: 2, version: 3, upsert: [route('w3', ['w3.test'], [a.address])], remove: ['w2'] })).status).toBe(200);
      const patched = await Promise.all(Array.from({ length: 20 }, () => get(q, 'w3.test')));
      expect(patched.every((r) => r.status === 200 && JSON.parse(r.body).name === 'a')).toBe(true);
      expect((await get(q, 'w2.test')).status).toBe(404);
    } finally {
      await q.stop();
    }
  });

  it('--workers auto: one thread per CPU the process may use', async () => {
    const q = await startProxy(table([route('w', ['w.test'], [a.address])]), ['--workers', 'auto']);
    try {
      expect((await json(`${q.admin}/stats`)).body.workers).toBe(Math.min(64, availableParallelism()));
      expect((await get(q, 'w.test')).status).toBe(200);
    } finally {
      await q.stop();
    }
  });
});
