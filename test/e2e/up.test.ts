import { readFileSync } from 'node:fs';
import { afterAll, expect, it } from 'vitest';
import { freePort } from '../helpers/ports.js';
import { tempDir } from '../helpers/tmp.js';
import { get, type ProxyProc } from '../proxy/harness.js';
import { Proc, built, waitFor } from './support.js';

/** `berth up`: control plane (embedded Postgres) + proxy wired with a generated token, URLs and credentials printed. */
let proc: Proc | undefined;
let dir: { dir: string; cleanup(): Promise<void> } | undefined;

afterAll(async () => {
  await proc?.kill('SIGTERM');
  await dir?.cleanup();
});

it('berth up starts both, prints URLs and the default login, and the proxy subscribes with the generated token', async () => {
  if (!built()) throw new Error('dist/ is missing: run `npx tsc -p .` (npm test builds first)');
  dir = await tempDir('berth-up-');
  const [api, px, admin] = [await freePort(), await freePort(), await freePort()];
  proc = new Proc(['up', '--api-listen', `127.0.0.1:${api}`, '--proxy-listen', `127.0.0.1:${px}`, '--admin-listen', `127.0.0.1:${admin}`, '--data-dir', `${dir.dir}/data`, '--apps-path-hosts', 'proxy.internal'],
    { BERTH_LOG_LEVEL: 'warn', BERTH_PROXY_TOKEN: '', BERTH_METRICS_TOKEN: '', BERTH_ENV: 'development', BERTH_PUBLIC_URL: `http://Apps.Example.test:${px}` });
  await waitFor('berth is up', async () => proc!.out.includes('berth is up') || (proc!.child.exitCode !== null ? Promise.reject(new Error(proc!.out)) : false), 60_000, 100);
  expect(proc.out).toContain(`http://127.0.0.1:${api}`);
  expect(proc.out).toContain(`http://127.0.0.1:${px}`);
  expect(proc.out).toContain('example@gmail.com / example123');
  const login = await fetch(`http://127.0.0.1:${api}/api/auth/login`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ email: 'example@gmail.com', password: 'example123' }) });
  expect(login.status).toBe(200);
  const { token } = await login.json() as { token: string };
  const proxies = await waitFor('proxy reporting', async () => {
    const r = await (await fetch(`http://127.0.0.1:${api}/v1/proxies`, { headers: { authorization: `Bearer ${token}` } })).json() as any;
    return r.count === 1 && r.watchers === 1 && r;
  }, 15_000, 200);
  expect(proxies.proxies[0].table_version).toBe(proxies.current_version);
  // the watch stream refuses anyone without the proxy token
  expect((await fetch(`http://127.0.0.1:${api}/v1/routes/watch`, { headers: { authorization: `Bearer ${token}` } })).status).toBe(401);
  // /metrics needs the metrics token, generated into the data directory; berth up says where
  const tokenFile = `${dir.dir}/data/metrics-token`;
  expect(proc.out).toContain(tokenFile);
  expect((await fetch(`http://127.0.0.1:${api}/metrics`)).status).toBe(401);
  const metricsToken = readFileSync(tokenFile, 'utf8').trim();
  const metrics = await (await fetch(`http://127.0.0.1:${api}/metrics`, { headers: { authorization: `Bearer ${metricsToken}` } })).text();
  expect(metrics).toMatch(/^berth_cp_proxies 1$/m);
  expect(metrics).toMatch(/^berth_cp_route_watchers 1$/m);
  expect(metrics).toMatch(/^berth_cp_reconcile_leader 1$/m);
  expect((await fetch(`http://127.0.0.1:${admin}/readyz`)).status).toBe(200);
  expect((await fetch(`http://127.0.0.1:${px}/`, { headers: { host: 'nothing.example.com' } })).status).toBe(404);
  // /apps/{host}/ is read on the proxy's own names: --apps-path-hosts and the host of BERTH_PUBLIC_URL, not others
  const viaPath = (host: string) => get({ url: `http://127.0.0.1:${px}` } as ProxyProc, host, '/apps/nothing.example.com/');
  for (const own of ['proxy.internal', `apps.example.test:${px}`, `127.0.0.1:${px}`]) {
    const r = await viaPath(own);
    expect([r.status, r.body.includes('"nothing.example.com"'), r.body.includes('--apps-path-hosts')], own).toEqual([404, true, false]);
  }
  const other = await viaPath('unlisted.example.test');
  expect([other.status, other.body.includes('"unlisted.example.test"'), other.body.includes('--apps-path-hosts')]).toEqual([404, true, true]);

  // a second `berth up` on the same data directory (other ports) stops itself, naming the first;
  // it used to take the first one's embedded Postgres for a leftover and stop it
  const [api2, px2, admin2] = [await freePort(), await freePort(), await freePort()];
  const second = new Proc(['up', '--api-listen', `127.0.0.1:${api2}`, '--proxy-listen', `127.0.0.1:${px2}`, '--admin-listen', `127.0.0.1:${admin2}`, '--data-dir', `${dir.dir}/data`],
    { BERTH_LOG_LEVEL: 'warn', BERTH_PROXY_TOKEN: '', BERTH_METRICS_TOKEN: '', BERTH_ENV: 'development' });
  expect(await second.exited).toBe(1);
  expect(second.out).toContain(`the data directory ${dir.dir}/data is in use by another berth control plane (pid ${proc.child.pid}; ${dir.dir}/data/control-plane.lock)`);
  expect(await (await fetch(`http://127.0.0.1:${api}/readyz`)).json()).toEqual({ status: 'ready', checks: { database: 'ok' } });
  expect((await fetch(`http://127.0.0.1:${api}/api/apps`, { headers: { authorization: `Bearer ${token}` } })).status).toBe(200);
  expect(await proc.kill('SIGTERM')).toBe(0);
});
