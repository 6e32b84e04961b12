import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import { timingSafeEqual } from 'node:crypto';
import type { RouteTableSpec } from '../../shared/routes/schema.js';
import { parseRouteTable, RouteTableError } from '../../shared/routes/validate.js';
import { formatPrometheus, type StatsSnapshot } from '../metrics/prometheus.js';

export interface AdminBackend {
  ready(): boolean;
  table(): RouteTableSpec | null;
  apply(spec: RouteTableSpec, source: string): Promise<{ version: number; routes: number; ms: number }>;
  stats(): Promise<StatsSnapshot>;
  status(): Record<string, unknown>;
}

const MAX_BODY = 64 * 1024 * 1024;

function send(res: ServerResponse, status: number, body: unknown, type = 'application/json'): void {
  const text = type === 'application/json' ? JSON.stringify(body) : String(body);
  res.writeHead(status, { 'content-type': type, 'cache-control': 'no-store', 'content-length': Buffer.byteLength(text) });
  res.end(text);
}

function error(res: ServerResponse, status: number, code: string, message: string, extra: Record<string, unknown> = {}): void {
  send(res, status, { error: { code, message, ...extra } });
}

function readBody(req: IncomingMessage): Promise<string> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    let n = 0;
    req.on('data', (c: Buffer) => {
      n += c.length;
      if (n > MAX_BODY) {
        reject(Object.assign(new Error(`route table larger than ${MAX_BODY} bytes`), { status: 413 }));
        req.destroy();
        return;
      }
      chunks.push(c);
    });
    req.on('end', () => resolve(Buffer.concat(chunks).toString('utf8')));
    req.on('error', reject);
  });
}

/**
 * The admin listener (not on the request path): health, readiness, Prometheus metrics, the route
 * table (GET/PUT) and JSON stats. When a token is configured every endpoint but /healthz and
 * /readyz requires `Authorization: Bearer <token>`.
 */
export function createAdminServer(backend: AdminBackend, token: string | undefined): Server {
  const tokenBuf = token ? Buffer.from(token) : null;
  const authorized = (req: IncomingMessage): boolean => {
    if (tokenBuf === null) return true;
    const h = req.headers.authorization ?? '';
    const given = Buffer.from(h.startsWith('Bearer ') ? h.slice(7) : '');
    return given.length === tokenBuf.length && timingSafeEqual(given, tokenBuf);
  };
  return createServer((req, res) => {
    const url = new URL(req.url ?? '/', 'http://admin');
    const path = url.pathname;
    void (async () => {
      if (path === '/healthz') return send(res, 200, { status: 'ok' });
      if (path === '/readyz') {
        const ready = backend.ready();
        return send(res, ready ? 200 : 503, { ready, tableVersion: backend.table()?.version ?? null });
      }
      if (!authorized(req)) return error(res, 401, 'unauthorized', 'admin token required: Authorization: Bearer <token>');
      if (path === '/metrics' && req.method === 'GET') {
        return send(res, 200, formatPrometheus(await backend.stats(), backend.table()?.version ?? null), 'text/plain; version=0.0.4');
      }
      if (path === '/stats' && req.method === 'GET') {
        const s = await backend.stats();
        return send(res, 200, { ...backend.status(), ...s });
      }
      if (path === '/routes') {
        if (req.method === 'GET') {
          const t = backend.table();
          return t ? send(res, 200, t) : error(res, 404, 'no_table', 'no route table loaded yet');
        }
        if (req.method === 'PUT' || req.method === 'POST') {
          let spec: RouteTableSpec;
          try {
            spec = parseRouteTable(await readBody(req));
          } catch (e) {
            const status = (e as { status?: number }).status ?? 400;
            return error(res, status, status === 413 ? 'too_large' : 'invalid_route_table', (e as Error).message,
              e instanceof RouteTableError ? { field: e.field } : {});
          }
          const r = await backend.apply(spec, 'admin');
          return send(res, 200, { applied: true, version: r.version, routes: r.routes, applyMs: Math.round(r.ms * 1000) / 1000 });
        }
        return error(res, 405, 'method_not_allowed', 'use GET or PUT on /routes');
      }
      return error(res, 404, 'not_found', `no admin endpoint ${path}; try /healthz /readyz /metrics /routes /stats`);
    })().catch((e: Error) => {
      if (!res.headersSent) error(res, 500, 'internal', e.message);
      else res.destroy();
    });
  });
}
