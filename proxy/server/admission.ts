/**
 * Admission: what the proxy refuses before it picks an endpoint, shared by HTTP and WebSocket.
 *
 * A request is forwarded only when the upstream will see exactly what the client sent. Anything
 * ambiguous (two Content-Lengths, a Transfer-Encoding we would have to interpret, two Hosts, a
 * Host with userinfo or a path) is a 400 with `x-berth-error`, answered by the proxy, so it can
 * never reach an endpoint, never count against its circuit breaker and never be smuggled.
 *
 * Byte fidelity: uWebSockets.js hands header values, the URL and the query to JS as strings
 * decoded from UTF-8, while the upstream client writes strings as Latin-1 (one char, one byte).
 * Values that are plain printable ASCII (all real traffic) pass untouched after one scan; any
 * other value is re-encoded to the bytes the client sent (`Buffer.from(v, 'utf8')` read back as
 * Latin-1), or refused when that is impossible: a U+FFFD means the client's bytes were not UTF-8
 * and uWS has already replaced them; control characters and DEL are never forwardable.
 *
 * Hot path cost: one regex test per header value and one for the path; no allocation unless a
 * value is non-ASCII.
 */

import { createHash } from 'node:crypto';
import type { HttpRequest, HttpResponse } from 'uWebSockets.js';
import { isAddressName, normalizeHost } from '../../shared/hostname.js';
import { globalStats } from '../metrics/route-stats.js';
import type { Route } from '../routing/route.js';
import type { RouteTable } from '../routing/table.js';
import { Split } from '../routing/split.js';
import { logRejected, refuse, sendError } from './respond.js';
import { runtime } from './state.js';
import { keepHostHeader, readTarget, target } from './target.js';

/** Anything but TAB and printable ASCII (SP..~) needs a closer look. */
const NOT_PLAIN_VALUE = /[^\t\x20-\x7e]/;
/** Control characters (but TAB) and DEL can never be forwarded. */
const CONTROL = /[\x00-\x08\x0a-\x1f\x7f]/;
/** Outside visible ASCII in a request target (no SP, no controls, no DEL). */
const NOT_PLAIN_TARGET = /[^\x21-\x7e]/;
const CONTROL_OR_SPACE = /[\x00-\x20\x7f]/;

/**
 * A header value as the Latin-1 string whose bytes are what the client sent, or null when it
 * cannot be forwarded faithfully.
 */
export function forwardableValue(v: string): string | null {
  if (!NOT_PLAIN_VALUE.test(v)) return v;
  return reencode(v, CONTROL);
}

/** The request target (path and query) as Latin-1 bytes as sent, or null when impossible. */
export function forwardableTarget(t: string): string | null {
  if (!NOT_PLAIN_TARGET.test(t)) return t;
  return reencode(t, CONTROL_OR_SPACE);
}

function reencode(v: string, forbidden: RegExp): string | null {
  if (forbidden.test(v) || v.includes('\ufffd')) return null;
  return Buffer.from(v, 'utf8').toString('latin1');
}

/** Content-Length: 1–15 decimal digits (what the upstream client and every server parse alike). */
export function validContentLength(v: string): boolean {
  const n = v.length;
  if (n === 0 || n > 15) return false;
  for (let i = 0; i < n; i++) {
    const c = v.charCodeAt(i);
    if (c < 48 || c > 57) return false;
  }
  return true;
}

/** The only request Transfer-Encoding the proxy forwards: `chunked` (any case, optional spaces). */
export function validTransferEncoding(v: string): boolean {
  return v.length >= 7 && v.trim().toLowerCase() === 'chunked';
}

/**
 * Does `/apps/{host}/` reach an app on this Host? Only on the proxy's own address: an IP literal,
 * `localhost`, or a name the operator gave (`--apps-path-hosts`) — and never on a Host a route
 * serves (there the path is the app's own). Any other name could be claimed by an app later (a
 * wildcard DNS name nobody has deployed yet): what another app left in that origin (cookies,
 * storage, caches) would then be the new app's visitors'. Off the hot path: `/apps/` requests only.
 */
/** What a 404 no_route says: the host, and what went wrong with an `/apps/{host}/` path. */
function noRouteMessage(host: string, path: string, table: RouteTable): string {
  if (path !== '/apps' && !path.startsWith('/apps/')) return `no route for host "${host}"`;
  // `/apps/` itself on the proxy's own address: the path names no app
  if (path.length <= 6 && pathFormHost(host, table)) return 'no app hostname in the path: /apps/{host}/ names one, as in /apps/hello.example.com/';
  return `no route for host "${host}" (/apps/{host}/ is served on the proxy's own address: an IP address, localhost or a name in --apps-path-hosts)`;
}

function pathFormHost(header: string, table: RouteTable): boolean {
  if (!validHost(header)) return false;
  const name = normalizeHost(header);
  if (table.entry(name) !== undefined) return false;
  return isAddressName(name) || runtime.ownNames.has(name);
}

/**
 * Is this a Host (or `/apps/{host}` segment) of the form `host[:port]`? Host is a DNS name
 * (letters, digits, `-`, `_`, `.`; no empty label but the root's trailing dot) or a bracketed
 * IPv6/IPvFuture literal; port is 1–5 digits, at most 65535.
 * Userinfo, paths, `#`, `?`, schemes, spaces and non-ASCII bytes are refused (browsers send IDNs
 * as punycode).
 */
export function validHost(raw: string): boolean {
  const n = raw.length;
  if (n === 0 || n > 261) return false;
  let i = 0;
  if (raw.charCodeAt(0) === 91 /* [ */) {
    const close = raw.indexOf(']');
    if (close < 3) return false;
    for (i = 1; i < close; i++) {
      const c = raw.charCodeAt(i);
      const hex = (c >= 48 && c <= 58) || (c >= 97 && c <= 102) || (c >= 65 && c <= 70) || c === 46;
      if (!hex) return false;
    }
    i = close + 1;
    if (i === n) return true;
  } else {
    // (no empty label: no leading dot, no two in a row; one trailing dot, the root, is fine)
    let prev = 46;
    for (; i < n; i++) {
      const c = raw.charCodeAt(i);
      if (c === 58 /* : */) break;
      const ok = (c >= 97 && c <= 122) || (c >= 65 && c <= 90) || (c >= 48 && c <= 57) || c === 45 || (c === 46 && prev !== 46) || c === 95;
      if (!ok) return false;
      prev = c;
    }
    if (i === 0) return false;
    if (i === n) return true;
  }
  // ":" port, 0–65535
  if (raw.charCodeAt(i) !== 58) return false;
  const digits = n - i - 1;
  if (digits < 1 || digits > 5) return false;
  let port = 0;
  for (i++; i < n; i++) {
    const c = raw.charCodeAt(i);
    if (c < 48 || c > 57) return false;
    port = port * 10 + c - 48;
  }
  return port <= 65535;
}

/** Why a request was refused at admission: the `x-berth-error` code and a message. */
export const REFUSALS = {
  bad_host: 'the Host must be host[:port] (no userinfo, path, scheme or fragment)',
  duplicate_host: 'the request has more than one Host header',
  bad_content_length: 'Content-Length must be one decimal number, sent once',
  bad_transfer_encoding: 'only "Transfer-Encoding: chunked" is accepted, without Content-Length',
  bad_header_value: 'a header value has bytes the proxy cannot forward as sent (control characters, DEL or invalid UTF-8)',
  bad_request_target: 'the request target has bytes the proxy cannot forward as sent (control characters, DEL or invalid UTF-8)',
  connect_method: 'CONNECT is not supported: the proxy forwards requests to apps, it does not open tunnels',
} as const;
export type Refusal = keyof typeof REFUSALS;

/** What admit() found: the route, the normalised host, and the target as it will be forwarded. */
export const admitted = {
  route: null as Route | null,
  host: '',
  /** path?query as the client's bytes (Latin-1 string), for the HTTP upstream */
  path: '',
  /** path?query as uWS decoded it (UTF-8), for URL parsers (the WebSocket client) */
  decodedPath: '',
  rawHost: '',
  requestId: '',
  /** the session-affinity cookie's value ('' when absent, or the route has no affinity) */
  affinity: '',
  /** a private route: the header that carried the token (not forwarded); '' otherwise */
  authHeader: '' as '' | 'authorization' | 'x-berth-authorization',
  /** and the SHA-256 of its token: a held request checks it again on the route it is released to */
  authDigest: '',
  /** the path for logs */
  logPath: '',
  /** reached by `/apps/{host}/` rather than by its Host (ClientResponse.viaPath) */
  viaPath: false,
};

/** The longest bearer token hashed (invoker tokens are ~46 characters). */
const MAX_TOKEN = 512;

/**
 * Which header carries a token of `tokens` (hex SHA-256 digests): `x-berth-authorization` first —
 * an app with its own use for Authorization keeps it — then `authorization`; '' when neither does.
 */
function authorize(req: HttpRequest, tokens: Set<string>): '' | 'authorization' | 'x-berth-authorization' {
  const mine = req.getHeader('x-berth-authorization');
  const name = mine !== '' ? 'x-berth-authorization' : 'authorization';
  const digest = bearerDigest(mine !== '' ? mine : req.getHeader('authorization'));
  if (!tokens.has(digest)) return '';
  admitted.authDigest = digest;
  return name;
}

/** The hex SHA-256 of the token in `Bearer <token>` ('' when the value is not one). */
export function bearerDigest(value: string): string {
  if (value.length < 8 || value.length > MAX_TOKEN + 7 || value.slice(0, 7).toLowerCase() !== 'bearer ') return '';
  const token = value.slice(7).trim();
  return token === '' ? '' : createHash('sha256').update(token).digest('hex');
}

/** The session-affinity cookie's name (Set-Cookie in exchange.ts). */
export const AFFINITY_COOKIE = 'berth-affinity';
const AFFINITY_NEEDLE = AFFINITY_COOKIE + '=';

/**
 * The value of `berth-affinity` in a Cookie header ('' when absent or longer than any key the
 * proxy hands out). Only a lookup key: a forged value can name an endpoint of the same route at
 * most, which the balancer could have picked anyway.
 */
export function affinityKey(cookie: string): string {
  let i = cookie.indexOf(AFFINITY_NEEDLE);
  // a name that merely ends in it (`xberth-affinity=`) is another cookie
  while (i > 0 && cookie.charCodeAt(i - 1) !== 32 && cookie.charCodeAt(i - 1) !== 59 /* ; */) i = cookie.indexOf(AFFINITY_NEEDLE, i + 1);
  if (i === -1) return '';
  const start = i + AFFINITY_NEEDLE.length;
  let end = cookie.indexOf(';', start);
  if (end === -1) end = cookie.length;
  while (end > start && cookie.charCodeAt(end - 1) === 32) end--;
  return end - start > 2048 ? '' : cookie.slice(start, end);
}

/**
 * The first phase of every request, HTTP and WebSocket alike: a route table is loaded (503
 * not_ready), there is a Host (400 missing_host) of the form host[:port] (400 bad_host), the
 * target can be forwarded byte for byte (400 bad_request_target), and a route serves the host
 * (404 no_route). Answers the client itself and returns false when any fails; fills `admitted`
 * (one reused object, nothing allocated) otherwise.
 */
export function admit(res: HttpResponse, req: HttpRequest, method: string): boolean {
  const query = req.getQuery();
  readTarget(req);
  const requestId = target.requestId;
  const head = method === 'HEAD';
  const table = runtime.table;
  if (table === null) {
    globalStats.notReady++;
    sendError(res, 503, 'not_ready', requestId, 'the proxy has not received a route table yet', head);
    logRejected(requestId, method, target.rawHost, target.path, 503, 'not_ready');
    return false;
  }
  // `/apps/{host}/` is read from the path only on the proxy's own address, never on a Host that
  // names an app or may name one later (target.ts)
  const header = target.hostHeader;
  if (header !== '' && !pathFormHost(header, table)) keepHostHeader();
  const rawHost = target.rawHost;
  if (rawHost === '') {
    globalStats.badRequest++;
    sendError(res, 400, 'missing_host', requestId, 'the request has no Host header (or /apps/{host}/ path)', head);
    logRejected(requestId, method, rawHost, target.path, 400, 'missing_host');
    return false;
  }
  const decodedPath = query ? target.path + '?' + query : target.path;
  const path = forwardableTarget(decodedPath);
  if (path === null || !validHost(rawHost)) {
    refuse(res, path === null ? 'bad_request_target' : 'bad_host', requestId, method, rawHost, target.path);
    return false;
  }
  const host = normalizeHost(rawHost);
  const found = table.entry(host);
  if (found === undefined) {
    globalStats.noRoute++;
    sendError(res, 404, 'no_route', requestId, noRouteMessage(host, target.path, table), head);
    logRejected(requestId, method, host, target.path, 404, 'no_route');
    return false;
  }
  // session affinity: the cookie is read only for a route (or split) that has it
  let route: Route;
  let key = '';
  if (found instanceof Split) {
    if (found.byKey !== null) key = affinityKey(req.getHeader('cookie'));
    route = found.stick(key);
  } else {
    route = found;
    if (route.byKey !== null) key = affinityKey(req.getHeader('cookie'));
  }
  // a private app: the caller's token, before anything about it reaches an endpoint
  admitted.authHeader = '';
  admitted.authDigest = '';
  if (route.auth !== null) {
    const used = authorize(req, route.auth);
    if (used === '') {
      route.stats.refused++;
      sendError(res, 401, 'unauthorized', requestId, 'this app is private: send X-Berth-Authorization: Bearer <invoker token> (or Authorization)', head);
      logRejected(requestId, method, host, target.path, 401, 'unauthorized');
      return false;
    }
    admitted.authHeader = used;
  }
  admitted.route = route;
  admitted.affinity = key;
  admitted.host = host;
  admitted.path = path;
  admitted.decodedPath = decodedPath;
  admitted.rawHost = rawHost;
  admitted.requestId = requestId;
  admitted.logPath = target.path;
  admitted.viaPath = target.viaPath;
  return true;
}
