/**
 * WebSocket pass-through. uWS terminates the client's WebSocket; an undici WebSocket connects to
 * the chosen endpoint with the client's headers (plus X-Forwarded-*, Via, x-request-id) and the
 * client's subprotocols; messages are relayed both ways. The client's upgrade is answered only
 * once the upstream accepted, so a refused upstream is an honest 502/503, not an open-then-close.
 *
 * Not on the HTTP hot path: uWS routes only `Upgrade: websocket` requests here.
 */
import { SESSION_COOKIE, withoutCookie } from '../../shared/session-cookie.js';
import type { Duplex } from 'node:stream';
import type { HttpRequest, HttpResponse, WebSocket, WebSocketBehavior, us_socket_context_t } from 'uWebSockets.js';
import { Agent, WebSocket as UpstreamSocket, type Dispatcher, type MessageEvent, type CloseEvent } from 'undici';
import type { EndpointMeter } from '../metrics/meter.js';
import { globalStats } from '../metrics/route-stats.js';
import { newTraceparent, validTraceparent } from './request-id.js';
import type { Route } from '../routing/route.js';
import type { Endpoint } from '../upstream/endpoint.js';
import { FAULT_ENDPOINT, judgeBeforeHeaders, type UpstreamError } from '../resilience/failure-policy.js';
import { stickyTarget } from '../balancing/target.js';
import { admit, admitted, forwardableValue, type Refusal } from './admission.js';
import { internalError, refuse, sendError } from './respond.js';
import { runtime } from './state.js';
import { peerAddress } from './peer.js';
import { HOP_BY_HOP, PROXY_SET, isProxyHeader } from './headers.js';

/** uWS copies the user-data object's properties on upgrade: keep the shared state one level down. */
interface Slot {
  link: Link;
}

interface Link {
  upstream: UpstreamSocket;
  route: Route;
  endpoint: Endpoint;
  client: WebSocket<Slot> | null;
  /** upstream messages that arrived before the client socket opened */
  early: Array<[ArrayBuffer | string, boolean]> | null;
  clientClosed: boolean;
  released: boolean;
  /** metering: the upgrade is counted once; message bytes each way add up on it while open */
  meter: EndpointMeter;
  /** the upstream connection's socket (undici's WebSocket has no way to drop it) */
  socket: Duplex | null;
}

/**
 * Client messages the upstream has not taken yet (undici's `bufferedAmount`, unbounded by
 * itself): past this the client is disconnected, as uWS does when the client falls 4 MiB behind.
 * uWS cannot pause a WebSocket's reads; without a bound, a client writing to an app that reads
 * slowly (or not at all) grew the proxy's memory by its upload rate (1.8 GB in 8 s).
 */
const UPSTREAM_BACKLOG_MAX = 4 * 1024 * 1024;
/**
 * After the client's side closed, the upstream gets this long to finish the close handshake;
 * then its socket is destroyed, with whatever is still queued for it (an app that never reads
 * would otherwise keep every closed link's backlog).
 */
const UPSTREAM_CLOSE_MS = 5000;
function destroySocket(socket: Duplex): void { socket.destroy(); }

/** Headers the WebSocket client sets itself, hop-by-hop ones, and those the proxy sets. */
const SKIP = new Set<string>([
  ...HOP_BY_HOP, 'host', 'content-length', 'expect',
  'sec-websocket-key', 'sec-websocket-version', 'sec-websocket-extensions', 'sec-websocket-protocol',
  ...PROXY_SET, 'x-request-id',
  // a private app's token is the platform's (admission.ts): never forwarded
  'x-berth-authorization',
]);

/** Close codes an endpoint may send (1005/1006/1015 are reserved for reporting). */
function sendableCode(code: number): number {
  return code === 1000 || (code >= 3000 && code <= 4999) ? code : 1000;
}

/**
 * undici's WebSocket (fetch semantics) will not let a caller set Host; the app must see the
 * hostname it is served under, as it does for plain HTTP. The header travels under a private
 * name and this dispatcher puts it back.
 */
const HOST_CARRIER = 'x-berth-upstream-host';
/**
 * The handshake's HTTP status as the upstream answered it, so that an upstream that answers the
 * upgrade with an ordinary response (404, 426…) is told apart from one that cannot be reached:
 * only the latter is the endpoint's failure. Keyed by a private header, removed before sending.
 */
const HANDSHAKE_CARRIER = 'x-berth-handshake';
const handshakes = new Map<string, Handshake>();
let handshakeSeq = 0;
interface Handshake {
  /** HTTP status the upstream answered the upgrade with (0: none) */
  status: number;
  /** why the handshake failed before any response, as undici said */
  error: UpstreamError | null;
  /** the upgraded connection */
  socket: Duplex | null;
}

type Handler = Dispatcher.DispatchHandler;

/**
 * The largest WebSocket message relayed either way: what one side may have waiting for the other
 * (UPSTREAM_BACKLOG_MAX, uWS's maxBackpressure), so one message can never pin more than that.
 */
const MAX_MESSAGE_BYTES = 4 * 1024 * 1024;
/** Delegates to undici's handler, noting the status of a response that is not an upgrade. */
class StatusSpy implements Handler {
  constructor(private readonly inner: Handler, private readonly hs: Handshake) {}
  onRequestStart(c: Dispatcher.DispatchController, ctx: unknown): void { this.inner.onRequestStart?.(c, ctx); }
  onRequestUpgrade(c: Dispatcher.DispatchController, status: number, headers: never, socket: never): void {
    this.hs.status = status;
    this.hs.socket = socket as Duplex;
    this.inner.onRequestUpgrade?.(c, status, headers, socket);
  }
  onResponseStart(c: Dispatcher.DispatchController, status: number, headers: never, text: string): void {
    this.hs.status = status;
    this.inner.onResponseStart?.(c, status, headers, text);
  }
  onResponseData(c: Dispatcher.DispatchController, chunk: Buffer): void { this.inner.onResponseData?.(c, chunk); }
  onResponseEnd(c: Dispatcher.DispatchController, trailers: never): void { this.inner.onResponseEnd?.(c, trailers); }
  onResponseError(c: Dispatcher.DispatchController, err: Error): void {
    if (this.hs.error === null) this.hs.error = err;
    this.inner.onResponseError?.(c, err);
  }
}

// The upstream side reads messages no larger than the client side takes (maxPayloadLength), and
// offers no permessage-deflate (undici's client offers it by default): an app that accepted it
// could send a small frame that inflates to the whole limit on every link at once.
const upstreamDispatcher: Dispatcher = new Agent({ webSocket: { maxPayloadSize: MAX_MESSAGE_BYTES } }).compose((dispatch) => (opts, handler) => {
  const h = opts.headers as Record<string, string> | null | undefined;
  if (h && typeof h === 'object' && !Array.isArray(h) && HOST_CARRIER in h) {
    const { [HOST_CARRIER]: host, [HANDSHAKE_CARRIER]: id, 'sec-websocket-extensions': _offer, ...rest } = h;
    const hs = id === undefined ? undefined : handshakes.get(id);
    return dispatch({ ...opts, headers: { ...rest, host } }, hs === undefined ? handler : new StatusSpy(handler, hs));
  }
  return dispatch(opts, handler);
});

/**
 * Would the WHATWG URL parser (undici's WebSocket client) change this target? A `#` (it would cut
 * the fragment off, or throw), a backslash (read as `/`), a dot segment, also as `%2e` (resolved
 * away: `/a/../admin` would reach the app as `/admin`). Plain HTTP forwards the bytes as sent; a
 * WebSocket upgrade whose target would not arrive as sent is refused instead.
 */
function reshapedByUrlParser(target: string): boolean {
  if (target.includes('#')) return true;
  const q = target.indexOf('?');
  const path = q < 0 ? target : target.slice(0, q);
  return path.includes('\\') || /\/(?:\.|%2e){1,2}(?:\/|$)/i.test(path);
}

/** Subprotocol list as sent, or null when it would make the upstream client throw (duplicates, bad tokens). */
function parseProtocols(v: string): string[] | null {
  if (v === '') return [];
  const out: string[] = [];
  for (const part of v.split(',')) {
    const p = part.trim();
    if (p === '') continue;
    if (!/^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$/.test(p) || out.includes(p)) return null;
    out.push(p);
  }
  return out;
}

/** An upgrade the proxy answered with its own 5xx: counted on the route and metered. */
function proxyFailed(route: Route, meter: EndpointMeter, status: number): void {
  route.stats.byClass[5]++;
  route.stats.errors++;
  meter.count(status, true, 0, 0);
}

function release(link: Link): void {
  if (link.released) return;
  link.released = true;
  link.meter.open--;
  link.endpoint.inflight--;
  link.route.stats.inflight--;
  globalStats.inflight--;
  // as an HTTP exchange that ends: a request waiting for this route's capped endpoints may take the slot
  const q = link.route.queue;
  if (q !== null && q.length > 0) q.release();
}

/** `proto`: the scheme the client used (`https` on the TLS listener), for X-Forwarded-Proto. */
export function websocketBehavior(proto: 'http' | 'https' = 'http'): WebSocketBehavior<Slot> {
  return {
    maxPayloadLength: MAX_MESSAGE_BYTES,
    maxBackpressure: 4 * 1024 * 1024,
    // a reader that falls this far behind is disconnected rather than silently losing messages
    closeOnBackpressureLimit: 1,
    idleTimeout: 120,
    sendPingsAutomatically: true,

    // every callback guarded: a throw inside a uWS WebSocket callback ends the process; a bug must
    // cost one socket
    upgrade(res: HttpResponse, req: HttpRequest, context: us_socket_context_t) {
      try {
        upgrade(res, req, context, proto);
      } catch (e) {
        internalError(res, e as Error);
      }
    },
    open(ws: WebSocket<Slot>) {
      try { open(ws); } catch (e) { onBug(ws, e as Error); }
    },
    message(ws: WebSocket<Slot>, data: ArrayBuffer, isBinary: boolean) {
      try { message(ws, data, isBinary); } catch (e) { onBug(ws, e as Error); }
    },
    close(ws: WebSocket<Slot>, code: number, reason: ArrayBuffer) {
      try { close(ws, code, reason); } catch (e) { internalError(null, e as Error); }
    },
  };
}

/** A handler undici or uWS calls: a throw in it is said (once in a while), never the end of the process. */
function guarded<A extends unknown[]>(fn: (...a: A) => void, cleanup?: () => void): (...a: A) => void {
  return (...a: A) => {
    try {
      fn(...a);
    } catch (e) {
      internalError(null, e as Error);
      try { cleanup?.(); } catch { /* the socket is gone already */ }
    }
  };
}

/** A bug in a callback: said once in a while, and the socket closed (1011: internal error). */
function onBug(ws: WebSocket<Slot>, e: Error): void {
  internalError(null, e);
  try { ws.end(1011, 'proxy error'); } catch { /* already closed */ }
}

function upgrade(res: HttpResponse, req: HttpRequest, context: us_socket_context_t, proto: 'http' | 'https'): void {
  globalStats.requests++;
  const key = req.getHeader('sec-websocket-key');
  const protocols = req.getHeader('sec-websocket-protocol');
  if (!admit(res, req, 'GET')) return;
  const route = admitted.route!;
  const { host, rawHost, requestId, decodedPath, logPath: path } = admitted;
  // Admission, before an endpoint is picked: everything the upstream client could refuse.
  const subprotocols = parseProtocols(protocols);
  const headers: Record<string, string> = {};
  let xff = '';
  let via = '';
  let hosts = 0;
  let refusal: Refusal | null = subprotocols === null ? 'bad_header_value' : null;
  // the Authorization that carried a private app's token is not forwarded either
  const dropAuth = admitted.authHeader === 'authorization';
  req.forEach((k, raw) => {
    if (k === 'host') hosts++;
    if (SKIP.has(k) || isProxyHeader(k) || (dropAuth && k === 'authorization')) return;
    const v = forwardableValue(raw);
    if (v === null) refusal = 'bad_header_value';
    else if (k === 'x-forwarded-for') xff = v;
    else if (k === 'via') via = v;
    else if (k === 'cookie' && admitted.viaPath) {
      // on /apps/{host}/ the control plane's sign-in cookie (same host name) stays here
      const kept = withoutCookie(v, SESSION_COOKIE);
      if (kept !== '') headers[k] = kept;
    } else headers[k] = v;
  });
  if (hosts > 1) refusal = 'duplicate_host';
  // the upstream client's URL parser would send another target than the client's (or throw)
  if (reshapedByUrlParser(decodedPath)) refusal = 'bad_request_target';
  if (refusal !== null) {
    route.stats.refused++;
    refuse(res, refusal, requestId, 'GET', host, path);
    return;
  }
  route.stats.requests++;
  const now = Date.now();
  // session affinity: the instance the client's cookie names (set by an HTTP answer, e.g. the
  // page that opens the socket) while it takes traffic; else the balancer's
  const picked = stickyTarget(route.byKey, admitted.affinity, now, null) ?? route.balancer.pick(now, null);
  if (picked === null) {
    proxyFailed(route, route.stats.unrouted, 503);
    sendError(res, 503, 'no_available_endpoint', requestId, `no endpoint of route "${route.id}" is available`);
    return;
  }
  const ep = picked.endpoint;
  const ip = peerAddress(res);
  headers['x-forwarded-for'] = xff === '' ? ip : `${xff}, ${ip}`;
  headers['x-forwarded-host'] = rawHost;
  headers['x-forwarded-proto'] = proto;
  headers.via = via === '' ? runtime.via : `${via}, ${runtime.via}`;
  headers['x-request-id'] = requestId;
  // W3C trace context: the client's when valid, else one the proxy starts
  const tp = headers.traceparent;
  if (typeof tp !== 'string' || !validTraceparent(tp)) headers.traceparent = newTraceparent();
  headers[HOST_CARRIER] = rawHost;
  const handshakeId = String(++handshakeSeq);
  const handshake: Handshake = { status: 0, error: null, socket: null };
  headers[HANDSHAKE_CARRIER] = handshakeId;

  // the URL parser percent-encodes non-ASCII itself: give it the decoded string, not the bytes
  const url = `ws://${ep.address}${decodedPath}`;
  let upstream: UpstreamSocket;
  // From here the endpoint may hold the breaker's single HALF_OPEN probe: every path releases it.
  ep.breaker.acquire(now);
  handshakes.set(handshakeId, handshake);
  try {
    upstream = new UpstreamSocket(url, {
      protocols: subprotocols!.length > 0 ? subprotocols! : undefined,
      headers,
      dispatcher: upstreamDispatcher,
    });
  } catch (e) {
    handshakes.delete(handshakeId);
    ep.breaker.onNeutral();
    proxyFailed(route, route.stats.meterFor(picked), 502);
    sendError(res, 502, 'upstream_error', requestId, `cannot open a WebSocket to the upstream: ${(e as Error).message}`);
    return;
  }
  upstream.binaryType = 'arraybuffer';
  ep.inflight++;
  ep.requests++;
  route.stats.inflight++;
  globalStats.inflight++;
  const meter = route.stats.meterFor(picked);
  meter.open++;
  const link: Link = { upstream, route, endpoint: ep, client: null, early: [], clientClosed: false, released: false, meter, socket: null };
  let aborted = false;
  let opened = false;
  // a handler that throws drops the link: the upstream closed, its slot released
  const drop = () => { aborted = true; upstream.close(); release(link); };
  res.onAborted(guarded(drop, drop));
  upstream.onopen = guarded(() => {
    opened = true;
    link.socket = handshake.socket;
    handshakes.delete(handshakeId);
    ep.breaker.onSuccess();
    if (aborted) {
      // the client left during the handshake: close, and drop the socket should the app never answer the close
      upstream.close();
      const socket = handshake.socket;
      if (socket !== null && !socket.destroyed) setTimeout(destroySocket, UPSTREAM_CLOSE_MS, socket);
      return;
    }
    route.stats.byClass[1]++;
    meter.count(101, false, 0, 0);
    res.cork(() => {
      // permessage-deflate is not negotiated on either side: messages are relayed as they are
      res.upgrade<Slot>({ link }, key, upstream.protocol, '', context);
    });
  }, drop);
  upstream.onmessage = guarded((ev: MessageEvent) => {
    const data = ev.data as ArrayBuffer | string;
    const binary = typeof data !== 'string';
    link.meter.bytesOut += binary ? data.byteLength : Buffer.byteLength(data);
    if (link.client === null) {
      link.early?.push([data, binary]);
      return;
    }
    if (!link.clientClosed) link.client.send(data, binary);
  }, drop);
  upstream.onclose = guarded((ev: CloseEvent) => {
    handshakes.delete(handshakeId);
    if (!opened) {
      const answered = handshake.status;
      const err = handshake.error;
      // Only the endpoint's own failures count (could not connect, reset, timeout, malformed
      // answer). An upstream that said no (404, 426…), a request undici refused to send, or a
      // client that gave up are neutral.
      if (answered === 0 && !aborted && (err === null || judgeBeforeHeaders(err, 'GET').fault === FAULT_ENDPOINT)) {
        ep.failures++;
        ep.breaker.onFailure(Date.now());
      } else {
        ep.breaker.onNeutral();
      }
      release(link);
      if (!aborted) {
        aborted = true;
        proxyFailed(route, meter, 502);
        const why = answered !== 0 ? `upstream answered the WebSocket upgrade with HTTP ${answered}` : `upstream refused the WebSocket (${ev.code})`;
        res.cork(() => sendError(res, 502, 'upstream_error', requestId, why));
      }
      return;
    }
    if (link.client !== null && !link.clientClosed) {
      link.clientClosed = true;
      link.client.end(sendableCode(ev.code), ev.reason);
    }
    release(link);
  }, drop);
  upstream.onerror = () => { /* followed by close */ };
}

function open(ws: WebSocket<Slot>): void {
  const link = ws.getUserData().link;
  link.client = ws;
  const early = link.early;
  link.early = null;
  if (early) for (const [d, b] of early) ws.send(d, b);
}

function message(ws: WebSocket<Slot>, message: ArrayBuffer, isBinary: boolean): void {
  const link = ws.getUserData().link;
  link.meter.bytesIn += message.byteLength;
  if (link.upstream.readyState !== 1) return;
  // this message counts too: one 16 MiB message on an empty backlog would otherwise pass
  if (link.upstream.bufferedAmount + message.byteLength > UPSTREAM_BACKLOG_MAX) {
    // the upstream is not taking messages: disconnect rather than buffer without bound
    ws.end(1013, 'the upstream is not keeping up');
    link.socket?.destroy();
    return;
  }
  // the ArrayBuffer is neutered when this callback returns: copy once
  if (isBinary) link.upstream.send(new Uint8Array(message.slice(0)));
  else link.upstream.send(Buffer.from(message).toString('utf8'));
}

function close(ws: WebSocket<Slot>, code: number, message: ArrayBuffer): void {
  const link = ws.getUserData().link;
  link.clientClosed = true;
  const s = link.upstream.readyState;
  if (s === 0 || s === 1) link.upstream.close(sendableCode(code), Buffer.from(message).toString('utf8').slice(0, 120));
  const socket = link.socket;
  if (socket !== null && !socket.destroyed) setTimeout(destroySocket, UPSTREAM_CLOSE_MS, socket);
  release(link);
}
