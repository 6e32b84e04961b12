/**
 * The hold queue is bounded: flooding a scaled-to-zero app that cannot wake (its process listens
 * on nothing: one that exits instead is given up on, and its route goes) answers every request, quickly, with 503 `overloaded` past the queue bound and
 * 504 `queue_timeout` for the ones held past the hold timeout — each with x-berth-error — and the
 * proxy's memory stays bounded, POST bodies included. Real Docker, real proxy process.
 */
import { randomBytes } from 'node:crypto';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { Agent, request } from 'undici';
import { Api } from '../helpers/api.js';
import { makeTar } from '../helpers/archives.js';
import { startTestControlPlane, type TestControlPlane } from '../helpers/control-plane.js';
import { describeWithDocker } from '../helpers/docker.js';
import { rss, type ProxyProc } from '../proxy/harness.js';
import { startSubscribedProxy, teardownStack } from './support.js';

const HOST = `flood-${randomBytes(3).toString('hex')}.example.com`;
let t: TestControlPlane;
let px: ProxyProc;
let dockerImage = '';
let clusterId = '';

await describeWithDocker('a flood on an app that cannot wake', () => {
  beforeAll(async () => {
    t = await startTestControlPlane({ seedDefaultUser: false, routeDebounceMs: 10, hold: { maxQueue: 100, timeoutMs: 2000 } });
    clusterId = t.cp.app.platform.clusterId;
    const user = await new Api(t.cp.url).signup('flood@example.com');
    const up = await user.upload({ name: 'dead', app_hostname: HOST, min_instances: 0, health_path: '/' },
      await makeTar([{ name: 'Dockerfile', content: 'FROM berth-test/busybox:1\nCMD ["sh", "-c", "trap \'exit 0\' TERM; sleep 3600 & wait"]\n' }]));
    expect(up.status, up.text).toBe(201);
    dockerImage = up.body.docker_image;
    expect((await user.waitForBuild(up.body.id, 90_000)).status).toBe('ready');
    px = await startSubscribedProxy(t.cp.url, t.cp.app.platform.proxyTokens.current, HOST, (r) => r.wake === true);
  }, 120_000);

  afterAll(() => teardownStack({ px, cp: t, clusterId, dockerImage }));

  it('answers every request with 503 overloaded or 504 queue_timeout, in bounded time and memory', async () => {
    const before = await rss(px.proc.pid!);
    const agent = new Agent({ connections: 500, pipelining: 0 });
    const body = Buffer.alloc(32 * 1024, 'x');
    let peak = before;
    const sampler = setInterval(() => { void rss(px.proc.pid!).then((v) => { peak = Math.max(peak, v); }, () => {}); }, 50);
    const t0 = Date.now();
    const answers = await Promise.all(Array.from({ length: 400 }, async (_, i) => {
      const r = await request(`${px.url}/`, {
        method: i % 2 ? 'POST' : 'GET', body: i % 2 ? body : undefined,
        headers: { host: HOST }, dispatcher: agent, headersTimeout: 15_000, bodyTimeout: 15_000,
      });
      await r.body.dump();
      return { status: r.statusCode, error: String(r.headers['x-berth-error'] ?? '') };
    }));
    const ms = Date.now() - t0;
    clearInterval(sampler);
    await agent.close();
    const by = (s: number, e: string) => answers.filter((a) => a.status === s && a.error === e).length;
    expect(by(503, 'overloaded') + by(504, 'queue_timeout')).toBe(400);
    expect(by(503, 'overloaded')).toBeGreaterThanOrEqual(300); // past the 100 held
    expect(by(504, 'queue_timeout')).toBeGreaterThan(0);
    expect(by(504, 'queue_timeout')).toBeLessThanOrEqual(100);
    expect(ms).toBeLessThan(10_000); // the 2 s hold timeout, not the clients' 15 s
    expect(peak - before).toBeLessThan(64 * 1024 * 1024);
    // the proxy is fine afterwards
    const h = await request(`${px.admin}/healthz`);
    expect(h.statusCode).toBe(200);
    await h.body.dump();
    console.log(`wake flood: 400 requests in ${ms} ms: ${by(503, 'overloaded')} × 503 overloaded, ${by(504, 'queue_timeout')} × 504 queue_timeout; RSS +${((peak - before) / 1048576).toFixed(1)} MB`);
  }, 60_000);
});
