/**
 * Step load at 4× one instance's target: container_concurrency 10 (target 7 per instance),
 * 40 concurrent clients on a CGI that takes 200 ms. The autoscaler must grow the app to ≥ 4
 * instances, shrink it back when the load stops, and no request may fail on the way.
 * The concurrency cap holds throughout: each instance counts its own concurrent requests.
 */
import { randomBytes } from 'node:crypto';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { request } from 'undici';
import { Api } from '../helpers/api.js';
import { makeTar } from '../helpers/archives.js';
import { startTestControlPlane, type TestControlPlane } from '../helpers/control-plane.js';
import { describeWithDocker } from '../helpers/docker.js';
import type { ProxyProc } from '../proxy/harness.js';
import { httpdApp, load, runningOf, sleep, startSubscribedProxy, teardownStack, waitFor } from './support.js';
import { rawHttp } from '../helpers/raw-http.js';

const HOST = `step-${randomBytes(3).toString('hex')}.example.com`;
let t: TestControlPlane;
let px: ProxyProc;
let user: Api;
let imageId = 0;
let dockerImage = '';
let clusterId = '';

/** A CGI that sleeps 200 ms, and reports the most concurrent requests its instance saw. */
function slowApp() {
  const cgi = [
    '#!/bin/sh',
    'n=$(ls /tmp/inflight 2>/dev/null | wc -l); mkdir -p /tmp/inflight; touch /tmp/inflight/$$',
    'n=$((n + 1)); m=$(cat /tmp/peak 2>/dev/null || echo 0); [ "$n" -gt "$m" ] && echo $n > /tmp/peak',
    'sleep 0.2',
    'rm -f /tmp/inflight/$$',
    'printf "Content-Type: text/plain\\n\\n"; hostname',
  ].join('\n') + '\n';
  const peak = '#!/bin/sh\nprintf "Content-Type: text/plain\\n\\n"; cat /tmp/peak 2>/dev/null || echo 0\n';
  return httpdApp([
    { name: 'index.html', content: 'ok\n' },
    { name: 'cgi-bin/' },
    { name: 'cgi-bin/slow', content: cgi, mode: 0o755 },
    { name: 'cgi-bin/peak', content: peak, mode: 0o755 },
  ]);
}

const running = () => runningOf<{ desired: string; host_port: number | null; status: string; health: string }>(user, imageId);

await describeWithDocker('autoscaling under a step load', () => {
  beforeAll(async () => {
    t = await startTestControlPlane({
      seedDefaultUser: false, health: { intervalMs: 50, healthyThreshold: 1 }, routeDebounceMs: 10,
      autoscale: { enabled: true, tickMs: 250, stableWindowMs: 3000, scaleToZeroGraceMs: 1000 },
      quotas: { containers: 20, images: 10, builds: 4 },
    });
    clusterId = t.cp.app.platform.clusterId;
    user = await new Api(t.cp.url).signup('step@example.com');
    const up = await user.upload({ name: 'step', app_hostname: HOST, min_instances: 0, max_instances: 8, container_concurrency: 10, health_path: '/' }, await makeTar(slowApp()));
    expect(up.status, up.text).toBe(201);
    imageId = up.body.id;
    dockerImage = up.body.docker_image;
    expect((await user.waitForBuild(imageId, 90_000)).status).toBe('ready');
    px = await startSubscribedProxy(t.cp.url, t.cp.app.platform.proxyTokens.current, HOST);
  });

  afterAll(() => teardownStack({ px, cp: t, clusterId, dockerImage }));

  it('grows to ≥ 4 instances under 4× load, with zero failed requests and the cap held; shrinks after', async () => {
    const t0 = Date.now();
    const l = load(Number(new URL(px.url).port), HOST, 40, { path: '/cgi-bin/slow', timeoutMs: 30_000 });
    let peakInstances = 0;
    let scaledOutMs = 0;
    try {
      await waitFor('≥ 4 instances', async () => {
        const n = (await running()).length;
        peakInstances = Math.max(peakInstances, n);
        return n >= 4;
      }, 30_000, 200);
      scaledOutMs = Date.now() - t0;
      // the load goes on at the new size: at least 2 s, and until 100 requests were served (a
      // fast scale-out on a busy machine can come before that)
      await sleep(2000);
      await waitFor('100 requests served', async () => l.stats.ok > 100, 20_000, 100);
    } finally {
      await l.stop();
    }
    // each instance saw at most container_concurrency requests at once (one started late in the
    // run may have served none)
    const peaks: number[] = [];
    for (const c of await running()) {
      if (c.host_port === null) continue;
      // straight to the instance; busybox CGI heads end in bare LF, which undici refuses: raw socket
      const r = await rawHttp(c.host_port, 'GET /cgi-bin/peak HTTP/1.0\r\n\r\n', 2000);
      peaks.push(Number(r.text.trim().split('\n').pop()));
    }
    expect(Math.max(...peaks)).toBeGreaterThan(0);
    for (const peak of peaks) expect(peak).toBeLessThanOrEqual(10);
    expect(l.stats.failures).toEqual([]);
    expect(l.stats.ok).toBeGreaterThan(100);
    await waitFor('scaled back in', async () => (await running()).length <= 1, 40_000, 250);
    console.log(`step load: ${l.stats.ok} requests, 0 failed; ≥ 4 instances after ${scaledOutMs} ms (peak ${peakInstances}); scaled back in`);
  });
});
