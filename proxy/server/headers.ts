/**
 * Header classification for forwarding (RFC 9110 §7.6.1): hop-by-hop headers never cross the
 * proxy. Classifies upstream header names by length and byte comparison, without a lower-cased
 * copy of every name.
 */
export const H_PASS = 0;
export const H_DROP = 1;
export const H_CONTENT_LENGTH = 2;
export const H_CONNECTION = 3;
export const H_SET_COOKIE = 4;
export const H_CACHE_CONTROL = 5;
export const H_TRANSFER_ENCODING = 6;
export const H_VARY = 7;
/** `Service-Worker-Allowed`: dropped from answers reached by `/apps/{host}/` (see ClientResponse.viaPath) */
export const H_SW_ALLOWED = 8;

/**
 * Hop-by-hop headers (RFC 9110 §7.6.1): never forwarded in either direction, nor any `proxy-*`.
 * The one list; request-headers.ts, the response classifier below and websocket.ts all use it.
 */
export const HOP_BY_HOP = ['connection', 'keep-alive', 'te', 'trailer', 'transfer-encoding', 'upgrade'] as const;

/**
 * Headers that say where a request came from, as the proxy saw it: its own to set, never a
 * client's to pass on (frameworks believe them for the client's address, host, port and path
 * prefix: a client could claim any). X-Forwarded-For is appended to instead (request-headers.ts).
 * The one list of request-headers.ts and websocket.ts.
 */
export const PROXY_SET = [
  'x-forwarded-host', 'x-forwarded-proto', 'x-forwarded-port', 'x-forwarded-prefix', 'x-forwarded-server',
  'x-forwarded-ssl', 'x-forwarded-scheme', 'forwarded',
  'x-real-ip', 'x-client-ip', 'client-ip', 'true-client-ip', 'cf-connecting-ip', 'x-cluster-client-ip',
] as const;

/** Is this (lower-case) name `proxy-*`? */
export function isProxyHeader(name: string): boolean {
  return name.length > 6 && name.charCodeAt(5) === 45 && name.startsWith('proxy-');
}

const NAMES: Array<[string, number]> = [
  ...HOP_BY_HOP.map((n): [string, number] => [n, n === 'connection' ? H_CONNECTION : n === 'transfer-encoding' ? H_TRANSFER_ENCODING : H_DROP]),
  ['content-length', H_CONTENT_LENGTH],
  ['set-cookie', H_SET_COOKIE],
  ['cache-control', H_CACHE_CONTROL],
  ['vary', H_VARY],
  // uWS always writes its own Date; a second one would be invalid.
  ['date', H_DROP],
  // the proxy sets its own request id on the response
  ['x-request-id', H_DROP],
  ['service-worker-allowed', H_SW_ALLOWED],
];

/** Candidate names by length, as byte arrays, to classify names without allocating strings. */
const byLength: Array<Array<[Uint8Array, number]>> = [];
for (const [n, c] of NAMES) {
  (byLength[n.length] ??= []).push([Buffer.from(n, 'latin1'), c]);
}

const PROXY_ = Buffer.from('proxy-', 'latin1');

/** Classify a header name given as a string (fallback-cache entries, WebSockets). */
export function classifyHeader(name: string): number {
  const len = name.length;
  if (len > 6 && name.charCodeAt(5) === 0x2d && eqLowerString(name, PROXY_)) return H_DROP; // proxy-*
  const cands = byLength[len];
  if (cands === undefined) return H_PASS;
  for (let i = 0; i < cands.length; i++) if (eqLowerString(name, cands[i][0])) return cands[i][1];
  return H_PASS;
}

/** Classify a response header name given as bytes b[s, e) (the upstream parser's view). */
export function classifyBytes(b: Uint8Array, s: number, e: number): number {
  const len = e - s;
  if (len > 6 && b[s + 5] === 0x2d && eqLowerBytes(b, s, PROXY_)) return H_DROP; // proxy-*
  const cands = byLength[len];
  if (cands === undefined) return H_PASS;
  for (let i = 0; i < cands.length; i++) if (eqLowerBytes(b, s, cands[i][0])) return cands[i][1];
  return H_PASS;
}

function eqLowerBytes(b: Uint8Array, at: number, name: Uint8Array): boolean {
  for (let i = 0; i < name.length; i++) {
    let c = b[at + i];
    if (c >= 65 && c <= 90) c |= 0x20;
    if (c !== name[i]) return false;
  }
  return true;
}

function eqLowerString(s: string, name: Uint8Array): boolean {
  for (let i = 0; i < name.length; i++) {
    let c = s.charCodeAt(i);
    if (c >= 65 && c <= 90) c |= 0x20;
    if (c !== name[i]) return false;
  }
  return true;
}

/** Parse a non-negative decimal Content-Length; -1 when invalid. */
export function parseLengthString(v: string): number {
  const len = v.length;
  if (len === 0 || len > 15) return -1;
  let n = 0;
  for (let i = 0; i < len; i++) {
    const d = v.charCodeAt(i) - 48;
    if (d < 0 || d > 9) return -1;
    n = n * 10 + d;
  }
  return n;
}

const NO_TOKENS: string[] = [];

/** Parse "close, X-Foo" → ['x-foo'] (names other than close/keep-alive that must be dropped). */
export function connectionTokens(value: string): string[] {
  // the usual values, without splitting
  const n = value.length;
  if ((n === 10 || n === 5) && (value === 'keep-alive' || value === 'close' || value === 'Keep-Alive' || value === 'Close')) return NO_TOKENS;
  const out: string[] = [];
  for (const part of value.split(',')) {
    const t = part.trim().toLowerCase();
    if (t && t !== 'close' && t !== 'keep-alive') out.push(t);
  }
  return out;
}

/** Does a Cache-Control value forbid keeping the response for fallback? (private, no-store, no-cache) */
export function forbidsStore(value: string): boolean {
  const v = value.toLowerCase();
  return v.includes('no-store') || v.includes('private') || v.includes('no-cache');
}

/**
 * May a response with this Vary be kept for fallback? 0 = no (it varies on something the key
 * does not hold: Cookie, Authorization, `*`…), 1 = yes (empty), 2 = yes, keyed by Accept-Encoding.
 */
export function varyCacheable(value: string): 0 | 1 | 2 {
  let out: 0 | 1 | 2 = 1;
  for (const part of value.split(',')) {
    const t = part.trim().toLowerCase();
    if (t === '') continue;
    if (t !== 'accept-encoding') return 0;
    out = 2;
  }
  return out;
}

export const STATUS_TEXT: Record<number, string> = {
  100: 'Continue', 101: 'Switching Protocols', 200: 'OK', 201: 'Created', 202: 'Accepted', 203: 'Non-Authoritative Information',
  204: 'No Content', 205: 'Reset Content', 206: 'Partial Content', 300: 'Multiple Choices', 301: 'Moved Permanently',
  302: 'Found', 303: 'See Other', 304: 'Not Modified', 307: 'Temporary Redirect', 308: 'Permanent Redirect',
  400: 'Bad Request', 401: 'Unauthorized', 403: 'Forbidden', 404: 'Not Found', 405: 'Method Not Allowed',
  406: 'Not Acceptable', 408: 'Request Timeout', 409: 'Conflict', 410: 'Gone', 411: 'Length Required',
  412: 'Precondition Failed', 413: 'Content Too Large', 414: 'URI Too Long', 415: 'Unsupported Media Type',
  416: 'Range Not Satisfiable', 417: 'Expectation Failed', 418: "I'm a teapot", 421: 'Misdirected Request',
  422: 'Unprocessable Content', 425: 'Too Early', 426: 'Upgrade Required', 428: 'Precondition Required',
  429: 'Too Many Requests', 431: 'Request Header Fields Too Large', 451: 'Unavailable For Legal Reasons',
  500: 'Internal Server Error', 501: 'Not Implemented', 502: 'Bad Gateway', 503: 'Service Unavailable',
  504: 'Gateway Timeout', 505: 'HTTP Version Not Supported',
};

const statusLines: string[] = [];
/**
 * "200 OK" etc.: the standard text, cached per code. A code without one takes `text` (the
 * upstream's reason phrase) — built per call, never cached: one tenant's reason phrase must not
 * turn up on another's responses.
 */
export function statusLine(code: number, text?: string): string {
  const known = STATUS_TEXT[code];
  if (known === undefined) return `${code} ${text ?? 'Unknown'}`;
  let s = statusLines[code];
  if (s === undefined) {
    s = `${code} ${known}`;
    statusLines[code] = s;
  }
  return s;
}
