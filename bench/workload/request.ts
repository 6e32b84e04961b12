/**
 * What one workload sends: the target address and the one request repeated, validated once and
 * turned into a single pre-built HTTP/1.1 head (Latin-1) written per request.
 */

export interface RequestSpec {
  /** the address connected to, e.g. http://127.0.0.1:8080 (path and query of the URL are the default path) */
  url: string;
  /** Host header (default: the URL's host) — an app's hostname when sending through the berth proxy */
  host?: string;
  /** several Host headers, used in turn request by request (overrides `host`) */
  hosts?: string[];
  method?: string;
  /** request target, starting with "/" (default: the URL's path and query) */
  path?: string;
  headers?: Record<string, string>;
  body?: Buffer | string;
}

export interface PreparedRequest {
  hostname: string;
  port: number;
  head: string;
  /** one head per host of `hosts` (just `head` otherwise), used in turn */
  heads: string[];
  body: Buffer | null;
  method: string;
  path: string;
  hostHeader: string;
}

const TOKEN = /^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$/;
// header values: visible ASCII, space and tab; no CR/LF/NUL (no way to smuggle a second header or request)
const VALUE = /^[\t\x20-\x7e\x80-\xff]*$/;
const PATH = /^\/[\x21-\x7e]*$/;
const HOSTNAME = /^[A-Za-z0-9.\-_:[\]]+$/;
/** headers the engine writes itself */
const RESERVED = new Set(['host', 'content-length', 'transfer-encoding', 'connection', 'upgrade', 'expect', 'te', 'keep-alive']);
export const MAX_BODY_BYTES = 1024 * 1024;
export const MAX_HEADERS = 50;
/** The request head (request line and header fields): most servers refuse larger ones (nginx: 8 KiB a line) */
export const MAX_HEAD_BYTES = 16 * 1024;

export class RequestSpecError extends Error {}

export function prepareRequest(spec: RequestSpec): PreparedRequest {
  let u: URL;
  try {
    u = new URL(spec.url);
  } catch {
    throw new RequestSpecError(`"${spec.url}" is not a URL (expected http://host:port/path)`);
  }
  if (u.protocol !== 'http:') throw new RequestSpecError(`only http:// targets are supported (got ${u.protocol}//)`);
  if (u.username || u.password) throw new RequestSpecError('credentials in the URL are not supported; use --header "authorization: …"');
  const hostname = u.hostname.replace(/^\[|\]$/g, '');
  const port = u.port ? Number(u.port) : 80;
  const method = (spec.method ?? 'GET').toUpperCase();
  if (!TOKEN.test(method) || method.length > 20) throw new RequestSpecError(`"${spec.method}" is not an HTTP method`);
  if (method === 'CONNECT') throw new RequestSpecError('CONNECT is not supported');
  const path = spec.path ?? `${u.pathname}${u.search}`;
  if (!PATH.test(path) || path.length > 8192) throw new RequestSpecError(`path "${path.slice(0, 100)}" must start with "/" and contain no spaces or control characters`);
  const hostList = spec.hosts && spec.hosts.length ? spec.hosts : [spec.host ?? u.host];
  for (const h of hostList) if (typeof h !== 'string' || !HOSTNAME.test(h) || h.length > 255) throw new RequestSpecError(`host "${String(h).slice(0, 100)}" is not a hostname`);
  const hostHeader = hostList[0];
  const lines = [`${method} ${path} HTTP/1.1`, 'host: \0'];
  const headers = Object.entries(spec.headers ?? {});
  if (headers.length > MAX_HEADERS) throw new RequestSpecError(`at most ${MAX_HEADERS} headers`);
  let userAgent = false;
  for (const [k, v] of headers) {
    if (!TOKEN.test(k) || k.length > 256) throw new RequestSpecError(`header name "${k.slice(0, 100)}" is not valid`);
    if (typeof v !== 'string' || !VALUE.test(v) || v.length > 8192) throw new RequestSpecError(`header "${k}" has a value with control characters (or over 8 KiB)`);
    const lk = k.toLowerCase();
    if (RESERVED.has(lk)) throw new RequestSpecError(`header "${k}" is set by the load generator itself`);
    if (lk === 'user-agent') userAgent = true;
    lines.push(`${k}: ${v}`);
  }
  if (!userAgent) lines.push('user-agent: berth-load');
  let body: Buffer | null = null;
  if (spec.body !== undefined && spec.body !== null) {
    body = Buffer.isBuffer(spec.body) ? spec.body : Buffer.from(spec.body, 'utf8');
    if (body.length > MAX_BODY_BYTES) throw new RequestSpecError(`the body is ${body.length} bytes; at most ${MAX_BODY_BYTES}`);
  }
  if (body !== null || method === 'POST' || method === 'PUT' || method === 'PATCH') lines.push(`content-length: ${body?.length ?? 0}`);
  const template = lines.join('\r\n') + '\r\n\r\n';
  // the longest host of the list replaces the placeholder
  const headBytes = Buffer.byteLength(template) + Math.max(...hostList.map((h) => h.length));
  if (headBytes > MAX_HEAD_BYTES) throw new RequestSpecError(`the request head (request line and headers) is ${headBytes} bytes; at most ${MAX_HEAD_BYTES}`);
  const heads = hostList.map((h) => template.replace('host: \0', `host: ${h}`));
  return { hostname, port, head: heads[0], heads, body: body !== null && body.length > 0 ? body : null, method, path, hostHeader };
}
