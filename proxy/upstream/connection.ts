/**
 * One keep-alive HTTP/1.1 connection to an upstream, carrying one exchange at a time.
 *
 * Written by hand because it is the hot path and exists nowhere in the shape berth needs: the
 * request head is one pre-built Latin-1 string (one write); every socket read lands in one
 * buffer shared by all connections of the thread (`net.connect({ onread })`) and is parsed in
 * place (response-parser.ts): one JS call per read, the head handed over as offsets, body pieces
 * as views of that buffer — the handler consumes them before the call returns (uWS copies them
 * once; a handler that must keep bytes copies them). Backpressure stops the socket's reads. No
 * Request object, no queue of promises, no stream machinery on the response side.
 *
 * Timeouts are checked by one coarse sweep (timers.ts) instead of a timer per request; a
 * connection is on the sweep's list from its creation to its close (no per-request bookkeeping).
 *
 * A request's head is written at the end of the event-loop turn (`batches`, below), with the
 * first piece of its body when it came in the same turn. Pipelining (RouteSpec.pipeline,
 * opt-in): a bodiless GET of a pipelining route goes out in that write together with those of the
 * requests of the same route and turn that joined it (`append`, up to the route's depth): one
 * write and, usually, one read for several requests. The answers come back in order: `handler`
 * is the one being answered, `behind` the ones after it. The ones behind are sent again, alone
 * (E_PIPELINE_RESEND; the exchange does it), whenever waiting could cost them more than a
 * resend: the connection ends
 * (or the next answer does not parse) before their answer began, the answer in front is not a
 * small one of known length (a stream, a download, 204/304 framing an app might get wrong), its
 * client reads slowly, or it is not whole PIPELINE_STALL_MS after its turn began. The connection
 * then closes after the answer in front. A stall also pauses the route's pipelining for
 * PIPELINE_PAUSE_MS (`onPipelineStall`): a route whose answers are sometimes slow would otherwise
 * have requests wait half a second behind them, and be resent, again and again.
 * A request behind whose client left is swapped for a Discard, so the answers behind it still
 * reach theirs.
 */
import { reportInternalError } from '../resilience/internal-errors.js';
import { connect, type Socket } from 'node:net';
import { ResponseHead, ResponseParser, type ParserError, type ResponseSink } from './response-parser.js';
import { queuedBytes, readStart, readStop, takeReads, writeHead, writeParts } from './stream-handle.js';
import { clock, watch, unwatch } from './timers.js';

/** What an exchange hears from its connection. */
export interface UpstreamHandler {
  /**
   * The request is under way on this connection (its head goes out at the end of the turn):
   * request body chunks may follow.
   */
  onUpstreamStart(conn: UpstreamConnection): void;
  /**
   * The response head, in place (valid until the read that brought it has been handled): the
   * handler writes it with the first body piece, or when `flushHead()` is called at the end of
   * that read.
   */
  onUpstreamHead(head: ResponseHead): void;
  /** a head from onUpstreamHead is still unwritten at the end of the read that brought it */
  readonly headPending: boolean;
  flushHead(): void;
  /** A body piece: a view of the shared read buffer, valid only during this call. false: stop reading until `conn.resume()` */
  onUpstreamData(chunk: Uint8Array): boolean;
  onUpstreamEnd(): void;
  onUpstreamError(err: UpstreamError): void;
  /**
   * Telling it of a failure threw (a bug, logged by `tell`): what it did is unknown, so it lets go
   * of everything and closes its client's connection now, rather than leave the client waiting
   * for its own timeout.
   */
  abandon(): void;
  /** the request body can be written again after `writeBody` returned false */
  onUpstreamDrain(): void;
  /** its answer was not whole PIPELINE_STALL_MS after its turn began: the requests pipelined behind it are being resent */
  onPipelineStall(): void;
  /** the request head, built once: `GET /p HTTP/1.1\r\n…\r\n\r\n` */
  readonly upstreamHead: string;
  readonly headRequest: boolean;
  readonly hasBody: boolean;
  /** up to how many requests may share the connection with this one (bodiless GET of a pipelining route); 1: never */
  readonly pipeline: number;
  /** requests share a batch only with requests of the same group (their route) */
  readonly pipelineGroup: string;
  readonly headersTimeoutMs: number;
  readonly idleTimeoutMs: number;
}

/** Error codes of the upstream client (the failure policy judges them). */
export const E_CONNECT_TIMEOUT = 'UPSTREAM_CONNECT_TIMEOUT';
export const E_HEADERS_TIMEOUT = 'UPSTREAM_HEADERS_TIMEOUT';
export const E_BODY_TIMEOUT = 'UPSTREAM_BODY_TIMEOUT';
/** the request body stalled: less than BODY_PROGRESS_BYTES went out within the headers timeout */
export const E_REQUEST_TIMEOUT = 'UPSTREAM_REQUEST_TIMEOUT';
/** request body bytes that count as progress (about a read's worth) */
const BODY_PROGRESS_BYTES = 16 * 1024;
/** at most this long between two BODY_PROGRESS_BYTES of a body (less when the headers timeout is shorter) */
const BODY_STALL_MAX_MS = 60_000;
/** a body may take the headers timeout in all, and at least this long (an upload is not an answer) */
const BODY_TOTAL_MIN_MS = 300_000;
/** the connection closed before the response was complete */
export const E_CLOSED = 'UPSTREAM_CLOSED';
/** a 100 or 101 the proxy never asked for (it sends neither Expect nor Upgrade) */
export const E_UNSOLICITED_1XX = 'UPSTREAM_UNSOLICITED_1XX';
/** the pool's wait queue is full */
export const E_POOL_FULL = 'UPSTREAM_POOL_FULL';
/**
 * a pipelined request that must not wait for its answer on this connection any longer (the
 * connection ended, or the answer in front would hold it up): not the endpoint's failure, send it
 * again, alone (GET: idempotent)
 */
export const E_PIPELINE_RESEND = 'UPSTREAM_PIPELINE_RESEND';
/**
 * a reused keep-alive connection ended or was reset before any byte of the answer: the race every
 * HTTP client meets when the upstream closes an idle connection just as a request goes out on it.
 * The exchange sends a bodiless safe request again (another connection; not a retry, not the
 * endpoint's failure); anything else is judged as a closed connection.
 */
export const E_STALE = 'UPSTREAM_STALE_CONNECTION';
/**
 * the connection ended, was reset, or sent bytes nobody asked for before the request's head went
 * out at the end of its turn: not one byte of it reached the upstream, so any request may be sent again
 * (another connection; the keep-alive race, caught before the write). `body`: the pieces of its
 * body the connection had taken, in order, to be sent with it again.
 */
export const E_NOT_SENT = 'UPSTREAM_NOT_SENT';
/** a bug while handling a read (the error is the `cause`): costs the exchange, never the process */
export const E_INTERNAL = 'PROXY_INTERNAL';

export interface UpstreamError extends Error {
  code: string;
  /** E_NOT_SENT: the request body pieces the connection had taken (none: null) */
  body?: Buffer[] | null;
}

export function upstreamError(code: string, message: string): UpstreamError {
  const e = new Error(message) as UpstreamError;
  e.code = code;
  return e;
}

export interface ConnectionOwner {
  readonly host: string;
  readonly port: number;
  connectTimeoutMs: number;
  connected(c: UpstreamConnection): void;
  connectFailed(c: UpstreamConnection, err: UpstreamError): void;
  released(c: UpstreamConnection): void;
  closed(c: UpstreamConnection): void;
}

const CONNECTING = 0, IDLE = 1, BUSY = 2, CLOSED = 3;

/**
 * Every upstream read of this thread lands here, is parsed and handed on before the next read
 * (libuv reads one socket at a time, and nothing keeps a view of it past its callback). 256 KiB:
 * a 64 KiB response and its head come in one read (measured: about 5 % less CPU per 64 KiB
 * response than with 64 KiB).
 */
const READ_BUFFER = Buffer.allocUnsafe(256 * 1024);

/** Requests wait behind an answer only when it is at most this long (and its length is known). */
export const PIPELINE_MAX_BODY = 64 * 1024;
/** A route's requests are pipelined while its GET answers average at most this much (RouteStats.answerBytes). */
export const PIPELINE_SMALL_ANSWERS = 16 * 1024;
/** Requests behind an answer that is not whole this long after its turn began are sent again, alone. */
const PIPELINE_STALL_MS = 500;
/**
 * A reused connection that ends this soon after a request went out on it, with nothing of the
 * answer, met the keep-alive race (E_STALE); later, the upstream had the request long enough to
 * have failed on it.
 */
const STALE_WINDOW_MS = 250;
/** After such a stall, the route's requests go alone for this long (RouteStats.pipelinePausedUntil). */
export const PIPELINE_PAUSE_MS = 10_000;

/**
 * Connections whose request heads are written at the end of this event-loop turn (setImmediate:
 * after every socket event of the turn), one write each: the head, the heads pipelined behind it,
 * or the head with the first piece of its body (and the body's end) when they came in the turn.
 * Written as each request came, a turn that takes 20 requests woke the upstream up to 20 times —
 * on loopback each write delivers in the writer's context and wakes a sleeping upstream, which
 * answered one request and slept again (measured against nginx upstreams: 0.7–1.0 sleeps of the
 * upstream per request, 0.05 with the writes at the end of the turn) — and a small POST took two
 * writes, its head and its body. Envoy defers its writes to the event loop the same way. The cost
 * is where in the turn a request goes out: at most the rest of the turn's work later, never a
 * timer's wait.
 */
let batches: UpstreamConnection[] = [];
/** the list of the last turn, emptied, for the next (no array per turn) */
let spare: UpstreamConnection[] = [];
function writeBatches(): void {
  const list = batches;
  batches = spare;
  for (let i = 0; i < list.length; i++) list[i].flush();
  list.length = 0;
  spare = list;
}

/** The last chunk of a chunked request body. */
const LAST_CHUNK = '0\r\n\r\n';

/**
 * Where the answer of a pipelined request whose client left goes: read to its end (framed as its
 * request asked) and dropped, so the answers behind it keep their places.
 */
class Discard implements UpstreamHandler {
  readonly headPending = false;
  readonly upstreamHead = '';
  readonly hasBody = false;
  readonly pipeline = 1;
  readonly pipelineGroup = '';
  constructor(readonly headRequest: boolean, readonly headersTimeoutMs: number, readonly idleTimeoutMs: number) {}
  onUpstreamStart(): void {}
  onUpstreamHead(): void {}
  flushHead(): void {}
  onUpstreamData(): boolean { return true; }
  onUpstreamEnd(): void {}
  onUpstreamError(): void {}
  abandon(): void {}
  onUpstreamDrain(): void {}
  onPipelineStall(): void {}
}

/**
 * Tell a request of a failure. A throw there is a bug: it is logged and the request abandoned
 * (its client let go), never thrown on — the callers are socket events and timers, where a throw
 * would end the process and every tenant's requests with it, and loops that must go on to tell
 * the others.
 */
export function tell(h: UpstreamHandler, err: UpstreamError, where: string): void {
  try {
    h.onUpstreamError(err);
  } catch (e) {
    abandonAfter(h, where, e);
  }
}

/** A bug threw `e` while `h` was being handled (`where`): logged, and the request abandoned. */
export function abandonAfter(h: UpstreamHandler, where: string, e: unknown): void {
  reportInternalError(where, e);
  try {
    h.abandon();
  } catch (e2) {
    reportInternalError('abandoning a request', e2);
  }
}

/**
 * Empty `behind`, telling each request in it (but a Discard) to be sent again. One at a time, each
 * guarded (`tell`): a resend runs the exchange's dispatch right here, and a bug in one must not
 * leave the others waiting for ever.
 */
function tellResend(behind: UpstreamHandler[], why: string): void {
  for (let b = behind.shift(); b !== undefined; b = behind.shift()) {
    if (!(b instanceof Discard)) tell(b, upstreamError(E_PIPELINE_RESEND, why), 'resending a pipelined request');
  }
}

export class UpstreamConnection implements ResponseSink {
  private readonly socket: Socket;
  private readonly parser: ResponseParser;
  handler: UpstreamHandler | null = null;
  /** pipelined requests written (or about to be) after `handler`'s, in order */
  private behind: UpstreamHandler[] = [];
  /** request heads of this turn's batch, written by flush() at the end of the turn */
  private batch = '';
  /** the first request body piece of the turn, written with the head by flush() */
  private held: Buffer | null = null;
  /** the request's head has not gone out (from start() until flush() writes it) */
  private unsent = false;
  /** body pieces given to a connection that closed before the head went out (E_NOT_SENT) */
  private kept: Buffer[] | null = null;
  /** the request body of the turn's request is sent chunked (the client sent it so) */
  private heldChunked = false;
  /** the batch's route and depth (its first request's) */
  private batchGroup = '';
  private batchDepth = 1;
  /** the request being answered was pipelined behind another (not the batch's first) */
  promoted = false;
  /** answers this connection carried to their end (more than none: a reused connection) */
  private answered = 0;
  /** bytes have come since the request being answered started (a 1xx, a piece of a head…) */
  private sawBytes = false;
  /** when the request being answered started (coarse clock) */
  private startedAt = 0;
  /** since when the request being answered has waited for its head (pipelining's stall check) */
  private turnStart = 0;
  state = CONNECTING;
  /** coarse-clock deadlines and marks, read by the sweep */
  deadline = 0;
  lastRead = 0;
  idleSince = 0;
  gotHead = false;
  private informational = false;
  private requestDone = false;
  /** request body bytes written since the deadline was last pushed back */
  private bodyProgress = 0;
  /** while the body goes out: the most it may take in all (coarse clock), and between two progresses */
  private bodyEnd = 0;
  private bodyStallMs = 0;
  private reusable = true;
  private paused = false;
  private releasePending = false;
  private pendingError: Error | null = null;

  constructor(private readonly owner: ConnectionOwner) {
    watch(this);
    this.deadline = clock.now + owner.connectTimeoutMs;
    this.parser = new ResponseParser(this);
    // reads land in READ_BUFFER and come to onRead() straight from the handle (takeReads); the
    // callback here is the stream layer's path, unused once taken
    const s = connect({ host: owner.host, port: owner.port, noDelay: true, onread: { buffer: READ_BUFFER, callback: (n) => this.onRead(n) } });
    takeReads(s, this);
    this.socket = s;
    s.on('connect', () => this.onConnect());
    s.on('error', (e) => {
      this.pendingError = e;
      // a reset read the turn the connection was given a request, its head not out yet: the
      // request goes elsewhere (E_NOT_SENT), as on an end (a write to the dead socket would fail)
      if (this.state === BUSY && this.unsent) this.destroy();
    });
    s.on('end', () => this.onEnd());
    s.on('close', () => this.onClose());
    s.on('drain', () => {
      const h = this.handler;
      if (h === null) return;
      // (a socket event: a bug there is its request's, never the process's)
      try {
        h.onUpstreamDrain();
      } catch (e) {
        abandonAfter(h, 'resuming a request body', e);
      }
    });
  }

  private onConnect(): void {
    if (this.state !== CONNECTING) return;
    this.state = IDLE;
    this.owner.connected(this);
  }

  onRead(n: number): boolean {
    if (this.state !== BUSY || this.batch !== '') {
      // bytes nobody asked for: on an idle connection, after the exchange let go, or before the
      // request went out (they came while the connection was idle, and are read in the turn it
      // was given a request: taken as its answer, the request's real answer would come after,
      // and the connection — reused — would hand it to the next one)
      this.destroy();
      return true;
    }
    this.sawBytes = true;
    try {
      this.parser.execute(READ_BUFFER, 0, n);
      const h = this.handler;
      if (h !== null && h.headPending) h.flushHead();
      // a slow reader in front, with body still to come (a paused answer that ended in this
      // read has resumed the reads): the requests behind go elsewhere
      if (this.paused && this.behind.length > 0) this.detach();
    } catch (e) {
      // nothing above libuv's read callback would catch it: the exchange fails, the process lives
      this.releasePending = false;
      const h = this.handler;
      this.handler = null;
      this.destroy();
      const err = upstreamError(E_INTERNAL, 'the proxy failed while handling the response');
      (err as Error & { cause?: unknown }).cause = e;
      if (h === null) reportInternalError('on an upstream read', e);
      else tell(h, err, 'failing a request after an upstream read'); // logs it, answers the client if it still can
      return true;
    }
    if (this.releasePending) {
      // bytes left over after the response's end (even the start of a head) are the upstream's
      // fault: the connection closes instead of handing them to the next request
      if (this.parser.idle) this.release();
      else {
        this.releasePending = false;
        this.destroy();
      }
    }
    // reads are stopped and started by readStop()/readStart(), never by the stream layer
    return true;
  }

  private release(): void {
    this.releasePending = false;
    if (this.state !== BUSY || this.handler !== null) return;
    this.state = IDLE;
    this.idleSince = clock.now;
    this.owner.released(this);
  }

  /**
   * Still idle and open? A connection the upstream closed while idle is destroyed at once (onEnd)
   * but leaves its pool's idle list only on its close event, a turn later.
   */
  get idle(): boolean {
    return this.state === IDLE;
  }

  /**
   * Send a request on this (idle) connection: its head opens a batch, written at the end of the
   * turn (writeBatches), which a pipelinable one's fellows may join (see append).
   */
  start(h: UpstreamHandler): void {
    this.handler = h;
    this.state = BUSY;
    this.gotHead = false;
    this.informational = false;
    this.paused = false;
    this.requestDone = !h.hasBody;
    this.bodyProgress = 0;
    if (h.hasBody && h.headersTimeoutMs > 0) {
      this.bodyStallMs = h.headersTimeoutMs < BODY_STALL_MAX_MS ? h.headersTimeoutMs : BODY_STALL_MAX_MS;
      this.bodyEnd = clock.now + (h.headersTimeoutMs > BODY_TOTAL_MIN_MS ? h.headersTimeoutMs : BODY_TOTAL_MIN_MS);
      this.deadline = clock.now + this.bodyStallMs;
    } else this.deadline = h.headersTimeoutMs > 0 ? clock.now + h.headersTimeoutMs : 0;
    this.promoted = false;
    this.sawBytes = false;
    this.unsent = true;
    this.startedAt = clock.now;
    // written at the end of the turn, with the other heads of the turn (see writeBatches) and
    // the first piece of its body, if one comes in the turn (writeBody)
    if (batches.length === 0) setImmediate(writeBatches);
    batches.push(this);
    this.batch = h.upstreamHead;
    this.batchGroup = h.pipelineGroup;
    this.batchDepth = h.pipeline;
    this.turnStart = clock.now;
    h.onUpstreamStart(this);
  }

  /** Can `h` join this turn's batch on this connection? */
  canAppend(h: UpstreamHandler): boolean {
    return this.batch !== '' && this.state === BUSY && this.reusable && h.pipelineGroup === this.batchGroup && this.behind.length + 1 < this.batchDepth;
  }

  /** Pipeline a bodiless request behind those of this turn's batch. */
  append(h: UpstreamHandler): void {
    this.behind.push(h);
    this.batch += h.upstreamHead;
    h.onUpstreamStart(this);
  }

  /**
   * The end of the turn: the batch's request head(s) in one write, with the body's first piece
   * (and its end) when they came in the turn — a small POST is one write, as a GET is. Also
   * called earlier by a second body piece of the turn (the head and the first go then).
   */
  flush(): void {
    const data = this.batch;
    if (data === '') return; // (written already: a second body piece came in the turn)
    this.batch = '';
    // (closed before its turn ended: the close hands the held piece back, E_NOT_SENT)
    if (this.state !== BUSY) return;
    const body = this.held;
    this.held = null;
    this.unsent = false;
    // the body ended in the turn (a bodiless request's is done from the start)
    const end = this.requestDone && this.handler !== null && this.handler.hasBody;
    try {
      const chunked = this.heldChunked;
      if (body === null) this.write(end && chunked ? data + LAST_CHUNK : data);
      else {
        // one writev straight to libuv (stream-handle.ts), as a head alone goes: libuv keeps the
        // handle's writes in order, so later pieces through the stream follow it; the stream has
        // nothing buffered here (a connection is reused only once it has taken all of a body)
        const err = writeParts(this.socket, chunked
          ? [data + body.length.toString(16) + '\r\n', 'latin1', body, 'buffer', end ? '\r\n' + LAST_CHUNK : '\r\n', 'latin1']
          : [data, 'latin1', body, 'buffer']);
        if (err !== 0) this.writeFailed(err);
      }
    } catch (e) {
      // a bug must cost this connection's requests (told on its close), not every later batch
      reportInternalError('writing a batch of request heads', e);
      this.destroy();
    }
  }

  /**
   * The requests behind the one being answered are sent again, alone, elsewhere (a Discard's
   * client is gone: dropped); this connection closes after the answer in front.
   */
  private detach(): void {
    this.reusable = false;
    tellResend(this.behind, 'the answer in front of this pipelined request was going to hold it up');
  }

  private write(head: string): void {
    // (straight to libuv: a connection is idle, and written to again, only once the socket has
    // taken all of the last request — parsedEnd — so no stream-buffered bytes are overtaken)
    const err = writeHead(this.socket, head);
    if (err !== 0) this.writeFailed(err);
  }

  private writeFailed(err: number): void {
    // the close that follows tells the handler (as a connection closed before responding)
    this.pendingError = upstreamError('ECONNRESET', `writing the request failed (libuv error ${err})`);
    this.destroy();
  }

  /** A request body chunk; false when the socket's buffer is full (wait for onUpstreamDrain). */
  writeBody(chunk: Buffer, chunked: boolean): boolean {
    if (this.state !== BUSY) {
      // closed in the turn, before the head went out: the piece goes back with the rest (E_NOT_SENT)
      if (this.unsent && this.handler !== null) (this.kept ??= []).push(chunk);
      return true;
    }
    // a body that keeps coming keeps its request alive: each BODY_PROGRESS_BYTES push the deadline
    // back, up to the body's total (a trickle of a byte now and then never does)
    if ((this.bodyProgress += chunk.length) >= BODY_PROGRESS_BYTES) {
      this.bodyProgress = 0;
      if (this.bodyStallMs > 0) {
        const next = clock.now + this.bodyStallMs;
        this.deadline = next < this.bodyEnd ? next : this.bodyEnd;
      }
    }
    if (this.batch !== '') {
      // the head is still to go, at the end of the turn: the first piece goes with it
      if (this.held === null) {
        this.held = chunk;
        this.heldChunked = chunked;
        return true;
      }
      this.flush();
    }
    return this.send(chunk, chunked);
  }

  /** A body piece to the socket (chunked: framed as one chunk). */
  private send(chunk: Buffer, chunked: boolean): boolean {
    if (!chunked) return this.socket.write(chunk);
    const s = this.socket;
    s.cork();
    s.write(chunk.length.toString(16) + '\r\n', 'latin1');
    s.write(chunk);
    const ok = s.write('\r\n', 'latin1');
    s.uncork();
    return ok;
  }

  /** The request body is complete. */
  endBody(chunked: boolean): void {
    if (this.state !== BUSY) return;
    // (with the head still to go, the end goes with it at the end of the turn: flush())
    if (this.batch !== '') this.heldChunked = chunked;
    else if (chunked) this.socket.write(LAST_CHUNK, 'latin1');
    this.requestDone = true;
    // the headers timeout runs from the end of the request
    if (!this.gotHead && this.handler !== null && this.handler.headersTimeoutMs > 0) this.deadline = clock.now + this.handler.headersTimeoutMs;
  }

  /** Resume reading after onUpstreamData returned false. */
  resume(): void {
    if (!this.paused || this.state !== BUSY) return;
    this.paused = false;
    this.lastRead = clock.now;
    readStart(this.socket);
  }

  /** Whether `h` is this connection's request, or pipelined behind it. */
  carries(h: UpstreamHandler): boolean {
    return h === this.handler || this.behind.includes(h);
  }

  /**
   * `h`'s client went away (or its exchange gave up): the connection cannot be reused — unless
   * other requests are pipelined on it, whose answers still come: `h`'s is then read and dropped.
   */
  abort(h: UpstreamHandler): void {
    const i = h === this.handler || this.state !== BUSY ? -1 : this.behind.indexOf(h);
    if (i === -1) {
      // (requests pipelined behind it learn of the close and are sent again)
      if (h === this.handler) this.handler = null;
      this.destroy();
      return;
    }
    this.behind[i] = new Discard(h.headRequest, h.headersTimeoutMs, h.idleTimeoutMs);
  }

  // ---- parser callbacks ------------------------------------------------------------------

  parsedHead(head: ResponseHead): boolean {
    const h = this.handler;
    if (h === null) {
      this.destroy();
      return true;
    }
    if (this.behind.length > 0 && !(head.status >= 200 && head.status !== 204 && head.status !== 304 && !h.headRequest &&
      !head.chunked && head.contentLength >= 0 && head.contentLength <= PIPELINE_MAX_BODY && head.keepAlive)) {
      // not a small answer of known length (or a 1xx first): the requests behind would wait on it
      this.detach();
    }
    const status = head.status;
    if (status < 200) {
      if (status === 100 || status === 101) {
        this.fail(upstreamError(E_UNSOLICITED_1XX, `upstream sent ${status} on a request that asked for neither Expect nor Upgrade`));
        return true;
      }
      // 102 Processing, 103 Early Hints…: nothing to relay
      this.informational = true;
      return false;
    }
    if (head.otherCodings) {
      // forwarded de-chunked, gzip'd bytes would reach the client with nothing saying so
      this.fail(upstreamError('HPE_INVALID_TRANSFER_ENCODING', 'upstream used a transfer coding other than chunked, which the proxy cannot forward'));
      return true;
    }
    this.gotHead = true;
    this.lastRead = clock.now;
    if (!head.keepAlive) this.reusable = false;
    h.onUpstreamHead(head);
    return h.headRequest;
  }

  parsedBody(chunk: Uint8Array): void {
    const h = this.handler;
    if (h === null) return;
    this.lastRead = clock.now;
    if (!h.onUpstreamData(chunk) && !this.paused && this.state === BUSY) {
      this.paused = true;
      readStop(this.socket);
    }
  }

  parsedEnd(): void {
    if (this.informational) {
      this.informational = false;
      return;
    }
    const h = this.handler;
    if (h === null) return;
    this.handler = null;
    this.answered++;
    // an upstream that answered before reading the whole request cannot be reused, nor one whose
    // request body the socket has not all taken yet — in the stream's buffer (the next head goes
    // to libuv directly, past it) or in libuv's queue (a head and first piece written straight to
    // it, flush()): an answer before the app read its whole request, and an app that then reads
    // on takes the rest of this body for the next client's request (a bodiless request never
    // used either)
    const reuse = this.reusable && this.requestDone && (!h.hasBody || (this.socket.writableLength === 0 && queuedBytes(this.socket) === 0));
    h.onUpstreamEnd();
    if (!reuse || this.state !== BUSY) {
      // pipelined requests behind learn of the close (onClose) and are sent again
      this.destroy();
      return;
    }
    // the exchange keeps (copies) what its client has not taken yet: reads may go on
    if (this.paused) {
      this.paused = false;
      readStart(this.socket);
    }
    if (this.behind.length > 0) {
      // the next pipelined request's answer follows (in this read, or a later one)
      const next = this.behind.shift()!;
      if (next instanceof Discard && this.behind.length === 0) {
        // nobody waits for the rest
        this.destroy();
        return;
      }
      this.handler = next;
      this.promoted = true;
      this.gotHead = false;
      this.informational = false;
      this.turnStart = clock.now;
      this.deadline = next.headersTimeoutMs > 0 ? clock.now + next.headersTimeoutMs : 0;
      return;
    }
    // released once this read is handled: bytes after the response's end are the upstream's
    // fault, not the next request's answer
    this.releasePending = true;
  }

  parsedError(err: ParserError): void {
    this.fail(this.resendIfPipelined(err));
  }

  /**
   * A framing error at the start of a pipelined answer: most likely the answer in front said less
   * than it sent — not this request's fault, it is sent again alone (the connection closes).
   */
  private resendIfPipelined(err: ParserError): Error {
    return this.promoted && !this.gotHead ? upstreamError(E_PIPELINE_RESEND, `the answer before this pipelined one was mis-framed (${err.message})`) : err;
  }

  // ---- socket events ----------------------------------------------------------------------

  private onEnd(): void {
    // (first: a pipelined request behind must not become the next to be answered)
    this.reusable = false;
    if (this.state === BUSY && this.unsent) {
      // the upstream closed the connection the turn it was given a request, whose head has not
      // gone out: it never will (the close tells the request, E_NOT_SENT)
      this.destroy();
      return;
    }
    // a response delimited by the end of the connection completes here
    if (this.state === BUSY) {
      const err = this.parser.finish();
      if (err !== null) this.fail(this.resendIfPipelined(err));
      this.releasePending = false;
    }
    if (this.state === IDLE) this.destroy();
  }

  private onClose(): void {
    const wasConnecting = this.state === CONNECTING;
    const h = this.handler;
    this.handler = null;
    this.state = CLOSED;
    unwatch(this);
    // not one byte came since the request started (no head, no 1xx, nothing half-parsed; the
    // write may even have failed)
    const unanswered = !this.sawBytes;
    this.parser.stop();
    const cause = this.pendingError as (Error & { code?: string }) | null;
    if (wasConnecting) {
      const err = upstreamError(cause?.code ?? E_CLOSED, cause?.message ?? 'connection closed while connecting');
      this.owner.connectFailed(this, err);
      return;
    }
    // the pool first: a request sent again below may take the place this connection held
    this.owner.closed(this);
    if (h !== null) {
      let err: UpstreamError;
      if (this.unsent) {
        // nothing of the request went out: it may go anywhere else, whatever its method (the
        // requests pipelined behind it in its batch are told below, as always)
        err = upstreamError(E_NOT_SENT, `upstream closed the connection before the request went out${cause ? ` (${cause.message})` : ''}`);
        // (kept is never empty: made by its first piece)
        err.body = this.held === null ? this.kept : [this.held, ...(this.kept ?? [])];
        this.held = null;
        this.kept = null;
      } else if ((this.promoted && !this.gotHead) || (unanswered && this.behind.length > 0)) {
        // pipelined, and the upstream closed after the answer in front of it; or the first of a
        // batch, and it closed before answering (an app that does not take pipelined requests may
        // close, or reset, the connection on seeing more than one)
        err = upstreamError(E_PIPELINE_RESEND, 'the upstream connection closed before the answer to this pipelined request began');
      } else if (this.answered > 0 && unanswered && clock.now - this.startedAt <= STALE_WINDOW_MS) {
        err = upstreamError(E_STALE, `upstream closed a reused keep-alive connection before answering${cause ? ` (${cause.message})` : ''}`);
      } else {
        err = upstreamError(cause?.code === 'ECONNRESET' ? 'ECONNRESET' : E_CLOSED,
          this.gotHead ? 'upstream closed the connection before the response ended' : `upstream closed the connection before responding${cause ? ` (${cause.message})` : ''}`);
      }
      // (a request sent again runs its dispatch right here: a bug in it must not keep the
      // requests behind from being told)
      tell(h, err, 'handling a closed upstream connection');
    }
    tellResend(this.behind, 'the upstream connection closed before the answer to this pipelined request began');
  }

  /** Timeouts, from the sweep. */
  expire(now: number): void {
    if (this.state === CONNECTING) {
      if (now >= this.deadline) this.failConnect(upstreamError(E_CONNECT_TIMEOUT, 'upstream did not accept the connection in time'));
      return;
    }
    if (this.state !== BUSY) return;
    if (!this.gotHead) {
      // while the body goes out: at most min(headers timeout, 60 s) between two BODY_PROGRESS_BYTES
      // of it and max(headers timeout, 5 min) in all (a client trickling a byte now and then, or an
      // upstream that stopped reading it, would otherwise hold the connection and the endpoint's
      // concurrency slot for good); from the body's end, the headers timeout is the wait for the answer
      if (this.deadline > 0 && now >= this.deadline) {
        this.fail(this.requestDone
          ? upstreamError(E_HEADERS_TIMEOUT, 'upstream did not answer in time')
          : upstreamError(E_REQUEST_TIMEOUT, 'the request body stalled for the request timeout'));
        return;
      }
    } else {
      const idle = this.handler?.idleTimeoutMs ?? 0;
      if (idle > 0 && !this.paused && now - this.lastRead >= idle) {
        this.fail(upstreamError(E_BODY_TIMEOUT, 'upstream stalled in the middle of the body'));
        return;
      }
    }
    // an answer in front still not whole (a slow head or a trickling body): the requests behind go
    // elsewhere, and its route stops pipelining for a while
    if (this.behind.length > 0 && now - this.turnStart >= PIPELINE_STALL_MS) {
      // (the route's: a Discard in front has none, the requests behind are of the same route)
      const h = this.handler;
      (h !== null && !(h instanceof Discard) ? h : this.behind.find((b) => !(b instanceof Discard)))?.onPipelineStall();
      this.detach();
    }
  }

  private failConnect(err: UpstreamError): void {
    this.pendingError = err;
    this.socket.destroy();
  }

  private fail(err: Error): void {
    const h = this.handler;
    this.handler = null;
    this.destroy();
    if (h !== null) tell(h, err as UpstreamError, 'failing a request on its upstream connection');
  }

  destroy(): void {
    if (this.state === CLOSED) return;
    if (this.state !== CONNECTING) this.state = CLOSED;
    this.parser.stop();
    this.socket.destroy();
  }
}
