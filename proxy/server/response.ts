/**
 * The client's response, step 7 of the request path: the upstream's head re-framed into one uWS
 * call, the body written with uWS's backpressure (the upstream's reads stop while the client's
 * socket is full), the end; and the answers the proxy makes from its fallback cache. The Exchange
 * (exchange.ts) extends this class: it decides what to send, this writes it.
 *
 * uWS rules respected here: every write outside a uWS callback is corked (module-level
 * trampolines, no closures), the response is never touched after onAborted or after it ended.
 */
import { platformCookie } from '../../shared/session-cookie.js';
import type { HttpResponse } from 'uWebSockets.js';
import type { CachedResponse } from '../resilience/fallback-cache.js';
import { MAX_ENTRY_BYTES } from '../resilience/fallback-cache.js';
import type { Route } from '../routing/route.js';
import { MAX_FIELDS, type ResponseHead } from '../upstream/response-parser.js';
import { clock } from '../upstream/timers.js';
import {
  H_CACHE_CONTROL, H_CONNECTION, H_DROP, H_PASS, H_SET_COOKIE, H_SW_ALLOWED, H_VARY, STATUS_TEXT,
  classifyBytes, classifyHeader, connectionTokens, forbidsStore, statusLine, varyCacheable,
} from './headers.js';
import { AFFINITY_COOKIE } from './admission.js';
import { ForwardedRequest } from './request-headers.js';
import { internalError, sendError } from './respond.js';
import { CORKED_WRITE_MAX } from './uws.js';

// ---- cork trampolines (no per-call closures) ---------------------------------------------

let cur: ClientResponse;
let curChunk: Uint8Array;
let fallbackEntry: CachedResponse;
function corkedHeadOnly(): void { cur.writeHead(); }
function corkedData(): void {
  headInCork = 0;
  cur.writeData(curChunk);
}
function corkedComplete(): void { cur.writeComplete(); }
function corkedFallback(): void { cur.writeFallback(fallbackEntry); }

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
 * Bytes of head already in the cork buffer of the write being made (writeHead() sets it; a
 * fallback answer's headers, of unknown size, count as a full buffer).
 */
let headInCork = 0;

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

/** keyOrigin()'s last TLS origin, and the host it is of */
let tlsHost = '';
let tlsOrigin = '';

export abstract class ClientResponse extends ForwardedRequest {
  aborted = false;
  resDone = false;
  /** the upstream has nothing more to send (ended, failed, or there was none: a fallback) */
  upstreamDone = false;
  headPending = false;
  backpressured = false;
  writableHooked = false;
  status = 0;
  statusText = '';
  /** the upstream's head, in place: valid only within the read that brought it (see writeHead) */
  head: ResponseHead | null = null;
  /** name/value strings of the response's end-to-end headers, kept only for a fallback capture */
  keptHeaders: string[] | null = null;
  contentLength = -1;
  noBody = false;
  pendingChunk: Buffer | null = null;
  pendingBase = 0;
  /** body bytes uWS has taken (its write offset, kept here to spare a call per chunk) */
  bodySent = 0;
  /** body bytes sent to the client (metering) */
  bytesOut = 0;
  // fallback capture
  capture: Buffer[] | null = null;
  captureBytes = 0;
  /** the response said `Vary: Accept-Encoding`: the fallback key includes the request's value */
  varyEncoding = false;
  /**
   * The Host was sent in its normal form (entry.ts sets it): only then is an answer kept for the
   * fallback cache or served from it. An app that builds a page from its Host (absolute links)
   * answered `Host: shop.example.com:31337` with links to that port, which a copy keyed by
   * `shop.example.com` served to everyone during an outage; keyed by the Host as sent instead,
   * each port and letter case made a key of its own, and a client rotating them evicted the
   * real copies. (Browsers send the normal form on ports 80 and 443.)
   */
  canonicalHost = false;
  /** why the proxy answered or ended the way it did ('' when the upstream's answer went through) */
  reason = '';
  /** the client came over TLS: the affinity cookie is Secure, and the fallback key says so */
  secure = false;
  /** the key to hand the client in Set-Cookie (its cookie named another endpoint, or none) */
  setAffinity: string | null = null;

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
  }

  /** The response ended (or failed): books, metering and the access log (exchange.ts). */
  abstract finish(status: number): void;
  /** The client's socket drained: the upstream's reads may go on. */
  protected abstract resumeUpstream(): void;

  /**
   * A response head from the upstream (within the read that brought it): which fields pass,
   * whether a fallback copy is kept. It is written with the first body piece (or the end) when
   * they came in the same read — one syscall for small responses — else by flushHead() at the
   * end of the read.
   */
  protected acceptHead(head: ResponseHead): void {
    const status = head.status;
    this.status = status;
    if (STATUS_TEXT[status] === undefined) this.statusText = head.reason();
    if (this.aborted) return;
    this.head = head;
    this.contentLength = head.chunked ? -1 : head.contentLength;
    let cacheable = status === 200 && this.method === 'GET' && !this.hasAuth && !this.noStore && this.route.cache.config.enabled;
    const b = head.buf;
    const off = head.offsets;
    const n = head.count;
    /** the field names the answer's Connection fields list: hop-by-hop too */
    let dropNames: string[] | null = null;
    for (let i = 0; i < n; i++) {
      const c = classifyBytes(b, off[5 * i], off[5 * i + 1]);
      fieldClass[i] = c;
      if (c === H_PASS) continue;
      if (c === H_SW_ALLOWED) fieldClass[i] = this.viaPath ? H_DROP : H_PASS;
      else if (c === H_SET_COOKIE) {
        cacheable = false;
        // on /apps/{host}/ an app may not set the control plane's cookies (same host name), nor a
        // nameless one a browser sends back looking like them
        if (this.viaPath && platformCookie(head.value(i))) fieldClass[i] = H_DROP;
      }
      else if (c === H_CACHE_CONTROL) { if (cacheable && forbidsStore(head.value(i))) cacheable = false; }
      else if (c === H_CONNECTION) {
        if (head.connectionTokens) {
          // every Connection field counts: the names of all of them are dropped
          const toks = connectionTokens(head.value(i));
          if (toks.length > 0) dropNames = dropNames === null ? toks : dropNames.concat(toks);
        }
      } else if (c === H_VARY && cacheable) {
        const v = varyCacheable(head.value(i));
        if (v === 0) cacheable = false;
        else if (v === 2) this.varyEncoding = true;
      }
    }
    // (rare: a second pass, so that writing the head and keeping a copy both just skip H_DROP)
    if (dropNames !== null) for (let i = 0; i < n; i++) if (dropNames.includes(head.name(i).toLowerCase())) fieldClass[i] = H_DROP;
    this.noBody = this.method === 'HEAD' || status === 204 || status === 304;
    if (cacheable && this.canonicalHost && this.contentLength <= MAX_ENTRY_BYTES && this.route.cache.wants(this.keyOrigin(), this.path, this.varyEncoding, this.acceptEncoding, clock.now)) {
      this.capture = [];
      this.keptHeaders = this.endToEndHeaders(head);
    }
    this.headPending = true;
  }

  /** The end of the read that brought the head, which brought no body with it. */
  flushHead(): void {
    if (this.aborted || this.resDone) {
      this.headPending = false;
      return;
    }
    cur = this;
    this.res.cork(corkedHeadOnly);
  }

  /** A piece of the upstream's body (a view of the shared read buffer). False: stop reading. */
  protected forward(chunk: Uint8Array): boolean {
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

  /** The upstream's body ended: a fallback copy is kept if one was captured whole; the response ends. */
  protected complete(): void {
    if (this.capture !== null && (this.contentLength < 0 || this.captureBytes === this.contentLength)) {
      this.storeFallback();
    }
    if (this.resDone) return;
    cur = this;
    this.res.cork(corkedComplete);
  }

  // ---- writing (always inside cork) -------------------------------------------------------

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
    headInCork = pos;
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
      if (this.bodySent === 0 && chunk.length === this.contentLength && headInCork + chunk.length <= CORKED_WRITE_MAX) {
        // the whole body in one piece that fits the cork buffer with the head (most answers):
        // end() frames it alike (Content-Length: its length) without tryEnd's [ok, done] array
        this.resDone = true;
        res.end(chunk);
        this.finish(this.status);
        return;
      }
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
    if (!this.upstreamDone) this.resumeUpstream();
    return true;
  }

  // ---- the fallback cache (resilience/fallback-cache.ts) -----------------------------------

  /**
   * The fallback key's origin: the host, after `!` when the client came over TLS (a page an app
   * built from X-Forwarded-Proto links to its own scheme; `!` is in no host).
   */
  private keyOrigin(): string {
    if (!this.secure) return this.host;
    // (the last one made, kept: a route served over TLS does not build a string per response)
    if (this.host !== tlsHost) {
      tlsHost = this.host;
      tlsOrigin = '!' + this.host;
    }
    return tlsOrigin;
  }

  /** Fallback key: origin + path (+ the request's Accept-Encoding when the response varies on it). */
  cacheKey(): string {
    return this.varyEncoding ? this.keyOrigin() + this.path + '\n' + this.acceptEncoding : this.keyOrigin() + this.path;
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
  protected serveFallback(): boolean {
    if ((this.method !== 'GET' && this.method !== 'HEAD') || this.hasAuth || !this.canonicalHost) return false;
    const cache = this.route.cache;
    const key = this.keyOrigin() + this.path;
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
    for (let i = 0; i < h.length; i += 2) {
      if (this.viaPath && classifyHeader(h[i]) === H_SW_ALLOWED) continue;
      res.writeHeader(h[i], h[i + 1]);
    }
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
    headInCork = CORKED_WRITE_MAX;
    this.writeData(hit.body);
  }


  /** An answer of the proxy's own (an error): the response ends here. */
  protected fail(status: number, code: string, message: string): void {
    this.reason = code;
    this.resDone = true;
    sendError(this.res, status, code, this.requestId, message, this.method === 'HEAD');
    this.finish(status);
  }

}
