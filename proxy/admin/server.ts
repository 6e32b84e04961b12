import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import { timingSafeEqual } from 'node:crypto';
import { isAddressName } from '../../shared/hostname.js';
import type { RouteDelta, RouteTableSpec } from '../../shared/routes/schema.js';
import { parseRouteDelta, parseRouteTable, RouteTableError } from '../../shared/routes/validate.js';
import { formatPrometheus, type StatsSnapshot } from '../metrics/prometheus.js';

export interface AdminBackend {
  ready(): boolean;
  table(): RouteTableSpec | null;
  apply(spec: RouteTableSpec, source: string): Promise<{ version: number; routes: number; ms: number }>;
  /**
   * `delta` applied to the table served now, which it must name as its base (else an error with
   * `status` 409: another table came first, or none has); one that does not fit: RouteTableError.
   */
  applyDelta(delta: RouteDelta, source: string): Promise<{ version: number; routes: number; ms: number }>;
  stats(): Promise<StatsSnapshot>;
  status(): Record<string, unknown>;
  /** more Prometheus text (the certificates' expiry) */
  extraMetrics?(): string;
  /** read the TLS certificate files again (404: no TLS listener, 422: a bad file; the old ones stay) */
  reloadTls(): Promise<{ certificates: number }>;
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

/** The body, or a 413 error past MAX_BODY: reading stops there (the caller answers, then closes the connection). */
function readBody(req: IncomingMessage): Promise<string> {
  return new Promise((resolve, reject) => {
    const tooLarge = () => Object.assign(new Error(`route table larger than ${MAX_BODY} bytes`), { status: 413 });
    const declared = Number(req.headers['content-length']);
    if (declared > MAX_BODY) {
      req.pause();
      reject(tooLarge());
      return;
    }
    const chunks: Buffer[] = [];
    let n = 0;
    const onData = (c: Buffer) => {
      n += c.length;
      if (n > MAX_BODY) {
        req.off('data', onData);
        req.pause();
        reject(tooLarge());
        return;
      }
      chunks.push(c);
    };
    req.on('data', onData);
    req.on('end', () => resolve(Buffer.concat(chunks).toString('utf8')));
    req.on('error', reject);
  });
}

/** The path of a request target, or null when it is not origin-form (`/…`). Never throws. */
export function adminPath(url: string | undefined): string | null {
  if (url === undefined || url.length === 0 || url.charCodeAt(0) !== 47 /* / */) return null;
  const q = url.indexOf('?');
  const path = q === -1 ? url : url.slice(0, q);
  // "//x" is not a path we serve; decoding is not needed for the fixed endpoint names
  return path.startsWith('//') ? null : path;
}

/** Hosts a browser can only reach on purpose: IP literals and localhost (defeats DNS rebinding). */
function localHost(host: string | undefined): boolean {
  if (host === undefined) return true; // HTTP/1.0 clients: no browser sends a request without Host
  const h = host.startsWith('[') ? host.slice(0, host.indexOf(']') + 1) : host.replace(/:\d*$/, '');
  return isAddressName(h);
}

export interface AdminAuth {
  /** bearer token for writes (always set: generated when the operator gave none) */
  token: string;
  /** reads (/metrics /stats GET /routes) need the token too (set when the operator gave one) */
  protectReads: boolean;
}

/**
 * The admin listener (not on the request path): health, readiness, Prometheus metrics, the route
 * table (GET, PUT whole, PATCH with a delta) and JSON stats.
 *
 * What it trusts: `/healthz` and `/readyz` answer anyone. Everything else refuses requests a web
 * browser could have been tricked into sending (an `Origin` header, `Sec-Fetch-Site` other than
 * `none`/`same-origin`, a Host that is not an IP literal or localhost); writes (`PUT`/`POST`/`PATCH
 * /routes`) always need `Authorization: Bearer <token>` and an `application/json` body; reads need
 * the token when the operator configured one. Any request target is parsed without throwing:
 * one bad request is one 400, never a crashed process.
 */
export function createAdminServer(backend: AdminBackend, auth: AdminAuth): Server {
  const tokenBuf = Buffer.from(auth.token);
  const authorized = (req: IncomingMessage): boolean => {
    const h = req.headers.authorization ?? '';
    const given = Buffer.from(h.startsWith('Bearer ') ? h.slice(7) : '');
    return given.length === tokenBuf.length && timingSafeEqual(given, tokenBuf);
  };
  const handle = async (req: IncomingMessage, res: ServerResponse): Promise<void> => {
    const path = adminPath(req.url);
    if (path === null) return error(res, 400, 'bad_request_target', 'the request target must be a path such as /routes');
    if (path === '/healthz') return send(res, 200, { status: 'ok' });
    if (path === '/readyz') {
      const ready = backend.ready();
      return send(res, ready ? 200 : 503, { ready, tableVersion: backend.table()?.version ?? null });
    }
    const site = req.headers['sec-fetch-site'];
    if (req.headers.origin !== undefined || (site !== undefined && site !== 'none' && site !== 'same-origin')) {
      return error(res, 403, 'cross_origin', 'the admin listener refuses requests sent by web pages (Origin / Sec-Fetch-Site)');
    }
    const authed = authorized(req);
    if (!authed && !localHost(req.headers.host)) {
      return error(res, 403, 'bad_host', 'without the admin token, the admin listener answers only to an IP address or localhost in Host');
    }
    const write = req.method !== 'GET' && req.method !== 'HEAD';
    if ((write || auth.protectReads) && !authed) {
      res.setHeader('www-authenticate', 'Bearer');
      return error(res, 401, 'unauthorized', write
        ? 'admin writes need the admin token: Authorization: Bearer <token> (see --admin-token; berth writes a generated one to <data-dir>/admin-token)'
        : 'admin token required: Authorization: Bearer <token>');
    }
    if (path === '/metrics' && req.method === 'GET') {
      return send(res, 200, formatPrometheus(await backend.stats(), backend.table()?.version ?? null) + (backend.extraMetrics?.() ?? ''), 'text/plain; version=0.0.4');
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
      const patch = req.method === 'PATCH';
      if (req.method === 'PUT' || req.method === 'POST' || patch) {
        const what = patch ? 'route delta' : 'route table';
        const type = (req.headers['content-type'] ?? '').split(';')[0].trim().toLowerCase();
        if (type !== 'application/json') {
          req.resume();
          return error(res, 415, 'unsupported_media_type', `the ${what} must be sent as Content-Type: application/json`);
        }
        let spec: RouteTableSpec | RouteDelta;
        let parseMs: number;
        try {
          const text = await readBody(req);
          const t0 = performance.now();
          spec = patch ? parseRouteDelta(text) : parseRouteTable(text);
          parseMs = performance.now() - t0;
        } catch (e) {
          const status = (e as { status?: number }).status ?? 400;
          if (status === 413) {
            // answered, then the connection closed: the rest of the body is never read
            res.setHeader('connection', 'close');
            res.on('finish', () => req.destroy());
          }
          return error(res, status, status === 413 ? 'too_large' : patch ? 'invalid_route_delta' : 'invalid_route_table', (e as Error).message,
            e instanceof RouteTableError ? { field: e.field } : {});
        }
        let r: { version: number; routes: number; ms: number };
        try {
          r = patch ? await backend.applyDelta(spec as RouteDelta, 'admin') : await backend.apply(spec as RouteTableSpec, 'admin');
        } catch (e) {
          // a delta that does not fit the table served now (the table keeps serving)
          if (!patch) throw e;
          const status = (e as { status?: number }).status;
          if (status === 409) return error(res, 409, 'base_mismatch', (e as Error).message, { tableVersion: backend.table()?.version ?? null });
          if (e instanceof RouteTableError) return error(res, 400, 'invalid_route_delta', e.message, { field: e.field });
          throw e;
        }
        // (parseMs: JSON parse and validation; applyMs: the table built (patched) and swapped in)
        return send(res, 200, { applied: true, version: r.version, routes: r.routes, parseMs: Math.round(parseMs * 1000) / 1000, applyMs: Math.round(r.ms * 1000) / 1000 });
      }
      return error(res, 405, 'method_not_allowed', 'use GET, PUT or PATCH on /routes');
    }
    if (path === '/tls/reload') {
      req.resume();
      if (req.method !== 'POST') return error(res, 405, 'method_not_allowed', 'use POST on /tls/reload');
      try {
        return send(res, 200, { reloaded: true, ...(await backend.reloadTls()) });
      } catch (e) {
        const status = (e as { status?: number }).status ?? 500;
        return error(res, status, status === 404 ? 'no_tls' : status === 422 ? 'invalid_certificate' : 'tls_reload_failed', (e as Error).message);
      }
    }
    return error(res, 404, 'not_found', `no admin endpoint ${path}; try /healthz /readyz /metrics /routes /stats /tls/reload`);
  };
  return createServer((req, res) => {
    handle(req, res).catch((e: Error) => {
      if (!res.headersSent) error(res, 500, 'internal', e.message);
      else res.destroy();
    });
  });
}
