/**
 * Cold starts, measured as a user sees them: an app that scales to zero (busybox `httpd`, which
 * starts in milliseconds), at zero instances, gets one request through the proxy; the time from
 * sending it to its complete answer is one sample. The whole platform runs as `berth up` runs it
 * (a control plane on embedded Postgres with its default settings, a proxy process subscribed to
 * it, real Docker). Two kinds:
 *   - `stopped`: the app was scaled to zero and keeps its stopped container (what the autoscaler
 *     leaves behind): the wake is a `docker start`;
 *   - `new`: no container at all (first request after a deploy): `docker create` + start.
 * Targets from the autoscaling issue: p50 < 1 s and worst < 2 s. Knative users report 2–15 s.
 * Skipped, with the reason, when no Docker daemon answers.
 */
import { chmodSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import Docker from 'dockerode';
import tarStream from 'tar-stream';
import { startControlPlane, type ControlPlane } from '../../control-plane/app.js';
import { ensureBusyboxImage } from '../lib/busybox-image.js';
import { fmt, median, table } from '../lib/format.js';
import { freePort, httpRequest, sleep, waitFor } from '../lib/net.js';
import { spawnTracked, stop, type Tracked } from '../lib/proc.js';
import { repoRoot } from '../macro/targets.js';

const BASE = 'berth-bench/busybox:1';
const HOST = 'coldstart.bench.localhost';
const ROUNDS_STOPPED = Number(process.env.BENCH_COLDSTART_ROUNDS ?? 10);
const ROUNDS_NEW = Math.max(1, Math.round(ROUNDS_STOPPED / 2));

export interface ColdStartResult {
  skipped?: string;
  stopped?: number[];
  new?: number[];
}

const log = (s: string) => process.stderr.write(`[coldstart] ${s}\n`);

async function dockerReachable(docker: Docker): Promise<string | null> {
  const ac = new AbortController();
  const t = setTimeout(() => ac.abort(), 3000);
  try {
    await (docker.ping as (o: object) => Promise<unknown>)({ abortSignal: ac.signal });
    return null;
  } catch (e) {
    return `no Docker daemon reachable (${(e as Error).message})`;
  } finally {
    clearTimeout(t);
  }
}

function appTar(): Promise<Buffer> {
  const pack = tarStream.pack();
  pack.entry({ name: 'Dockerfile' }, `FROM ${BASE}\nCOPY www /www\nCMD ["sh", "-c", "exec httpd -f -p \${PORT:-8080} -h /www"]\n`);
  pack.entry({ name: 'www', type: 'directory' });
  pack.entry({ name: 'www/index.html' }, 'awake\n');
  pack.finalize();
  const chunks: Buffer[] = [];
  return new Promise((resolve, reject) => {
    pack.on('data', (c: unknown) => { chunks.push(c as Buffer); });
    pack.on('end', () => resolve(Buffer.concat(chunks)));
    pack.on('error', reject);
  });
}

class Client {
  constructor(private readonly base: string, private readonly token = '') {}
  async call(method: string, path: string, body?: unknown): Promise<{ status: number; json: any }> {
    const headers: Record<string, string> = this.token ? { authorization: `Bearer ${this.token}` } : {};
    let payload: BodyInit | undefined;
    if (body instanceof FormData) payload = body;
    else if (body !== undefined) { headers['content-type'] = 'application/json'; payload = JSON.stringify(body); }
    const r = await fetch(this.base + path, { method, headers, body: payload });
    const text = await r.text();
    return { status: r.status, json: text ? JSON.parse(text) : undefined };
  }
}

export async function runColdStartBench(): Promise<ColdStartResult> {
  const docker = new Docker(process.env.DOCKER_HOST?.startsWith('unix://') ? { socketPath: process.env.DOCKER_HOST.slice(7) } : undefined);
  const why = await dockerReachable(docker);
  if (why) {
    process.stdout.write(`\n## Cold starts\n\nskipped: ${why}\n`);
    return { skipped: why };
  }
  await ensureBusyboxImage(docker, BASE);
  const dir = mkdtempSync(join(tmpdir(), 'berth-coldstart-'));
  chmodSync(dir, 0o755); // as root, embedded Postgres runs as its own user: it must reach its directory
  let cp: ControlPlane | undefined;
  let proxy: Tracked | undefined;
  let dockerImage = '';
  try {
    log('starting the control plane (embedded Postgres, default settings)');
    cp = await startControlPlane({ host: '127.0.0.1', port: 0, dataDir: join(dir, 'cp'), quiet: process.env.BENCH_COLDSTART_VERBOSE !== '1', seedDefaultUser: false });
    const anon = new Client(cp.url);
    const signup = await anon.call('POST', '/api/auth/signup', { email: 'coldstart@bench.localhost', password: 'bench-password-1' });
    if (signup.status !== 201) throw new Error(`signup: ${signup.status} ${JSON.stringify(signup.json)}`);
    const api = new Client(cp.url, signup.json.token);

    const form = new FormData();
    form.set('name', 'coldstart');
    form.set('app_hostname', HOST);
    form.set('min_instances', '0');
    form.set('health_path', '/');
    form.set('file', new Blob([new Uint8Array(await appTar())]), 'app.tar');
    const up = await api.call('POST', '/api/images', form);
    if (up.status !== 201) throw new Error(`upload: ${up.status} ${JSON.stringify(up.json)}`);
    const imageId = up.json.id as number;
    dockerImage = up.json.docker_image;
    await waitFor('the build', async () => {
      const s = (await api.call('GET', `/api/images/${imageId}`)).json.status;
      if (s === 'build_failed') throw new Error('build failed');
      return s === 'ready';
    }, 120_000);

    const port = await freePort();
    const admin = await freePort();
    proxy = spawnTracked(process.execPath, [join(repoRoot, 'bin', 'berth.js'), 'proxy', '--listen', `127.0.0.1:${port}`, '--admin', `127.0.0.1:${admin}`,
      '--control-plane', cp.url, '--token', cp.app.platform.proxyTokens.current, '--data-dir', join(dir, 'proxy'), '--access-log', 'off'], { name: 'berth-proxy', logFile: join(dir, 'proxy.log') });
    const routes = async () => JSON.parse((await httpRequest({ port: admin, path: '/routes' })).body.toString()) as { routes: { hosts: string[]; endpoints: unknown[] }[] };
    const endpoints = async () => (await routes()).routes.find((r) => r.hosts.includes(HOST))?.endpoints.length;
    await waitFor('the proxy to have the route', async () => (await endpoints()) !== undefined, 20_000, () => proxy!.dead);

    const containers = async () => (await api.call('GET', `/api/containers?image_id=${imageId}`)).json.containers as { id: number; desired: string; status: string }[];
    /** at zero instances, with the proxy knowing it; `remove`: no stopped container left either */
    const toZero = async (remove: boolean) => {
      for (const c of await containers()) {
        if (c.desired === 'running') await api.call('POST', `/api/containers/${c.id}/stop`);
        if (remove) await api.call('DELETE', `/api/containers/${c.id}`);
      }
      await waitFor('zero instances', async () => (await containers()).every((c) => c.desired === 'stopped' && c.status === 'stopped') && (await endpoints()) === 0, 30_000);
      await sleep(300);
    };
    const once = async (): Promise<number> => {
      const t0 = performance.now();
      const r = await httpRequest({ port, host: HOST, path: '/', timeoutMs: 30_000 });
      const ms = performance.now() - t0;
      if (r.status !== 200) throw new Error(`cold request answered ${r.status}: ${r.body.toString().slice(0, 200)}`);
      return ms;
    };

    const result: ColdStartResult = { stopped: [], new: [] };
    for (let i = 0; i < ROUNDS_NEW; i++) {
      await toZero(true);
      result.new!.push(await once());
      log(`new container ${i + 1}/${ROUNDS_NEW}: ${result.new![i].toFixed(0)} ms`);
    }
    for (let i = 0; i < ROUNDS_STOPPED; i++) {
      await toZero(false);
      result.stopped!.push(await once());
      log(`stopped container ${i + 1}/${ROUNDS_STOPPED}: ${result.stopped![i].toFixed(0)} ms`);
    }
    report(result);
    return result;
  } finally {
    if (proxy) await stop(proxy);
    const clusterId = cp?.app.platform?.clusterId;
    await cp?.close().catch(() => {});
    if (clusterId) {
      const list = await docker.listContainers({ all: true, filters: JSON.stringify({ label: [`berth.cluster=${clusterId}`] }) });
      await Promise.all(list.map((c) => docker.getContainer(c.Id).remove({ force: true }).catch(() => {})));
    }
    if (dockerImage) await docker.getImage(dockerImage).remove({ force: true }).catch(() => {});
    rmSync(dir, { recursive: true, force: true });
  }
}

function pct(xs: number[], p: number): number {
  const v = [...xs].sort((a, b) => a - b);
  return v[Math.min(v.length - 1, Math.ceil((p / 100) * v.length) - 1)];
}

function report(r: ColdStartResult): void {
  const row = (kind: string, xs: number[]) => [kind, String(xs.length), fmt(median(xs)), fmt(pct(xs, 90)), fmt(Math.max(...xs)),
    median(xs) < 1000 && Math.max(...xs) < 2000 ? 'met' : 'MISSED'];
  process.stdout.write(`\n## Cold starts (first request to an app at zero instances, through the proxy; ms)\n\n${table(
    ['kind', 'n', 'p50', 'p90', 'max', 'p50 < 1 s, max < 2 s'],
    [
      row('stopped container (scaled to zero)', r.stopped!),
      row('new container (no container left)', r.new!),
      'Knative users report 2–15 s cold starts; berth holds the request in the proxy and starts the instance at once.',
    ],
  )}\n`);
}
