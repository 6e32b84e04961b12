/**
 * The hot path: one client request forwarded to one upstream (plus at most `retries` extra
 * connect attempts): the endpoint picked (or the request held for one), the upstream connection's
 * events, the request body relayed, failures judged, the books kept. The response is written by
 * the class it extends (response.ts). The Exchange object is itself the upstream connection's
 * handler (upstream/connection.ts), so a request allocates the exchange, its header array, the
 * request head string and one abort closure — nothing per chunk but the one copy of each body chunk.
 *
 * Request body chunks are copied exactly once (uWS's are valid only during the callback).
 */
import { performance } from 'node:perf_hooks';
import type { HttpResponse } from 'uWebSockets.js';
import { stickyTarget, type Target } from '../balancing/target.js';
import { latencyBucket, type EndpointMeter } from '../metrics/meter.js';
import { globalStats } from '../metrics/route-stats.js';
import { FAULT_CLIENT, FAULT_ENDPOINT, FAULT_NEUTRAL, faultAfterHeaders, isConnectError, judgeBeforeHeaders, resendsStale, resendsUnsent } from '../resilience/failure-policy.js';
import type { RouteQueue } from '../routing/queue.js';
import type { Route } from '../routing/route.js';
import { E_INTERNAL, E_NOT_SENT, E_PIPELINE_RESEND, E_STALE, PIPELINE_MAX_BODY, PIPELINE_PAUSE_MS, type UpstreamConnection, type UpstreamError, type UpstreamHandler } from '../upstream/connection.js';
import type { ResponseHead } from '../upstream/response-parser.js';
import type { Endpoint } from '../upstream/endpoint.js';
import type { UpstreamPool } from '../upstream/pool.js';
import { clock } from '../upstream/timers.js';
import { internalError } from './respond.js';
import { ClientResponse } from './response.js';
import { runtime } from './state.js';

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

export class Exchange extends ClientResponse implements UpstreamHandler {
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
  /** RouteSpec.pipeline for a bodiless GET of a pipelining route; 1 otherwise (and once resent) */
  pipeline = 1;
  conn: UpstreamConnection | null = null;
  waitingOn: UpstreamPool | null = null;
  // progress
  finished = false;
  gotHeaders = false;
  attempts = 0;
  /** times it was sent again after a connection closed under it: stale (E_STALE) or before it went out (E_NOT_SENT) */
  private staleResends = 0;
  endpoint: Endpoint | null = null;
  /** counted in `endpoint.inflight` (from send() until its books are settled) */
  private counted = false;
  failedEndpoint: Endpoint | null = null;
  t0 = 0;
  /** metering (metrics/meter.ts): the route/endpoint this request is counted on, body bytes each way */
  meter: EndpointMeter | null = null;
  bytesIn = 0;
  // session affinity (routes with RouteSpec.affinity)
  /** the client's berth-affinity cookie ('' when none, or the route has no affinity) */
  affinity = '';
  /** the SHA-256 of the invoker token it was admitted with ('' for a public route) */
  authDigest = '';

  constructor(res: HttpResponse, route: Route, method: string, path: string, host: string, requestId: string) {
    super(res, route, method, path, host, requestId);
    this.headRequest = method === 'HEAD';
  }

  get headersTimeoutMs(): number { return this.route.headersTimeoutMs; }
  get pipelineGroup(): string { return this.route.id; }
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
    // its route id in the newest table (settings, endpoints), if any still has it; a newer table
    // is the word on its endpoints: the one that failed it before may be back (a woken app's
    // instance on the same address), and its breaker still guards it
    const current = this.route.home.route;
    if (current !== null && current !== this.route) {
      this.moveTo(current);
      this.failedEndpoint = null;
    }
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
    this.moveTo(r);
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

  /** A held request follows its route into a newer table (and its pipelining depth with it). */
  private moveTo(r: Route): void {
    // its in-flight count goes with it (finish() takes it from the route it ends on): left on the
    // old id, that id never settled and the new one went below zero, which the control plane
    // refuses in reports
    const from = this.route.stats;
    if (r.stats !== from) {
      from.inflight--;
      r.stats.inflight++;
    }
    this.route = r;
    if (this.pipeline > 1) this.pipeline = r.pipeline > 1 ? r.pipeline : 1;
  }

  refuseWake(): void {
    this.destroyBody();
    // (the owner's quota is theirs to know: the visitor is told only that none can start now)
    this.fail(503, 'not_started', `route "${this.route.id}": the app is at zero instances and cannot start one now; try again later`);
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
    this.counted = true;
    ep.requests++;
    this.attempts++;
    this.t0 = performance.now();
    try {
      this.dispatch(ep);
    } catch (e) {
      // the pool reports failures through onUpstreamError; a throw here is a bug, and must not keep a probe slot
      if (!this.upstreamDone) {
        this.upstreamDone = true;
        this.leave(ep);
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
      conn.abort(this);
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

  /**
   * Body pieces a connection had taken before it closed, its head unsent: the queue again (empty
   * here: while a request has a connection its pieces go to it, not to the queue).
   */
  private takeBack(pieces: Buffer[]): void {
    let n = 0;
    for (let i = 0; i < pieces.length; i++) n += pieces[i].length;
    this.bodyQueue = pieces;
    this.bodyQueued = n;
    held.bytes += n;
    // (as onChunk would have: the client waits while it has too much held)
    if (!this.bodyEnded && (this.bodyQueued > BODY_QUEUE_MAX || held.bytes > HELD_BODIES_MAX)) this.pauseClient();
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
    const ep = this.endpoint!;
    // an answer pipelined behind another is never kept for fallback: if the one in front was
    // mis-framed, these bytes may not be this request's answer
    if (this.conn !== null && this.conn.promoted) this.noStore = true;
    if (this.route.pipeline > 1 && this.method === 'GET') {
      // what this answer would cost requests pipelined behind it: its length, or (unknown
      // length, chunked, 204/304: they would be resent) as much as the most that may wait
      const s = this.route.stats;
      const small = head.status >= 200 && head.status !== 204 && head.status !== 304 && !head.chunked && head.contentLength >= 0;
      s.answerBytes += ((small ? head.contentLength : PIPELINE_MAX_BODY) - s.answerBytes) / 8;
    }
    if (head.status >= 500 && this.route.failOn5xx) ep.breaker.onFailure(Date.now());
    else ep.breaker.onSuccess();
    this.gotHeaders = true;
    this.acceptHead(head);
  }

  onPipelineStall(): void {
    this.route.stats.pipelinePausedUntil = clock.now + PIPELINE_PAUSE_MS;
  }

  onUpstreamData(chunk: Uint8Array): boolean {
    if (this.aborted || this.resDone) return !this.aborted;
    return this.forward(chunk);
  }

  onUpstreamEnd(): void {
    this.upstreamDone = true;
    this.conn = null;
    const ep = this.endpoint!;
    this.leave(ep);
    this.freed();
    const ms = performance.now() - this.t0;
    const bucket = latencyBucket(ms);
    this.route.stats.observeLatency(ms, bucket);
    if (this.meter !== null) this.meter.observe(ms, bucket);
    if (this.aborted) return;
    this.complete();
  }

  protected resumeUpstream(): void {
    if (this.conn !== null) this.conn.resume();
  }

  onUpstreamError(err: UpstreamError): void {
    const ep = this.endpoint;
    if (err.code === E_INTERNAL) internalError(null, (err.cause as Error | undefined) ?? err);
    if (this.upstreamDone) return;
    const code = err.code;
    if ((code === E_PIPELINE_RESEND || (code === E_NOT_SENT && resendsUnsent(this.staleResends)) ||
      (code === E_STALE && resendsStale(this.method, this.hasBody, this.staleResends))) && !this.aborted && ep !== null) {
      // pipelined behind an answer that ended its connection, or would have held it up; sent on
      // a keep-alive connection the upstream was closing; or given one that closed before the
      // request went out: sent again, alone and afresh, as any request is — balanced (its
      // endpoint again, most likely), the breaker asked, the books settled; not an attempt in the
      // retry policy's sense
      this.conn = null;
      this.pipeline = 1;
      if (code === E_NOT_SENT && err.body) this.takeBack(err.body);
      if (code === E_PIPELINE_RESEND) this.route.stats.resent++;
      else {
        this.staleResends++;
        this.route.stats.staleResent++;
      }
      this.charge(ep, FAULT_NEUTRAL);
      this.attempts--;
      this.attempt();
      return;
    }
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
        this.leave(ep);
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
      if (this.wakeInstead(err)) return;
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

  /**
   * A route that scales to zero, whose last admitted endpoint just refused the connection (its
   * instance went away before the table said so): hold the request and wake the app, as when it
   * has no endpoint, rather than answer from the fallback cache or with a 502 (retries spent).
   */
  private wakeInstead(err: UpstreamError): boolean {
    if (!this.route.wake || runtime.activate === null || this.hasBody || this.aborted || !isConnectError(err.code)) return false;
    this.failedEndpoint = this.endpoint;
    if (this.whyNoEndpoint(clock.now) !== NONE_ADMITTED) return false;
    // attempt() finds no endpoint either: it holds the request and asks for an instance
    this.upstreamDone = false;
    this.attempt();
    return true;
  }

  /** Give back the place this request held in `ep`'s in-flight count (every settlement goes through here: abandon() relies on `counted`). */
  private leave(ep: Endpoint): void {
    ep.inflight--;
    this.counted = false;
  }

  /** Settle the endpoint's books for a failed attempt: only its own faults reach its breaker. */
  private charge(ep: Endpoint, fault: number): void {
    this.leave(ep);
    if (fault === FAULT_ENDPOINT) {
      ep.failures++;
      ep.breaker.onFailure(Date.now());
    } else {
      if (fault === FAULT_CLIENT) this.route.stats.refused++;
      ep.breaker.onNeutral();
    }
    this.freed();
  }

  // ---- outcomes -------------------------------------------------------------------------

  /**
   * Telling this request of a failure threw (a bug, logged by `tell`): whatever state that left,
   * it is finished as the proxy's error, its client's connection is closed now (its onAborted
   * finds the request finished and the upstream side done: nothing runs again), it leaves the
   * pool queue or the connection it may be on (a resend may have got that far), and its
   * endpoint's in-flight count is given back if it still holds it (`counted`: whether the throw
   * came before or after the books were settled, or after a resend counted it again).
   */
  abandon(): void {
    const ep = this.endpoint;
    const pool = this.waitingOn;
    const conn = this.conn;
    this.upstreamDone = true;
    this.conn = null;
    this.waitingOn = null;
    if (!this.finished) {
      this.reason = 'internal_error';
      this.finish(this.gotHeaders ? this.status : 502);
    }
    if (!this.resDone && !this.aborted) {
      this.resDone = true;
      this.res.close();
    }
    if (pool !== null) pool.cancel(this);
    // (only one it is on: a connection it was told about may serve the requests in front now)
    if (conn !== null && conn.carries(this)) conn.abort(this);
    if (this.counted && ep !== null) {
      this.leave(ep);
      ep.breaker.onNeutral();
      this.freed();
    }
    this.destroyBody();
  }

  onClientAborted(): void {
    this.aborted = true;
    // (if it was waiting, its place is dead weight until the queue drops it)
    this.route.queue?.noteGone();
    if (!this.upstreamDone) {
      const conn = this.conn;
      const pool = this.waitingOn;
      if (conn !== null) conn.abort(this);
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

  private noEndpoint(): void {
    this.destroyBody();
    if (this.serveFallback()) return;
    const all = this.route.targets.length;
    this.fail(503, 'no_available_endpoint', all === 0
      ? `route "${this.route.id}" has no endpoints`
      : `all ${all} endpoint(s) of route "${this.route.id}" are unavailable (circuit open)`);
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

