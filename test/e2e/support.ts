import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync } from 'node:fs';
import { join, dirname } from 'node:path';
import { fileURLToPath } from 'node:url';
import { Agent, request } from 'undici';
import { docker } from '../helpers/docker.js';
export { removeClusterContainers } from '../helpers/docker.js';
import { removeClusterContainers as removeClusterContainersOf } from '../helpers/docker.js';
import type { TarEntry } from '../helpers/archives.js';

export const ROOT = join(dirname(fileURLToPath(import.meta.url)), '..', '..');
export const BIN = join(ROOT, 'bin', 'berth.js');
export const built = () => existsSync(join(ROOT, 'dist', 'shared', 'cli', 'main.js'));

/** A child `berth …` process with its output kept for failure messages. */
export class Proc {
  child: ChildProcess;
  out = '';
  exited: Promise<number | null>;
  constructor(args: string[], env: Record<string, string>) {
    this.child = spawn(process.execPath, [BIN, ...args], { env: { ...process.env, ...env }, stdio: ['ignore', 'pipe', 'pipe'] });
    const keep = (d: Buffer) => { this.out = (this.out + d.toString()).slice(-20_000); };
    this.child.stdout!.on('data', keep);
    this.child.stderr!.on('data', keep);
    this.exited = new Promise((res) => this.child.on('exit', (code) => res(code)));
  }
  kill(sig: NodeJS.Signals = 'SIGTERM'): Promise<number | null> {
    if (this.child.exitCode === null && this.child.signalCode === null) this.child.kill(sig);
    return this.exited;
  }
}

export const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

export async function waitFor<T>(what: string, fn: () => Promise<T | undefined | false>, timeoutMs = 30_000, everyMs = 100): Promise<T> {
  const end = Date.now() + timeoutMs;
  let last: unknown;
  for (;;) {
    try {
      const v = await fn();
      if (v !== undefined && v !== false) return v as T;
    } catch (e) { last = e; }
    if (Date.now() > end) throw new Error(`timed out after ${timeoutMs}ms waiting for ${what}${last ? `: ${(last as Error).message}` : ''}`);
    await sleep(everyMs);
  }
}

/**
 * busybox httpd on $PORT serving /www: the Dockerfile and the folder, plus `files` under www/
 * (names relative to it; a name ending in / is a directory, CGI scripts get mode 0755 from the caller).
 */
export function httpdApp(files: Array<{ name: string; content?: string; mode?: number }>): TarEntry[] {
  return [
    { name: 'Dockerfile', content: 'FROM berth-test/busybox:1\nCOPY www /www\nCMD ["sh", "-c", "exec httpd -f -p ${PORT:-8080} -h /www"]\n' },
    { name: 'www/', type: 'directory' },
    ...files.map((f): TarEntry => (f.name.endsWith('/') ? { name: `www/${f.name}`, type: 'directory' } : { name: `www/${f.name}`, content: f.content ?? '', ...(f.mode ? { mode: f.mode } : {}) })),
  ];
}

/** The containers of an image that are wanted running (what an autoscaler or a user asked for). */
export async function runningOf<C extends { desired: string }>(api: { get(path: string): Promise<{ body: { containers: C[] } }> }, imageId: number): Promise<C[]> {
  return (await api.get(`/api/containers?image_id=${imageId}`)).body.containers.filter((c) => c.desired === 'running');
}

/** The test app: busybox httpd on $PORT; /id.txt answers the container's hostname (its short Docker id). */
export function idApp(): TarEntry[] {
  return [
    { name: 'Dockerfile', content: 'FROM berth-test/busybox:1\nCOPY www /www\nCMD ["sh", "-c", "hostname > /www/id.txt; exec httpd -f -p ${PORT:-8080} -h /www"]\n' },
    { name: 'www/', type: 'directory' },
    { name: 'www/index.html', content: '<h1>hello from berth</h1>\n' },
    { name: 'www/health.txt', content: 'ok\n' },
  ];
}

const agent = new Agent({ connections: 64, keepAliveTimeout: 4000 });

/** GET through the proxy with a Host header. */
export async function viaProxy(port: number, host: string, path = '/id.txt', timeoutMs = 5000): Promise<{ status: number; body: string }> {
  const res = await request(`http://127.0.0.1:${port}${path}`, { headers: { host }, dispatcher: agent, headersTimeout: timeoutMs, bodyTimeout: timeoutMs });
  const body = await res.body.text();
  return { status: res.statusCode, body: body.trim() };
}

/**
 * Closed-loop load: `concurrency` loops of requests until stopped; counts statuses and errors.
 * `path` and `timeoutMs` for apps that answer slowly (requests queued behind a concurrency cap).
 */
export function load(port: number, host: string, concurrency = 8, opts: { path?: string; timeoutMs?: number } = {}) {
  let stop = false;
  const stats = { ok: 0, failed: 0, byBody: new Map<string, number>(), failures: [] as string[] };
  const loops = Array.from({ length: concurrency }, async () => {
    while (!stop) {
      try {
        const r = await viaProxy(port, host, opts.path, opts.timeoutMs);
        if (r.status === 200) { stats.ok++; stats.byBody.set(r.body, (stats.byBody.get(r.body) ?? 0) + 1); }
        else { stats.failed++; if (stats.failures.length < 20) stats.failures.push(`${r.status} ${r.body.slice(0, 100)}`); }
      } catch (e) {
        stats.failed++;
        if (stats.failures.length < 20) stats.failures.push((e as Error).message);
      }
    }
  });
  return { stats, async stop() { stop = true; await Promise.all(loops); return stats; } };
}

/** Remove every container of a berth cluster (test cleanup). */

interface ProxyRoute { hosts: string[]; wake?: boolean; endpoints: Array<{ address: string }> }

/** The route for `host` in a proxy's current table (its admin `GET /routes`), if it has one. */
export async function proxyRoute(px: { admin: string }, host: string): Promise<ProxyRoute | undefined> {
  const r = await request(`${px.admin}/routes`);
  const table = (await r.body.json()) as { routes?: ProxyRoute[] };
  return table.routes?.find((x) => x.hosts.includes(host));
}

/**
 * A proxy subscribed to an in-process control plane (`berth proxy --control-plane`), returned once
 * its admin table has a route for `host` that satisfies `want` (default: any).
 */
export async function startSubscribedProxy(cpUrl: string, token: string, host: string, want: (r: { wake?: boolean }) => boolean = () => true) {
  const { startProxy } = await import('../proxy/harness.js');
  const px = await startProxy(null, ['--control-plane', cpUrl, '--token', token]);
  await waitFor(`the proxy to have the route of ${host}`, async () => {
    const r = await proxyRoute(px, host);
    return r !== undefined && want(r);
  }, 20_000);
  return px;
}

/** Tear down what an e2e suite with its own control plane and proxy made, in order. */
export async function teardownStack(s: { px?: { stop(): Promise<unknown> }; cp?: { close(): Promise<void> }; clusterId: string; dockerImage: string }): Promise<void> {
  await s.px?.stop();
  await s.cp?.close();
  if (s.clusterId) await removeClusterContainersOf(s.clusterId);
  if (s.dockerImage) await docker.getImage(s.dockerImage).remove({ force: true }).catch(() => {});
}
