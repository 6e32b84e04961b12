/**
 * The processes a macro run starts: the upstream (nginx static, or bare uWS), and the
 * proxies under test (berth, nginx, @fastify/http-proxy, http-proxy). Each proxy gets the
 * same two virtual hosts: `bench.local` → one upstream, `rr.bench.local` → three upstreams
 * in round robin.
 */
import { spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { freePort, httpRequest, waitFor } from '../lib/net.js';
import type { RouteSpec } from '../../shared/routes/schema.js';
import { spawnTracked, stop, which, type Tracked } from '../lib/proc.js';

export const HOST_SINGLE = 'bench.local';
export const HOST_RR = 'rr.bench.local';
export const BIG_BYTES = 64 * 1024;

const here = dirname(fileURLToPath(import.meta.url)); // dist/bench/macro
export const repoRoot = join(here, '..', '..', '..');

export interface Upstream {
  kind: 'nginx' | 'uws';
  ports: number[];
  proc: Tracked;
}

export interface ProxyTarget {
  id: 'berth' | 'berth-pipeline' | 'nginx' | 'fastify-http-proxy' | 'http-proxy' | 'uws-floor';
  label: string;
  port: number;
  proc?: Tracked;
  /** set when the target could not be started: printed as n/a (reason) */
  unavailable?: string;
  /** berth only */
  adminPort?: number;
  /** berth only: the admin token it generated (admin writes need it) */
  adminToken?: string;
  /** berth with BENCH_PROFILE=1: where --cpu-prof writes */
  profileDir?: string;
  notes?: string;
}

function isRoot(): boolean {
  return typeof process.getuid === 'function' && process.getuid() === 0;
}

function nginxCommon(dir: string, name: string): string {
  mkdirSync(join(dir, `${name}-tmp`), { recursive: true });
  return `
${isRoot() ? 'user root;' : ''}
worker_processes 1;
pid ${join(dir, `${name}.pid`)};
error_log ${join(dir, `${name}-error.log`)} warn;
events { worker_connections 16384; }
`;
}

function nginxHttpCommon(dir: string, name: string): string {
  const tmp = join(dir, `${name}-tmp`);
  return `
  access_log off;
  client_body_temp_path ${tmp}/body;
  proxy_temp_path ${tmp}/proxy;
  fastcgi_temp_path ${tmp}/fastcgi;
  uwsgi_temp_path ${tmp}/uwsgi;
  scgi_temp_path ${tmp}/scgi;
  keepalive_requests 100000000;
  keepalive_timeout 600s;
  sendfile on;
  tcp_nopush on;
  tcp_nodelay on;
`;
}

function startNginx(dir: string, name: string, conf: string, cpu: string | undefined): Tracked {
  const confFile = join(dir, `${name}.conf`);
  writeFileSync(confFile, conf);
  const test = spawnSync('nginx', ['-t', '-q', '-e', join(dir, `${name}-error.log`), '-p', dir, '-c', confFile], { encoding: 'utf8' });
  if (test.status !== 0) throw new Error(`nginx -t failed for ${name}: ${test.stderr}`);
  return spawnTracked('nginx', ['-e', join(dir, `${name}-error.log`), '-p', dir, '-c', confFile, '-g', 'daemon off;'], {
    name,
    cpu,
    logFile: join(dir, `${name}.out`),
  });
}

export async function startUpstream(dir: string, cpu: string | undefined): Promise<Upstream> {
  const ports = [await freePort(), await freePort(), await freePort()];
  const forced = process.env.BENCH_UPSTREAM;
  const useNginx = forced ? forced === 'nginx' : which('nginx');
  if (forced === 'nginx' && !which('nginx')) throw new Error('BENCH_UPSTREAM=nginx but nginx is not installed');
  let proc: Tracked;
  if (useNginx) {
    const www = join(dir, 'www');
    mkdirSync(www, { recursive: true });
    writeFileSync(join(www, '64k'), Buffer.alloc(BIG_BYTES, 'x'));
    const conf = `${nginxCommon(dir, 'upstream')}
http {
${nginxHttpCommon(dir, 'upstream')}
  server {
    ${ports.map((p) => `listen 127.0.0.1:${p};`).join('\n    ')}
    root ${www};
    location = /64k { default_type application/octet-stream; }
    location / { default_type text/plain; return 200 "ok"; }
  }
}
`;
    proc = startNginx(dir, 'upstream', conf, cpu);
  } else {
    proc = spawnTracked(process.execPath, [join(here, 'uws-upstream.js'), ...ports.map(String)], {
      name: 'uws-upstream',
      cpu,
      logFile: join(dir, 'uws-upstream.log'),
    });
  }
  for (const p of ports) {
    await waitFor(`upstream :${p}`, async () => (await httpRequest({ port: p, path: '/small' })).status === 200, 10_000, () => proc.dead);
  }
  const big = await httpRequest({ port: ports[0], path: '/64k' });
  if (big.body.length !== BIG_BYTES) throw new Error(`upstream /64k returned ${big.body.length} bytes`);
  return { kind: useNginx ? 'nginx' : 'uws', ports, proc };
}

async function waitProxyReady(t: ProxyTarget, timeoutMs = 20_000): Promise<void> {
  const proc = t.proc!;
  await waitFor(
    t.label,
    async () => (await httpRequest({ port: t.port, path: '/small', host: HOST_SINGLE })).status === 200,
    timeoutMs,
    () => proc.dead,
  );
  const rr = await httpRequest({ port: t.port, path: '/small', host: HOST_RR });
  if (rr.status !== 200) throw new Error(`${t.label}: ${HOST_RR} answered ${rr.status}`);
  const big = await httpRequest({ port: t.port, path: '/64k', host: HOST_SINGLE });
  if (big.status !== 200 || big.body.length !== BIG_BYTES) throw new Error(`${t.label}: /64k answered ${big.status} with ${big.body.length} bytes`);
}

function tail(file: string | undefined, n = 600): string {
  if (!file || !existsSync(file)) return '';
  const s = readFileSync(file, 'utf8').trim();
  return s.length > n ? '…' + s.slice(-n) : s;
}

async function guarded(t: ProxyTarget, start: () => Promise<void>): Promise<ProxyTarget> {
  try {
    await start();
    await waitProxyReady(t);
  } catch (e) {
    const log = tail(t.proc?.logFile);
    t.unavailable = `${(e as Error).message}${log ? ` — log: ${log.replace(/\s+/g, ' ')}` : ''}`;
    if (t.proc) await stop(t.proc);
  }
  return t;
}

/** How deep the `berth-pipeline` row pipelines (RouteSpec.pipeline). */
export const BENCH_PIPELINE = 8;

/** `pipeline`: RouteSpec.pipeline on both routes (the berth-pipeline row); 1 = as shipped. */
export function berthRouteTable(ports: number[], version = 1, pipeline = 1): object {
  const extra = pipeline > 1 ? { pipeline } : {};
  return {
    version,
    routes: [
      { id: 'single', hosts: [HOST_SINGLE], endpoints: [{ id: 'e1', address: `127.0.0.1:${ports[0]}` }], policy: 'round_robin', ...extra },
      {
        id: 'rr',
        hosts: [HOST_RR],
        endpoints: ports.map((p, i) => ({ id: `e${i + 1}`, address: `127.0.0.1:${p}` })),
        policy: 'round_robin',
        ...extra,
      },
    ],
  };
}

/** The bench routes and `n` more (`app-{i}.{tag}.bench.local` and its wildcard, over `ports`): the 10,000-route scenarios. */
export function buildBigTable(ports: number[], n: number, version: number, tag: string): { version: number; routes: RouteSpec[] } {
  const base = berthRouteTable(ports, version) as { version: number; routes: RouteSpec[] };
  for (let i = 0; i < n; i++) {
    base.routes.push({
      id: `app-${i}`,
      hosts: [`app-${i}.${tag}.bench.local`, `*.app-${i}.${tag}.bench.local`],
      endpoints: [{ id: `c-${i}`, address: `127.0.0.1:${ports[i % ports.length]}` }],
    });
  }
  return base;
}

/** berth proxy --help, to find out which switches this build has (access log off). */
export function berthHelp(): { ok: boolean; text: string } {
  const r = spawnSync(process.execPath, [join(repoRoot, 'bin', 'berth.js'), 'proxy', '--help'], { encoding: 'utf8', timeout: 10_000 });
  return { ok: r.status === 0, text: `${r.stdout ?? ''}${r.stderr ?? ''}` };
}

/**
 * berth as shipped, or (`pipelined`) with RouteSpec.pipeline on both routes: a row of its own,
 * since pipelining is opt-in per route (not every app server answers pipelined requests well).
 */
export async function startBerth(dir: string, ports: number[], cpu: string | undefined, pipelined = false, controlPlane?: { url: string; token: string }): Promise<ProxyTarget> {
  const t: ProxyTarget = controlPlane
    ? { id: 'berth', label: 'berth (tables from a control plane)', port: await freePort(), adminPort: await freePort() }
    : pipelined
    ? { id: 'berth-pipeline', label: `berth pipeline=${BENCH_PIPELINE}`, port: await freePort(), adminPort: await freePort() }
    : { id: 'berth', label: 'berth', port: await freePort(), adminPort: await freePort() };
  return guarded(t, async () => {
    const help = berthHelp();
    if (!help.ok) throw new Error(`\`berth proxy --help\` failed: ${help.text.trim().split('\n')[0]}`);
    // each berth row runs in a directory of its own (its default data dir, admin token)
    const cwd = controlPlane ? join(dir, 'berth-push') : pipelined ? join(dir, t.id) : dir;
    mkdirSync(cwd, { recursive: true });
    const routes = join(dir, `${t.id}-routes.json`);
    if (!controlPlane) writeFileSync(routes, JSON.stringify(berthRouteTable(ports, 1, pipelined ? BENCH_PIPELINE : 1)));
    const args = [
      join(repoRoot, 'bin', 'berth.js'),
      'proxy',
      '--listen',
      `127.0.0.1:${t.port}`,
      '--admin',
      `127.0.0.1:${t.adminPort}`,
      ...(controlPlane ? ['--control-plane', controlPlane.url, '--token', controlPlane.token] : ['--routes', routes]),
      '--workers',
      '1',
    ];
    const notes: string[] = [pipelined ? `1 worker, routes with "pipeline": ${BENCH_PIPELINE}` : '1 worker, features as shipped'];
    if (/--access-log\b/.test(help.text)) {
      args.push('--access-log', 'off');
      notes.push('--access-log off');
    }
    const extra = process.env.BENCH_BERTH_ARGS?.trim();
    if (extra) {
      args.push(...extra.split(/\s+/));
      notes.push(`extra args: ${extra}`);
    }
    t.notes = notes.join(', ');
    const nodeArgs = (process.env.BENCH_BERTH_NODE_ARGS ?? '').split(/\s+/).filter(Boolean);
    if (process.env.BENCH_PROFILE === '1') {
      t.profileDir = join(repoRoot, '.bench-out', 'profiles', new Date().toISOString().replace(/[:.]/g, '-'));
      mkdirSync(t.profileDir, { recursive: true });
      nodeArgs.push('--cpu-prof', `--cpu-prof-dir=${t.profileDir}`);
      notes.push('PROFILING (--cpu-prof): numbers include profiler overhead');
      t.notes = notes.join(', ');
    } else if (nodeArgs.length) {
      notes.push(`node ${nodeArgs.join(' ')}`);
      t.notes = notes.join(', ');
    }
    t.proc = spawnTracked(process.execPath, [...nodeArgs, ...args], {
      name: t.id,
      cpu,
      cwd,
      // (fed by a control plane: info, for its "route table applied" lines; one per table)
      env: { ...process.env, BERTH_ACCESS_LOG: process.env.BERTH_ACCESS_LOG ?? 'off', BERTH_LOG_LEVEL: process.env.BERTH_LOG_LEVEL ?? (controlPlane ? 'info' : 'warn') },
      logFile: controlPlane ? join(cwd, 'berth.log') : join(dir, `${t.id}.log`),
    });
    await waitFor(
      `${t.id} /readyz`,
      async () => (await httpRequest({ port: t.adminPort!, path: '/readyz' })).status === 200,
      20_000,
      () => t.proc!.dead,
    );
    // admin writes need the token berth generated in its default data dir
    const tokenFile = join(cwd, '.berth', 'admin-token');
    if (existsSync(tokenFile)) t.adminToken = readFileSync(tokenFile, 'utf8').trim();
  });
}

export async function startNginxProxy(dir: string, ports: number[], cpu: string | undefined): Promise<ProxyTarget> {
  const t: ProxyTarget = { id: 'nginx', label: 'nginx', port: await freePort() };
  if (!which('nginx')) return { ...t, unavailable: 'nginx binary not installed (apt-get install -y nginx)' };
  t.notes = '1 worker, keepalive 64 upstream pool, HTTP/1.1 upstream, access_log off';
  return guarded(t, async () => {
    const up = (name: string, ps: number[]) => `
  upstream ${name} {
    ${ps.map((p) => `server 127.0.0.1:${p};`).join('\n    ')}
    keepalive 64;
    keepalive_requests 100000000;
    keepalive_timeout 600s;
  }`;
    const conf = `${nginxCommon(dir, 'nginx-proxy')}
http {
${nginxHttpCommon(dir, 'nginx-proxy')}
${up('single', [ports[0]])}
${up('rr', ports)}
  proxy_http_version 1.1;
  proxy_set_header Connection "";
  proxy_set_header Host $host;
  proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
  proxy_set_header X-Forwarded-Proto $scheme;
  # hold a 64 KiB response in memory instead of spilling to a temp file
  proxy_buffer_size 16k;
  proxy_buffers 16 16k;
  server {
    listen 127.0.0.1:${t.port} default_server;
    server_name ${HOST_SINGLE};
    location / { proxy_pass http://single; }
  }
  server {
    listen 127.0.0.1:${t.port};
    server_name ${HOST_RR};
    location / { proxy_pass http://rr; }
  }
}
`;
    t.proc = startNginx(dir, 'nginx-proxy', conf, cpu);
  });
}

export async function startNodePeer(
  dir: string,
  id: 'fastify-http-proxy' | 'http-proxy' | 'uws-floor',
  ports: number[],
  cpu: string | undefined,
): Promise<ProxyTarget> {
  const label = id === 'fastify-http-proxy' ? '@fastify/http-proxy' : id === 'uws-floor' ? 'uWS floor (no proxy)' : 'http-proxy';
  const t: ProxyTarget = { id, label, port: await freePort() };
  t.notes =
    id === 'fastify-http-proxy' ? 'fastify 5 + reply-from (undici), logger off'
    : id === 'uws-floor' ? "not a proxy: uWS 20.30 + berth's socket primitives with no checks, no books (bench/macro/peers/uws-floor.ts)"
    : 'node:http + keep-alive agent, xfwd';
  return guarded(t, async () => {
    t.proc = spawnTracked(process.execPath, [join(here, 'peers', `${id}.js`)], {
      name: id,
      cpu,
      env: {
        ...process.env,
        NODE_ENV: 'production',
        BENCH_PORT: String(t.port),
        BENCH_UPSTREAMS: ports.map((p) => `127.0.0.1:${p}`).join(','),
        BENCH_RR_HOST: HOST_RR,
      },
      logFile: join(dir, `${id}.log`),
    });
  });
}
