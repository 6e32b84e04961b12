/**
 * Test harness for the proxy: real upstream node:http servers on loopback, the real proxy
 * started through bin/berth.js as a child process, plain undici/net clients.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { once } from 'node:events';
import type { AddressInfo } from 'node:net';
import { request } from 'undici';

export const ROOT = join(import.meta.dirname, '..', '..');

export interface Upstream {
  server: Server;
  port: number;
  address: string;
  hits: number;
  close(): Promise<void>;
}

/** A real HTTP upstream. The default handler answers `name` and echoes request info as JSON. */
export async function startUpstream(name: string, handler?: (req: IncomingMessage, res: ServerResponse, up: Upstream) => void, port = 0): Promise<Upstream> {
  const up = { hits: 0 } as Upstream;
  const server = createServer((req, res) => {
    up.hits++;
    if (handler) return handler(req, res, up);
    let n = 0;
    req.on('data', (c: Buffer) => (n += c.length));
    req.on('end', () => {
      const body = JSON.stringify({ name, method: req.method, url: req.url, bytes: n, headers: req.headers });
      res.writeHead(200, { 'content-type': 'application/json', 'x-upstream': name });
      res.end(body);
    });
  });
  server.keepAliveTimeout = 60_000;
  server.listen(port, '127.0.0.1');
  await once(server, 'listening');
  up.server = server;
  up.port = (server.address() as AddressInfo).port;
  up.address = `127.0.0.1:${up.port}`;
  up.close = () => new Promise<void>((resolve) => {
    server.closeAllConnections();
    server.close(() => resolve());
  });
  return up;
}

export interface ProxyProc {
  proc: ChildProcess;
  port: number;
  adminPort: number;
  url: string;
  admin: string;
  dir: string;
  routesFile: string;
  logs: () => string;
  stop(signal?: NodeJS.Signals): Promise<number | null>;
}

export { freePort } from '../helpers/ports.js';
import { freePort } from '../helpers/ports.js';

export async function waitFor(fn: () => Promise<boolean> | boolean, timeoutMs = 10_000, stepMs = 50): Promise<void> {
  const end = Date.now() + timeoutMs;
  for (;;) {
    try {
      if (await fn()) return;
    } catch { /* not yet */ }
    if (Date.now() > end) throw new Error(`condition not met within ${timeoutMs} ms`);
    await new Promise((r) => setTimeout(r, stepMs));
  }
}

/**
 * Start `berth proxy` with a routes file (table object written to a temp dir) or extra args. On
 * free ports: picked, then bound by the proxy, so another test file's process can take one in
 * between (EADDRINUSE): then started again on new ones, up to three times.
 */
export async function startProxy(table: object | null, extraArgs: string[] = [], env: Record<string, string> = {}): Promise<ProxyProc> {
  for (let attempt = 1; ; attempt++) {
    try {
      return await startProxyOnce(table, extraArgs, env);
    } catch (e) {
      // (Node's admin listener says EADDRINUSE; uWS says it could not listen)
      if (attempt >= 3 || !/EADDRINUSE|could not listen/.test((e as Error).message)) throw e;
    }
  }
}

async function startProxyOnce(table: object | null, extraArgs: string[], env: Record<string, string>): Promise<ProxyProc> {
  const dir = mkdtempSync(join(tmpdir(), 'berth-proxy-test-'));
  const routesFile = join(dir, 'routes.json');
  const port = await freePort();
  const adminPort = await freePort();
  const args = [join(ROOT, 'bin', 'berth.js'), 'proxy', '--listen', `127.0.0.1:${port}`, '--admin', `127.0.0.1:${adminPort}`, '--data-dir', dir, ...extraArgs];
  if (table) {
    writeFileSync(routesFile, JSON.stringify(table));
    args.push('--routes', routesFile);
  }
  let out = '';
  const proc = spawn(process.execPath, args, { env: { ...process.env, BERTH_ACCESS_LOG: 'off', ...env }, stdio: ['ignore', 'pipe', 'pipe'] });
  proc.stdout!.on('data', (c: Buffer) => (out += c.toString()));
  proc.stderr!.on('data', (c: Buffer) => (out += c.toString()));
  const p: ProxyProc = {
    proc, port, adminPort, dir, routesFile,
    url: `http://127.0.0.1:${port}`,
    admin: `http://127.0.0.1:${adminPort}`,
    logs: () => out,
    async stop(signal = 'SIGTERM') {
      // (the directory goes whether this stops the proxy or it had exited already)
      try {
        if (proc.exitCode !== null || proc.signalCode !== null) return proc.exitCode;
        proc.kill(signal);
        const t = setTimeout(() => proc.kill('SIGKILL'), 8000);
        const [code] = await once(proc, 'exit');
        clearTimeout(t);
        return code as number | null;
      } finally {
        rmSync(dir, { recursive: true, force: true });
      }
    },
  };
  // (its output is whole once the pipes close; waitFor swallows throws, so an exit ends the wait)
  let closed = false;
  proc.once('close', () => { closed = true; });
  await waitFor(async () => {
    if (closed) return true;
    const r = await request(`${p.admin}/healthz`);
    await r.body.dump();
    return r.statusCode === 200;
  }, 15_000).catch((e) => {
    proc.kill('SIGKILL');
    rmSync(dir, { recursive: true, force: true });
    throw new Error(`proxy did not start: ${(e as Error).message}\n${out}`);
  });
  if (closed) {
    rmSync(dir, { recursive: true, force: true });
    throw new Error(`proxy exited: ${out}`);
  }
  return p;
}

export interface Resp {
  status: number;
  headers: Record<string, string | string[] | undefined>;
  body: string;
}

/** One request through the proxy with a Host header. */
export async function get(p: ProxyProc, host: string, path = '/', opts: { method?: string; headers?: Record<string, string>; body?: string | Buffer } = {}): Promise<Resp> {
  const r = await request(`${p.url}${path}`, {
    method: (opts.method ?? 'GET') as 'GET',
    headers: { host, ...opts.headers },
    body: opts.body,
  });
  const body = await r.body.text();
  return { status: r.statusCode, headers: r.headers, body };
}

/** The admin token a proxy generated into its data dir (admin writes always need one). */
export function adminToken(p: ProxyProc): string {
  return readFileSync(join(p.dir, 'admin-token'), 'utf8').trim();
}

export function putRoutes(p: ProxyProc, table: unknown, token = adminToken(p)): Promise<Resp> {
  return writeRoutes(p, 'PUT', table, token);
}

/** PATCH /routes: a route delta (shared/routes/schema.ts RouteDelta) to the table served. */
export function patchRoutes(p: ProxyProc, delta: unknown, token = adminToken(p)): Promise<Resp> {
  return writeRoutes(p, 'PATCH', delta, token);
}

async function writeRoutes(p: ProxyProc, method: 'PUT' | 'PATCH', body: unknown, token: string): Promise<Resp> {
  const r = await request(`${p.admin}/routes`, {
    method,
    body: typeof body === 'string' ? body : JSON.stringify(body),
    headers: { 'content-type': 'application/json', authorization: `Bearer ${token}` },
  });
  return { status: r.statusCode, headers: r.headers, body: await r.body.text() };
}

export function table(routes: object[], version = 1): { version: number; routes: object[] } {
  return { version, routes };
}

export function route(id: string, hosts: string[], addresses: string[], extra: object = {}): object {
  return { id, hosts, endpoints: addresses.map((a, i) => ({ id: `${id}-e${i}`, address: a })), ...extra };
}

/** VmRSS of a process in bytes (Linux). */
export async function rss(pid: number): Promise<number> {
  const { readFile } = await import('node:fs/promises');
  const s = await readFile(`/proc/${pid}/status`, 'utf8');
  const m = /VmRSS:\s+(\d+) kB/.exec(s);
  return m ? Number(m[1]) * 1024 : 0;
}
