/**
 * Header classification for forwarding (RFC 9110 §7.6.1): hop-by-hop headers never cross the
 * proxy. Works on upstream raw header Buffers without converting every name to a string.
 */
export const H_PASS = 0;
export const H_DROP = 1;
export const H_CONTENT_LENGTH = 2;
export const H_CONNECTION = 3;
export const H_SET_COOKIE = 4;
export const H_CACHE_CONTROL = 5;
export const H_TRANSFER_ENCODING = 6;

const byName = new Map<string, number>([
  ['connection', H_CONNECTION],
  ['keep-alive', H_DROP],
  ['te', H_DROP],
  ['trailer', H_DROP],
  ['transfer-encoding', H_TRANSFER_ENCODING],
  ['upgrade', H_DROP],
  ['content-length', H_CONTENT_LENGTH],
  ['set-cookie', H_SET_COOKIE],
  ['cache-control', H_CACHE_CONTROL],
  // uWS always writes its own Date; a second one would be invalid.
  ['date', H_DROP],
  // the proxy sets its own request id on the response
  ['x-request-id', H_DROP],
]);

/** Lengths of names in the table, to skip the string conversion for most headers. */
const interesting = new Uint8Array(32);
for (const k of byName.keys()) interesting[k.length] = 1;

/** Classify an upstream response header name given as a Buffer. */
export function classifyName(name: Buffer): number {
  const len = name.length;
  // proxy-* (Proxy-Connection, Proxy-Authenticate, ...)
  if (len > 6 && (name[0] | 0x20) === 0x70 && (name[5] === 0x2d) && name.toString('latin1', 0, 6).toLowerCase() === 'proxy-') return H_DROP;
  if (len >= 32 || interesting[len] === 0) return H_PASS;
  const c = byName.get(name.toString('latin1', 0, len).toLowerCase());
  return c === undefined ? H_PASS : c;
}

/** Classify a request header name from uWS (already lower-case). */
export function classifyRequestName(name: string): number {
  if (name.length > 6 && name.charCodeAt(5) === 45 && name.startsWith('proxy-')) return H_DROP;
  if (name.length >= 32 || interesting[name.length] === 0) return H_PASS;
  const c = byName.get(name);
  return c === undefined ? H_PASS : c;
}

/** Parse "close, X-Foo" → ['x-foo'] (names other than close/keep-alive that must be dropped). */
export function connectionTokens(value: string): string[] {
  const out: string[] = [];
  for (const part of value.split(',')) {
    const t = part.trim().toLowerCase();
    if (t && t !== 'close' && t !== 'keep-alive') out.push(t);
  }
  return out;
}

/** Parse a non-negative decimal from a Buffer; -1 when invalid. */
export function parseLength(buf: Buffer): number {
  let n = 0;
  const len = buf.length;
  if (len === 0 || len > 15) return -1;
  for (let i = 0; i < len; i++) {
    const d = buf[i] - 48;
    if (d < 0 || d > 9) return -1;
    n = n * 10 + d;
  }
  return n;
}

/** Does a Cache-Control value forbid keeping the response for fallback? */
export function forbidsStore(value: string): boolean {
  const v = value.toLowerCase();
  return v.includes('no-store') || v.includes('private');
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
/** "200 OK" etc., cached per code. */
export function statusLine(code: number, text?: string): string {
  let s = statusLines[code];
  if (s === undefined) {
    s = `${code} ${STATUS_TEXT[code] ?? text ?? 'Unknown'}`;
    if (code >= 100 && code < 600) statusLines[code] = s;
  }
  return s;
}
