/**
 * The request as it will be forwarded: headers read once from uWS, checked (admission rules for
 * framing and bytes, see admission.ts), hop-by-hop ones dropped, X-Forwarded-* and Via added,
 * and the head written as one Latin-1 string for the upstream connection.
 */
import { SESSION_COOKIE, withoutCookie } from '../../shared/session-cookie.js';
import type { HttpRequest } from 'uWebSockets.js';
import { forwardableValue, validContentLength, validTransferEncoding, type Refusal } from './admission.js';
import { HOP_BY_HOP, PROXY_SET, connectionTokens, isProxyHeader } from './headers.js';
import { newTraceparent, validTraceparent } from './request-id.js';
import { runtime } from './state.js';

/** What reading the client's headers learns; the Exchange extends it. */
export class ForwardedRequest {
  readonly headers: string[] = [];
  connection = '';
  chunkedIn = false;
  contentLengthIn = '';
  xff = '';
  via = '';
  hasAuth = false;
  /** the answer must not be kept for fallback (the request had Cookie, or a repeated Accept-Encoding) */
  noStore = false;
  aeSeen = false;
  acceptEncoding = '';
  hostHeaders = 0;
  /** W3C trace context forwarded upstream: the client's when valid, else one the proxy starts */
  traceparent = '';
  /** the header lines the proxy adds (Host, X-Forwarded-*, Via, x-request-id, traceparent), as one string */
  proxyLines = '';
  /** set by admission: the request is answered 400 instead of forwarded */
  refusal: Refusal | null = null;
  /**
   * Reached by `/apps/{host}/` (a Host naming no app: the proxy's own address), where apps share
   * an origin with each other and often with the API: the answer loses `Service-Worker-Allowed`
   * (a service worker it installs controls `/apps/{host}/` only, never the whole site), and the
   * control plane's sign-in cookie is kept out both ways (shared/session-cookie.ts).
   */
  viaPath = false;

  refuse(why: Refusal): void {
    if (this.refusal === null) this.refusal = why;
  }
}


// x-request-id, the forwarding headers (PROXY_SET) and Expect are the proxy's to set (or not): dropped.
const R_DROP = 1, R_CONNECTION = 2, R_TE = 3, R_CL = 4, R_HOST = 5, R_XFF = 6, R_VIA = 7, R_AUTH = 8, R_COOKIE = 10, R_AE = 11, R_TRACE = 12;
const requestHeaderClass = new Map<string, number>([
  ...HOP_BY_HOP.map((n): [string, number] => [n, R_DROP]),
  ['connection', R_CONNECTION], ['transfer-encoding', R_TE], ['content-length', R_CL], ['host', R_HOST],
  ...PROXY_SET.map((n): [string, number] => [n, R_DROP]),
  ['x-forwarded-for', R_XFF],
  ['via', R_VIA], ['authorization', R_AUTH], ['x-request-id', R_DROP], ['expect', R_DROP],
  ['cookie', R_COOKIE], ['accept-encoding', R_AE], ['traceparent', R_TRACE],
  // a private app's token is the platform's: never forwarded (admission.ts)
  ['x-berth-authorization', R_DROP],
]);

const PROTO_HTTP = '\r\nx-forwarded-proto: http\r\nvia: ';
const PROTO_HTTPS = '\r\nx-forwarded-proto: https\r\nvia: ';

let collecting: ForwardedRequest | null = null;
let dropAuthorization = false;
function collectHeader(name: string, raw: string): void {
  const ex = collecting!;
  const c = requestHeaderClass.get(name);
  if (c === undefined) {
    if (isProxyHeader(name)) return;
    const value = forwardableValue(raw);
    if (value === null) ex.refuse('bad_header_value');
    else ex.headers.push(name, value);
    return;
  }
  if (c === R_DROP) return;
  const value = forwardableValue(raw);
  if (value === null) {
    ex.refuse('bad_header_value');
    return;
  }
  switch (c) {
    case R_CONNECTION: ex.connection = ex.connection === '' ? value : ex.connection + ',' + value; return;
    case R_TE:
      if (ex.chunkedIn || !validTransferEncoding(value)) ex.refuse('bad_transfer_encoding');
      ex.chunkedIn = true;
      return;
    case R_CL:
      // framing is the proxy's to write (requestHead): never in the list Connection tokens edit
      // (`Connection: content-length` would otherwise strip it and leave the body to be read as
      // the next request on the upstream connection)
      if (ex.contentLengthIn !== '' || !validContentLength(value)) ex.refuse('bad_content_length');
      ex.contentLengthIn = value;
      return;
    case R_HOST: if (++ex.hostHeaders > 1) ex.refuse('duplicate_host'); return; // re-added below
    case R_XFF: ex.xff = value; return;
    case R_VIA: ex.via = value; return;
    case R_AUTH:
      // the token a private route was called with stays here
      if (dropAuthorization) return;
      ex.hasAuth = true;
      ex.headers.push(name, value);
      return;
    case R_COOKIE: {
      ex.noStore = true;
      // on /apps/{host}/ the control plane's sign-in cookie (same host name) stays here
      const kept = ex.viaPath ? withoutCookie(value, SESSION_COOKIE) : value;
      if (kept !== '') ex.headers.push(name, kept);
      return;
    }
    case R_TRACE:
      // the first valid one is kept (re-added below); an invalid or repeated one is replaced
      if (ex.traceparent === '' && validTraceparent(value)) ex.traceparent = value;
      return;
    case R_AE:
      // the fallback key holds one Accept-Encoding; a repeated one is not worth keying
      if (ex.aeSeen) ex.noStore = true;
      ex.aeSeen = true;
      ex.acceptEncoding = value;
      ex.headers.push(name, value);
      return;
  }
}

/**
 * Read and check the client's headers into `into`, then finish the forwarded header list: names
 * listed in Connection dropped, Host (validated), X-Forwarded-For/-Host/-Proto, Via and the
 * request id added. Returns the refusal, if any.
 */
export function readRequestHeaders(req: HttpRequest, into: ForwardedRequest, rawHost: string, ip: string, requestId: string, tls: boolean, dropAuth = false): Refusal | null {
  collecting = into;
  dropAuthorization = dropAuth;
  req.forEach(collectHeader);
  collecting = null;
  if (into.chunkedIn && into.contentLengthIn !== '') into.refuse('bad_transfer_encoding');
  if (into.refusal !== null) return into.refusal;
  const h = into.headers;
  if (into.connection !== '') {
    const toks = connectionTokens(into.connection);
    for (let i = h.length - 2; i >= 0 && toks.length > 0; i -= 2) {
      if (toks.includes(h[i])) h.splice(i, 2);
    }
  }
  // one string with constant parts joined: a third of the concatenations of name/value pairs
  const xff = into.xff === '' ? ip : into.xff + ', ' + ip;
  const via = into.via === '' ? runtime.via : into.via + ', ' + runtime.via;
  const trace = into.traceparent === '' ? (into.traceparent = newTraceparent()) : into.traceparent;
  into.proxyLines = 'host: ' + rawHost + '\r\nx-forwarded-for: ' + xff + '\r\nx-forwarded-host: ' + rawHost +
    (tls ? PROTO_HTTPS : PROTO_HTTP) + via + '\r\nx-request-id: ' + requestId + '\r\ntraceparent: ' + trace + '\r\n';
  return null;
}

/**
 * The request head as one Latin-1 string, sized once: request line, forwarded headers (already
 * validated and rewritten), and the framing the proxy itself chose: chunked when the client's body
 * was chunked, else the client's (validated) Content-Length when it sent one — written here, after
 * everything a client could edit, so nothing it sends can take it away.
 */
export function requestHead(method: string, path: string, h: string[], proxyLines: string, chunked: boolean, contentLength: string): string {
  let head = method + ' ' + path + ' HTTP/1.1\r\n';
  for (let i = 0; i < h.length; i += 2) head += h[i] + ': ' + h[i + 1] + '\r\n';
  return head + proxyLines + (chunked ? 'transfer-encoding: chunked\r\n\r\n' : contentLength !== '' ? 'content-length: ' + contentLength + '\r\n\r\n' : '\r\n');
}
