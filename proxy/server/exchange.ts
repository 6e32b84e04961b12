/**
 * The hot path: one client request forwarded to one upstream (plus at most `retries` extra
 * connect attempts). The Exchange object is itself the upstream connection's handler
 * (upstream/connection.ts), so a request allocates the exchange, its header array, the request
 * head string and one abort closure — nothing per chunk but the one copy of each body chunk.
 *
 * uWS rules respected here: every write outside a uWS callback is corked (module-level
 * trampolines, no closures), the response is never touched after onAborted or after it ended,
 * and request body chunks are copied exactly once.
 */
import { performance } from 'node:perf_hooks';
import type { HttpResponse } from 'uWebSockets.js';
import { stickyTarget, type Target } from '../balancing/target.js';
import { latencyBucket, type EndpointMeter } from '../metrics/meter.js';
import { globalStats } from '../metrics/route-stats.js';
import type { CachedResponse } from '../resilience/fallback-cache.js';
import { MAX_ENTRY_BYTES } from '../resilience/fallback-cache.js';
import { FAULT_CLIENT, FAULT_ENDPOINT, faultAfterHeaders, judgeBeforeHeaders } from '../resilience/failure-policy.js';
import type { RouteQueue } from '../routing/queue.js';
import type { Route } from '../routing/route.js';
import { E_INTERNAL, type UpstreamConnection, type UpstreamError, type UpstreamHandler } from '../upstream/connection.js';
import { MAX_FIELDS, type ResponseHead } from '../upstream/response-parser.js';
import type { Endpoint } from '../upstream/endpoint.js';
import type { UpstreamPool } from '../upstream/pool.js';
import { clock } from '../upstream/timers.js';
import {
  H_CACHE_CONTROL, H_CONNECTION, H_PASS, H_SET_COOKIE, H_VARY, STATUS_TEXT,
  classifyBytes, connectionTokens, forbidsStore, statusLine, varyCacheable,
} from './headers.js';
import { AFFINITY_COOKIE } from './admission.js';
import { ForwardedRequest } from './request-headers.js';
import { internalError, sendError } from './respond.js';
import { runtime } from './state.js';

// ---- cork trampolines (no per-call closures) ---------------------------------------------

/** Largest write that always fits uWS's 16 KiB cork buffer together with chunk framing. */
const CORKED_WRITE_MAX = 16 * 1024 - 64;

let cur: Exchange;
let curChunk: Uint8Array;
function corkedHeadOnly(): void { cur.writeHead(); }
function corkedData(): void { cur.writeData(curChunk); }
function corkedComplete(): void { cur.writeComplete(); }

/** Request body bytes held while the upstream connection is not ready yet (beyond: pause the client). */
const BODY_QUEUE_MAX = 64 * 1024;
/**
 * Body bytes held across all requests of this thread (waiting for a connection, a slot under a
 * concurrency cap, or a waking app). Past it every further held request pauses its client at once:
 * 1,000 held requests × 64 KiB on each of many routes cannot grow memory without bound, and
 * nothing is lost (the bytes stay in the clients' sockets until their request moves).
 */
const HELD_BODIES_MAX = 32 * 1024 * 1024;
const held = { bytes: 0 };

/** Exchange.whyNoEndpoint() answers */
const NO_ROOM = 0, SATURATED = 1, NONE_ADMITTED = 2;

/**
 * The class (headers.ts) of each field of the head being handled. A head is handled and written
 * within the read that brought it, one connection at a time, so one array serves the thread.
 */
const fieldClass = new Uint8Array(MAX_FIELDS);
/**
 * Where writeHead() assembles a response head (uWS copies it at once). Large enough for the
 * biggest head the parser accepts (16 KiB, 128 fields) re-framed, plus status and request id.
 */
const headScratch = new Uint8Array(32 * 1024);

/**
 * The session-affinity header line (a cookie key is URI-encoded ASCII). 30 days, as Cloud Run's:
 * a key whose endpoint is gone only costs a rebalance and a new cookie.
 */
function affinityCookie(key: string, secure: boolean): string {
  return '\r\nset-cookie: ' + AFFINITY_COOKIE + '=' + key + (secure ? '; Path=/; Max-Age=2592000; HttpOnly; SameSite=Lax; Secure' : '; Path=/; Max-Age=2592000; HttpOnly; SameSite=Lax');
}

/** Copy a string of Latin-1 characters (status lines, request ids: ASCII) as bytes. */
function putLatin1(out: Uint8Array, pos: number, s: string): number {
  for (let i = 0; i < s.length; i++) out[pos++] = s.charCodeAt(i);
  return pos;
}

export class Exchange extends ForwardedRequest implements UpstreamHandler {
  // request
  /** the request has a body (Content-Length > 0 or chunked) */
  hasBody = false;
  /** body chunks that arrived before the connection was ready */
  bodyQueue: Buffer[] | null = null;
  bodyQueued = 0;
  bodyEnded = false;
  clientPaused = false;
  upstreamHead = '';
  headRequest = false;
  conn: UpstreamConnection | null = null;
  waitingOn: UpstreamPool | null = null;
  // progress
  aborted = false;
  resDone = false;
  finished = false;
  gotHeaders = false;
  headPending = false;
  upstreamDone = false;
  backpressured = false;
  writableHooked = false;
  attempts = 0;
  endpoint: Endpoint | null = null;
  failedEndpoint: Endpoint | null = null;
  t0 = 0;
  /** metering (metrics/meter.ts): the route/endpoint this request is counted on, body bytes each way */
  meter: EndpointMeter | null = null;
  bytesIn = 0;
  bytesOut = 0;
  // response
  status = 0;
  statusText = '';
  /** the upstream's head, in place: valid only within the read that brought it (see writeHead) */
  head: ResponseHead | null = null;
  /** name/value strings of the response's end-to-end headers, kept only for a fallback capture */
  keptHeaders: string[] | null = null;
  contentLength = -1;
  noBody = false;
  dropNames: string[] | null = null;
  pendingChunk: Buffer | null = null;
  pendingBase = 0;
  /** body bytes uWS has taken (its write offset, kept here to spare a call per chunk) */
  bodySent = 0;
  // fallback capture
  capture: Buffer[] | null = null;
  captureBytes = 0;
  /** the response said `Vary: Accept-Encoding`: the fallback key includes the request's value */
  varyEncoding = false;
  reason = '';
  // session affinity (routes with RouteSpec.affinity)
  /** the client's berth-affinity cookie ('' when none, or the route has no affinity) */
  affinity = '';
  /** the client came over TLS: the affinity cookie is Secure */
  secure = false;
  /** the key to hand the client in Set-Cookie (its cookie named another endpoint, or none) */
  setAffinity: string | null = null;
  /** the SHA-256 of the invoker token it was admitted with ('' for a public route) */
  authDigest = '';

  constructor(
    readonly res: HttpResponse,
    /** the request's route; a held request follows its id into newer tables */
    public route: Route,
    readonly method: string,
    readonly path: string,
    readonly host: string,
    readonly requestId: string,
  ) {
    super();
    this.headRequest = method === 'HEAD';
  }

  get headersTimeoutMs(): number { return this.route.headersTimeoutMs; }
  get idleTimeoutMs(): number { return this.route.idleTimeoutMs; }

  // ---- dispatch --------------------------------------------------------------------------

  attempt(): void {
    // the upstream client's coarse clock (≤ 50 ms stale): plenty for breaker timing
    const now = clock.now;
    const target = this.pick(now);
    if (target === null) {
      const q = this.route.queue;
      const why = q === null ? NO_ROOM : this.whyNoEndpoint(now);
      if (why === SATURATED) this.wait(q!, now);
      // scaled to zero (or every instance gone): hold the request and wake the app
      else if (why === NONE_ADMITTED && this.route.wake && runtime.activate !== null) {
        if (this.wait(q!, now)) runtime.activate(this.route.id);
      } else this.noEndpoint();
      return;
    }
    this.send(target, now);
  }

  /**
   * Why the balancer found nothing (it only runs when it did): SATURATED — an endpoint that would
   * take traffic is at its concurrency cap (wait for a slot); NONE_ADMITTED — no endpoint takes
   * traffic at all (a waking route waits for one); NO_ROOM otherwise.
   */
  private whyNoEndpoint(now: number): number {
    const t = this.route.targets;
    let admitted = false;
    for (let i = 0; i < t.length; i++) {
      const x = t[i];
      if (x.endpoint === this.failedEndpoint || !x.endpoint.breaker.admits(now)) continue;
      if (x.cap > 0 && x.endpoint.inflight >= x.cap) return SATURATED;
      admitted = true;
    }
    return admitted ? NO_ROOM : NONE_ADMITTED;
  }

  /** Hold the request in the route's queue; false when it is full (answered 503 then). */
  private wait(q: RouteQueue, now: number): boolean {
    if (!q.push(this, now)) {
      this.destroyBody();
      this.fail(503, 'overloaded', `route "${this.route.id}": no endpoint can take the request now and ${q.maxEntries} requests are already waiting`);
      return false;
    }
    // not on any endpoint while waiting (a retry may have brought it here)
    this.endpoint = null;
    if (this.meter !== null) {
      this.meter.open--;
      this.meter = null;
    }
    return true;
  }

  // ---- Waiting (routing/queue.ts) ----------------------------------------------------------

  waitingSince = 0;

  get gone(): boolean {
    return this.aborted || this.resDone;
  }

  resume(): boolean {
    const now = clock.now;
    const current = runtime.table?.route(this.route.id);
    if (current !== undefined) this.route = current;
    if (!this.stillAuthorized()) return true;
    const target = this.pick(now);
    if (target === null) return false;
    this.send(target, now);
    return true;
  }

  /**
   * The endpoint for this attempt: the one the affinity cookie names while it takes traffic (not
   * the one that just failed, breaker admitting, below its cap), else the balancer's.
   */
  private pick(now: number): Target | null {
    return stickyTarget(this.route.byKey, this.affinity, now, this.failedEndpoint) ?? this.route.balancer.pick(now, this.failedEndpoint);
  }

  rehome(): void {
    const r = runtime.table?.lookup(this.host, this.affinity);
    if (r === undefined) {
      this.destroyBody();
      this.fail(404, 'no_route', `no route for host "${this.host}" any more`);
      return;
    }
    this.route = r;
    if (!this.stillAuthorized()) return;
    this.attempt();
  }

  /**
   * A held request moves to the route of a newer table: an app made private, or a token revoked,
   * while it waited must not let it through. Answers 401 (and false) when its token does not fit.
   */
  private stillAuthorized(): boolean {
    const auth = this.route.auth;
    if (auth === null || auth.has(this.authDigest)) return true;
    this.destroyBody();
    this.fail(401, 'unauthorized', 'this app is private (it became so, or the token was revoked, while the request waited)');
    return false;
  }

  expireWait(): void {
    this.destroyBody();
    this.fail(504, 'queue_timeout', `route "${this.route.id}": no endpoint could take the request within ${this.route.queue!.timeoutMs} ms`);
  }

  /** A request finished on one of this route's endpoints: a waiting one may take the slot. */
  private freed(): void {
    const q = this.route.queue;
    if (q !== null && q.length > 0) q.release();
  }

  private send(t: Target, now: number): void {
    const ep = t.endpoint;
    this.setAffinity = this.route.byKey !== null && t.key !== this.affinity ? t.key : null;
    const m = this.route.stats.meterFor(t);
    if (m !== this.meter) {
      if (this.meter !== null) this.meter.open--;
      m.open++;
      this.meter = m;
    }
    ep.breaker.acquire(now);
    this.endpoint = ep;
    ep.inflight++;
    ep.requests++;
    this.attempts++;
    this.t0 = performance.now();
    try {
      this.dispatch(ep);
    } catch (e) {
      // the pool reports failures through onUpstreamError; a throw here is a bug, and must not keep a probe slot
      if (!this.upstreamDone) {
        this.upstreamDone = true;
        ep.inflight--;
        ep.breaker.onNeutral();
      }
      throw e;
    }
  }

  private dispatch(ep: Endpoint): void {
    const pool = ep.getPool();
    this.waitingOn = pool;
    pool.dispatch(this);
  }

  onUpstreamStart(conn: UpstreamConnection): void {
    this.waitingOn = null;
    this.conn = conn;
    if (this.aborted) {
      conn.abort();
      return;
    }
    if (!this.hasBody) return;
    const q = this.bodyQueue;
    if (q !== null) {
      this.bodyQueue = null;
      held.bytes -= this.bodyQueued;
      this.bodyQueued = 0;
      let ok = true;
      for (let i = 0; i < q.length; i++) ok = conn.writeBody(q[i], this.chunkedIn);
      if (ok && this.clientPaused && !this.bodyEnded) this.resumeClient();
    }
    if (this.bodyEnded) conn.endBody(this.chunkedIn);
  }

  /** A request body chunk from uWS (valid only during this call: copied once). */
  onChunk(ab: ArrayBuffer, isLast: boolean): void {
    // Body bytes keep arriving after the proxy answered (error, early upstream response):
    // nothing may touch the finished response, and nothing is left to forward them to.
    if (this.aborted || this.resDone || this.upstreamDone) return;
    const conn = this.conn;
    if (ab.byteLength > 0) {
      this.bytesIn += ab.byteLength;
      const copy = Buffer.allocUnsafe(ab.byteLength);
      copy.set(new Uint8Array(ab));
      if (conn !== null) {
        if (!conn.writeBody(copy, this.chunkedIn) && !isLast) this.pauseClient();
      } else {
        (this.bodyQueue ??= []).push(copy);
        this.bodyQueued += copy.length;
        held.bytes += copy.length;
        if ((this.bodyQueued > BODY_QUEUE_MAX || held.bytes > HELD_BODIES_MAX) && !isLast) this.pauseClient();
      }
    }
    if (isLast) {
      this.bodyEnded = true;
      if (conn !== null) conn.endBody(this.chunkedIn);
    }
  }

  private pauseClient(): void {
    if (this.clientPaused) return;
    this.clientPaused = true;
    this.res.pause();
  }

  private resumeClient(): void {
    if (!this.clientPaused) return;
    this.clientPaused = false;
    if (!this.aborted && !this.resDone) this.res.resume();
  }

  onUpstreamDrain(): void {
    this.resumeClient();
  }

  onUpstreamHead(head: ResponseHead): void {
    const status = head.status;
    const ep = this.endpoint!;
    if (status >= 500 && this.route.failOn5xx) ep.breaker.onFailure(Date.now());
    else ep.breaker.onSuccess();
    this.gotHeaders = true;
    this.status = status;
    if (STATUS_TEXT[status] === undefined) this.statusText = head.reason();
    if (this.aborted) return;
    this.head = head;
    this.contentLength = head.chunked ? -1 : head.contentLength;
    let cacheable = status === 200 && this.method === 'GET' && !this.hasAuth && !this.noStore && this.route.cache.config.enabled;
    const b = head.buf;
    const off = head.offsets;
    const n = head.count;
    for (let i = 0; i < n; i++) {
      const c = classifyBytes(b, off[5 * i], off[5 * i + 1]);
      fieldClass[i] = c;
      if (c === H_PASS) continue;
      if (c === H_SET_COOKIE) cacheable = false;
      else if (c === H_CACHE_CONTROL) { if (cacheable && forbidsStore(head.value(i))) cacheable = false; }
      else if (c === H_CONNECTION) {
        if (head.connectionTokens) {
          // every Connection field counts: the names of all of them are dropped
          const toks = connectionTokens(head.value(i));
          if (toks.length > 0) this.dropNames = this.dropNames === null ? toks : this.dropNames.concat(toks);
        }
      } else if (c === H_VARY && cacheable) {
        const v = varyCacheable(head.value(i));
        if (v === 0) cacheable = false;
        else if (v === 2) this.varyEncoding = true;
      }
    }
    this.noBody = this.method === 'HEAD' || status === 204 || status === 304;
    if (cacheable && this.contentLength <= MAX_ENTRY_BYTES && this.route.cache.wants(this.host, this.path, this.varyEncoding, this.acceptEncoding, clock.now)) {
      this.capture = [];
      this.keptHeaders = this.endToEndHeaders(head);
    }
    // The head is written with the first body piece (or the end) when they came in the same
    // read — one syscall for small responses — else by flushHead() at the end of the read.
    this.headPending = true;
  }

  flushHead(): void {
    if (this.aborted || this.resDone) {
      this.headPending = false;
      return;
    }
    cur = this;
    this.res.cork(corkedHeadOnly);
  }

  onUpstreamData(chunk: Uint8Array): boolean {
    if (this.aborted || this.resDone) return !this.aborted;
    this.bytesOut += chunk.length;
    if (this.capture !== null) {
      this.captureBytes += chunk.length;
      if (this.captureBytes > MAX_ENTRY_BYTES) this.capture = null;
      else this.capture.push(Buffer.from(chunk)); // the chunk is a view of the shared read buffer
    }
    cur = this;
    if (this.contentLength < 0 && (chunk.length > CORKED_WRITE_MAX || (this.headPending && chunk.length > 1024))) {
      // uWS 20.30 drops the payload of a corked write() that does not fit its 16 KiB cork buffer
      // when the socket happens to be full at that moment (uncork() returns before buffering
      // it), corrupting the chunked framing. Write the head alone (unless head and chunk are
      // small), then at most one cork buffer's worth per cork: every byte then goes through the
      // cork buffer, which is always buffered on backpressure. (Known-length bodies use tryEnd,
      // which tracks offsets.)
      if (this.headPending) this.res.cork(corkedHeadOnly);
      for (let off = 0; off < chunk.length && !this.resDone && !this.aborted; off += CORKED_WRITE_MAX) {
        curChunk = chunk.subarray(off, off + CORKED_WRITE_MAX);
        this.res.cork(corkedData);
      }
    } else {
      curChunk = chunk;
      this.res.cork(corkedData);
    }
    return !this.backpressured;
  }

  onUpstreamEnd(): void {
    this.upstreamDone = true;
    this.conn = null;
    const ep = this.endpoint!;
    ep.inflight--;
    this.freed();
    const ms = performance.now() - this.t0;
    const bucket = latencyBucket(ms);
    this.route.stats.observeLatency(ms, bucket);
    if (this.meter !== null) this.meter.observe(ms, bucket);
    if (this.aborted) return;
    if (this.capture !== null && (this.contentLength < 0 || this.captureBytes === this.contentLength)) {
      this.storeFallback();
    }
    if (this.resDone) return;
    cur = this;
    this.res.cork(corkedComplete);
  }

  onUpstreamError(err: UpstreamError): void {
    const ep = this.endpoint;
    if (err.code === E_INTERNAL) internalError(null, (err.cause as Error | undefined) ?? err);
    if (this.upstreamDone) return;
    if (this.headPending) {
      // the head has not gone out yet (the failure came in the read that brought it, e.g. a bad
      // first chunk size): the client still gets a proper error answer
      this.headPending = false;
      this.head = null;
      this.gotHeaders = false;
    }
    this.upstreamDone = true;
    this.conn = null;
    this.waitingOn = null;
    if (this.aborted) {
      // the client went away: not the endpoint's failure, but a held probe slot must be released
      if (ep !== null) {
        ep.inflight--;
        ep.breaker.onNeutral();
        this.freed();
      }
      this.destroyBody();
      return;
    }
    if (!this.gotHeaders) {
      // Nothing sent to the client yet: retry elsewhere, fall back, or answer with an error.
      const v = judgeBeforeHeaders(err, this.method);
      if (ep !== null) this.charge(ep, v.fault);
      if (v.retry && !this.hasBody && this.attempts <= this.route.retries && v.fault === FAULT_ENDPOINT) {
        this.failedEndpoint = ep;
        this.route.stats.retries++;
        this.upstreamDone = false;
        this.attempt();
        return;
      }
      this.destroyBody();
      if (v.retry && v.fault === FAULT_ENDPOINT && this.serveFallback()) return;
      this.fail(v.status, v.code, v.message);
      return;
    }
    // Failure mid-body: the status line is gone; the only honest signal is closing the connection.
    if (ep !== null) this.charge(ep, faultAfterHeaders(err));
    this.destroyBody();
    this.reason = err.code === 'UPSTREAM_BODY_TIMEOUT' ? 'upstream_idle_timeout' : 'upstream_reset';
    this.finish(this.status);
    if (!this.resDone) {
      this.resDone = true;
      this.res.close();
    }
  }

  /** Settle the endpoint's books for a failed attempt: only its own faults reach its breaker. */
  private charge(ep: Endpoint, fault: number): void {
    ep.inflight--;
    if (fault === FAULT_ENDPOINT) {
      ep.failures++;
      ep.breaker.onFailure(Date.now());
    } else {
      if (fault === FAULT_CLIENT) this.route.stats.refused++;
      ep.breaker.onNeutral();
    }
    this.freed();
  }

  // ---- writing the client response (always inside cork) --------------------------------

  /**
   * The status line, the end-to-end headers and x-request-id in ONE uWS call: copied from the
   * upstream's bytes into a scratch buffer as `code reason\r\nname: value\r\n…x-request-id: id`
   * and handed to writeStatus (uWS writes `HTTP/1.1 ` before it and CRLF after it, then its own
   * Date and Content-Length/chunked framing). Fields are re-framed (`name: value` CRLF) whatever
   * line ends the upstream used; their bytes were validated by the parser (tokens, no control
   * bytes), the id by admission. Always inside cork, within the read that brought the head.
   */
  writeHead(): void {
    this.headPending = false;
    const res = this.res;
    const h = this.head!;
    this.head = null;
    const b = h.buf;
    const off = h.offsets;
    const n = h.count;
    const drop = this.dropNames;
    const status = statusLine(this.status, this.statusText);
    // the most this head can take: its own bytes re-framed (≤ 4 more per field), status, id
    const cookie = this.setAffinity === null ? null : affinityCookie(this.setAffinity, this.secure);
    const room = (n > 0 ? off[5 * n - 1] - off[0] : 0) + 4 * n + status.length + this.requestId.length + 32 + (cookie === null ? 0 : cookie.length + 16);
    const out = room <= headScratch.length ? headScratch : new Uint8Array(room);
    let pos = putLatin1(out, 0, status);
    for (let i = 0; i < n; i++) {
      const c = fieldClass[i];
      // hop-by-hop, content-length (uWS writes it), date, x-request-id
      if (c !== H_PASS && c !== H_SET_COOKIE && c !== H_CACHE_CONTROL && c !== H_VARY) continue;
      if (drop !== null && drop.includes(h.name(i).toLowerCase())) continue;
      const i5 = 5 * i;
      out[pos++] = 13;
      out[pos++] = 10;
      for (let k = off[i5], e = off[i5 + 1]; k < e; k++) out[pos++] = b[k];
      out[pos++] = 58;
      out[pos++] = 32;
      for (let k = off[i5 + 2], e = off[i5 + 3]; k < e; k++) out[pos++] = b[k];
    }
    if (cookie !== null) pos = putLatin1(out, pos, cookie);
    pos = putLatin1(out, pos, '\r\nx-request-id: ');
    pos = putLatin1(out, pos, this.requestId);
    res.writeStatus(new Uint8Array(out.buffer, 0, pos));
    if (this.noBody) {
      this.resDone = true;
      // HEAD: the length as a header, then endWithoutBody() — endWithoutBody(n > 0) leaves this uWS
      // build's response pending for ever (the connection's next request is closed unanswered,
      // and it is never idle-timed out)
      if (this.method === 'HEAD' && this.contentLength >= 0) res.writeHeader('content-length', String(this.contentLength));
      res.endWithoutBody();
      this.finish(this.status);
    } else if (this.contentLength === 0) {
      this.resDone = true;
      res.end();
      this.finish(this.status);
    }
  }

  /** The end-to-end headers as strings (a fallback capture keeps them past the read). */
  private endToEndHeaders(h: ResponseHead): string[] {
    const out: string[] = [];
    for (let i = 0; i < h.count; i++) {
      const c = fieldClass[i];
      if (c === H_PASS || c === H_CACHE_CONTROL || c === H_VARY) out.push(h.name(i), h.value(i));
    }
    return out;
  }

  writeData(chunk: Uint8Array): void {
    if (this.headPending) this.writeHead();
    if (this.resDone) return;
    const res = this.res;
    if (this.contentLength >= 0) {
      const [ok, done] = res.tryEnd(chunk, this.contentLength);
      if (done) {
        this.resDone = true;
        this.finish(this.status);
      } else if (ok) {
        this.bodySent += chunk.length;
      } else {
        // what uWS did not take is kept (copied: the chunk is a view of the shared read buffer)
        const base = this.bodySent;
        const taken = res.getWriteOffset() - base;
        this.pendingChunk = Buffer.from(chunk.subarray(taken));
        this.pendingBase = base + taken;
        this.backpressure();
      }
    } else if (!res.write(chunk)) {
      this.backpressure();
    }
  }

  writeComplete(): void {
    if (this.headPending) this.writeHead();
    if (this.resDone) return;
    if (this.contentLength < 0) {
      // chunked: uWS buffers the terminating chunk even under backpressure
      this.resDone = true;
      this.res.end();
      this.finish(this.status);
    } else if (this.pendingChunk === null) {
      // upstream sent fewer bytes than it announced: the client must not mistake it for complete
      this.reason = 'upstream_truncated';
      this.resDone = true;
      this.finish(this.status);
      this.res.close();
    }
    // else: onWritable finishes the pending chunk, which completes the response
  }

  private backpressure(): void {
    this.backpressured = true;
    if (!this.writableHooked) {
      this.writableHooked = true;
      this.res.onWritable((offset) => {
        try {
          return this.onWritable(offset);
        } catch (e) {
          internalError(null, e as Error);
          return true;
        }
      });
    }
  }

  private onWritable(offset: number): boolean {
    if (this.aborted || this.resDone) return true;
    const p = this.pendingChunk;
    if (p !== null) {
      const [ok, done] = this.res.tryEnd(p.subarray(offset - this.pendingBase), this.contentLength);
      if (done) {
        this.pendingChunk = null;
        this.resDone = true;
        this.finish(this.status);
        return true;
      }
      if (!ok) return false;
      this.bodySent = this.pendingBase + p.length;
      this.pendingChunk = null;
    }
    this.backpressured = false;
    if (!this.upstreamDone && this.conn !== null) this.conn.resume();
    return true;
  }

  // ---- outcomes -------------------------------------------------------------------------

  onClientAborted(): void {
    this.aborted = true;
    if (!this.upstreamDone) {
      const conn = this.conn;
      const pool = this.waitingOn;
      if (conn !== null) conn.abort();
      else if (pool !== null) pool.cancel(this);
      // the endpoint's books: a client that gave up is nobody's failure
      this.onUpstreamError(Object.assign(new Error('client aborted'), { code: 'CLIENT_ABORTED' }) as UpstreamError);
    }
    this.destroyBody();
    if (!this.finished) {
      this.reason = 'client_aborted';
      this.finish(499);
    }
  }

  /** Fallback key: host + path (+ the request's Accept-Encoding when the response varies on it). */
  cacheKey(): string {
    return this.varyEncoding ? this.host + this.path + '\n' + this.acceptEncoding : this.host + this.path;
  }

  private storeFallback(): void {
    const chunks = this.capture!;
    this.capture = null;
    const headers = this.keptHeaders!;
    this.keptHeaders = null;
    const body = chunks.length === 1 ? chunks[0] : Buffer.concat(chunks, this.captureBytes);
    const entry: CachedResponse = { headers, body, storedAt: Date.now() };
    this.route.cache.store(this.cacheKey(), entry);
  }

  /** Serve the last good response when no endpoint can answer. Returns false when there is none. */
  private serveFallback(): boolean {
    if ((this.method !== 'GET' && this.method !== 'HEAD') || this.hasAuth) return false;
    const cache = this.route.cache;
    const key = this.host + this.path;
    const hit = cache.get(key) ?? cache.get(key + '\n' + this.acceptEncoding);
    if (hit === undefined) return false;
    this.route.stats.fallbackHits++;
    this.bytesOut += hit.body.length;
    fallbackEntry = hit;
    cur = this;
    this.reason = 'fallback';
    this.res.cork(corkedFallback);
    return true;
  }

  writeFallback(hit: CachedResponse): void {
    const res = this.res;
    res.writeStatus('200 OK');
    const h = hit.headers;
    for (let i = 0; i < h.length; i += 2) res.writeHeader(h[i], h[i + 1]);
    res.writeHeader('x-berth-fallback', 'hit');
    res.writeHeader('age', String(Math.floor((Date.now() - hit.storedAt) / 1000)));
    res.writeHeader('x-request-id', this.requestId);
    if (this.method === 'HEAD') {
      this.resDone = true;
      // see writeHead: never endWithoutBody(n > 0)
      res.writeHeader('content-length', String(hit.body.length));
      res.endWithoutBody();
      this.finish(200);
      return;
    }
    // Through tryEnd like an upstream body (offset-tracked backpressure; a large end() inside a
    // cork can lose its payload in this uWS version, see onData).
    this.status = 200;
    this.contentLength = hit.body.length;
    this.upstreamDone = true;
    if (hit.body.length === 0) {
      this.resDone = true;
      res.end();
      this.finish(200);
      return;
    }
    this.writeData(hit.body);
  }

  private noEndpoint(): void {
    this.destroyBody();
    if (this.serveFallback()) return;
    const all = this.route.targets.length;
    this.fail(503, 'no_available_endpoint', all === 0
      ? `route "${this.route.id}" has no endpoints`
      : `all ${all} endpoint(s) of route "${this.route.id}" are unavailable (circuit open)`);
  }

  private fail(status: number, code: string, message: string): void {
    this.reason = code;
    this.resDone = true;
    sendError(this.res, status, code, this.requestId, message, this.method === 'HEAD');
    this.finish(status);
  }

  private destroyBody(): void {
    this.bodyQueue = null;
    held.bytes -= this.bodyQueued;
    this.bodyQueued = 0;
  }

  finish(status: number): void {
    if (this.finished) return;
    this.finished = true;
    const s = this.route.stats;
    s.inflight--;
    globalStats.inflight--;
    s.byClass[(status / 100) | 0]++;
    // proxy errors: 5xx it generated, truncations; a client's 400 is counted as refused, not here
    const proxyError = this.reason !== '' && this.reason !== 'fallback' && (status < 400 || status >= 500);
    if (proxyError) s.errors++;
    const m = this.meter;
    if (m !== null) {
      m.open--;
      m.count(status, proxyError, this.bytesIn, this.bytesOut);
    } else s.unrouted.count(status, proxyError, this.bytesIn, this.bytesOut);
    const log = runtime.accessLog;
    if (log !== null && log.sample()) {
      log.write(this.requestId, this.method, this.host, this.path, status, this.route.id,
        this.endpoint === null ? '' : this.endpoint.address, this.t0 === 0 ? 0 : performance.now() - this.t0, this.reason, this.traceparent);
    }
  }
}

let fallbackEntry: CachedResponse;
function corkedFallback(): void { cur.writeFallback(fallbackEntry); }

