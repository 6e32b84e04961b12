/**
 * The user story through a real `berth proxy` (a routes file, no Docker): `berth load --app
 * shop.localhost --pattern ramp --ramp-to … --html r.html` reaches the app behind the proxy with
 * that Host, every request answered, the ramp's integral sent, and a report written.
 */
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { spawnBerth } from '../helpers/process.js';
import { tempDir } from '../helpers/tmp.js';
import { startProxy, startUpstream, type ProxyProc, type Upstream } from '../proxy/harness.js';

let up: Upstream;
let proxy: ProxyProc;
let tmp: { dir: string; cleanup(): Promise<void> };

beforeAll(async () => {
  tmp = await tempDir('berth-load-proxy-');
  up = await startUpstream('shop', (_req, res) => res.end('shop'));
  proxy = await startProxy({ version: 1, routes: [{ id: 'shop', hosts: ['shop.localhost'], endpoints: [{ id: 'e1', address: up.address }] }] });
});

afterAll(async () => {
  await proxy?.stop();
  await up?.close();
  await tmp?.cleanup();
});

describe('berth load --app through the berth proxy', () => {
  it('ramps 100 → 400 req/s for 3 s on shop.localhost: all answered by the app, report written', async () => {
    const html = join(tmp.dir, 'r.html');
    const json = join(tmp.dir, 'r.json');
    const p = spawnBerth(['load', '--app', 'shop.localhost', '--rps', '100', '--duration', '3s', '--pattern', 'ramp', '--ramp-to', '400', '--html', html, '--json', json,
      '--fail-on', 'error_rate>0%'], { BERTH_PROXY_URL: proxy.url });
    const { code } = await p.exited;
    expect(code, p.output()).toBe(0);
    const { metrics } = JSON.parse(await readFile(json, 'utf8'));
    expect(Math.abs(metrics.scheduled_requests - 750)).toBeLessThanOrEqual(2);
    expect(metrics.successful_requests).toBe(metrics.total_requests);
    expect(up.hits).toBe(metrics.total_requests);
    expect(metrics.app_hostnames).toEqual(['shop.localhost']);
    expect(await readFile(html, 'utf8')).toContain('data-chart="latency-distribution"');
  });

  it('an app the proxy does not know is a stream of 404s, and --fail-on catches it', async () => {
    const p = spawnBerth(['load', '--app', 'nope.localhost', '--rps', '20', '--duration', '1s', '--fail-on', 'error_rate>1%'], { BERTH_PROXY_URL: proxy.url });
    const { code } = await p.exited;
    expect(code).toBe(1);
    expect(p.output()).toMatch(/404: 20/);
    expect(p.output()).toMatch(/FAIL error_rate>1%/);
  });
});
