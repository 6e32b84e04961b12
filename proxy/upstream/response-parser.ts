/**
 * A strict HTTP/1.1 response parser over bytes, written by hand for the proxy's hot path.
 *
 * Why not llhttp (Node's C++ parser, which berth used before): it hands every message over in
 * four C++→JS callbacks (begin, headers, body, complete), each a `MakeCallback` with a property
 * lookup, copies every body chunk into a fresh malloc'd Buffer, and turns every header name and
 * value into a JS string that uWS then converts back to bytes. Measured under wrk that was a
 * fifth of the proxy's user time. Here one socket read is one JS call: the head is parsed in
 * place into offsets (`ResponseHead`), header bytes can go to uWS as they are, and body pieces are
 * views of the read buffer (uWS copies them once, as it must).
 *
 * Strict where framing is at stake, lenient where the web is (what test/proxy/response-parser.test.ts
 * pins, differentially against llhttp):
 * - header lines may end in a bare LF (busybox httpd CGI answers that way; curl and nginx accept
 *   it); a CR anywhere but before LF is an error;
 * - header names are tokens, nothing between name and colon, no obs-fold, no control bytes in
 *   values (HTAB excepted);
 * - one Content-Length of digits only; never with Transfer-Encoding; Transfer-Encoding ending in
 *   `chunked` is chunked, any other is read to the connection's close (and not reused);
 * - chunk sizes are hex within 2^53, chunk data must be followed by a line end;
 * - a head is at most 16 KiB and 128 fields.
 */
import { CORKED_WRITE_MAX } from '../server/uws.js';

export interface ParserError extends Error {
  code: string;
}

export interface ResponseSink {
  /** A complete head. Return true when the response has no body whatever it says (a HEAD request). */
  parsedHead(head: ResponseHead): boolean;
  /** A piece of (de-chunked) body: a view of the caller's buffer (or, for small chunks gathered, of the parser's), valid only during this call. */
  parsedBody(chunk: Uint8Array): void;
  parsedEnd(): void;
  /** Malformed input; the parser ignores everything after it. */
  parsedError(err: ParserError): void;
}

/** Largest response head accepted (Node's default). */
export const MAX_HEAD_BYTES = 16 * 1024;
/** Most header fields in a head. */
export const MAX_FIELDS = 128;

const CR = 13, LF = 10, SP = 32, HTAB = 9, COLON = 58, SEMI = 59;

/** RFC 9110 tchar */
const TCHAR = new Uint8Array(256);
for (let c = 0; c < 256; c++) {
  TCHAR[c] = (c >= 0x30 && c <= 0x39) || (c >= 0x41 && c <= 0x5a) || (c >= 0x61 && c <= 0x7a) || "!#$%&'*+-.^_`|~".includes(String.fromCharCode(c)) ? 1 : 0;
}
/** bytes allowed in a field value / reason phrase / chunk extension: HTAB, SP, VCHAR, obs-text */
const VCHAR = new Uint8Array(256);
for (let c = 0; c < 256; c++) VCHAR[c] = c === HTAB || (c >= 0x20 && c !== 0x7f) ? 1 : 0;
/** hex digit values, 255 = not hex */
const HEX = new Uint8Array(256).fill(255);
for (let c = 0; c < 10; c++) HEX[0x30 + c] = c;
for (let c = 0; c < 6; c++) {
  HEX[0x41 + c] = 10 + c;
  HEX[0x61 + c] = 10 + c;
}

/** Header kinds the parser itself must know (framing); everything else is K_OTHER. */
const K_OTHER = 0, K_CONTENT_LENGTH = 1, K_TRANSFER_ENCODING = 2, K_CONNECTION = 3;

/**
 * A parsed head, in place: offsets into `buf`. Valid during `parsedHead` and the rest of the
 * `execute()` call that delivered it (the buffer is the caller's read buffer, or the parser's
 * own copy of a head that spanned reads).
 */
export class ResponseHead {
  buf: Buffer = EMPTY;
  status = 0;
  versionMinor = 1;
  keepAlive = true;
  contentLength = -1;
  chunked = false;
  /** Connection named something other than close / keep-alive (headers to drop) */
  connectionTokens = false;
  /**
   * Transfer-Encoding said something other than exactly `chunked` (gzip, chunked…): framed as
   * llhttp would, but a proxy cannot pass such a body on (the coding is hop-by-hop).
   */
  otherCodings = false;
  count = 0;
  reasonStart = 0;
  reasonEnd = 0;
  /** per field i: [5i] name start, [5i+1] name end, [5i+2] value start, [5i+3] value end, [5i+4] line end (after LF) */
  readonly offsets = new Int32Array(MAX_FIELDS * 5);

  name(i: number): string {
    return this.buf.toString('latin1', this.offsets[5 * i], this.offsets[5 * i + 1]);
  }
  value(i: number): string {
    return this.buf.toString('latin1', this.offsets[5 * i + 2], this.offsets[5 * i + 3]);
  }
  reason(): string {
    return this.buf.toString('latin1', this.reasonStart, this.reasonEnd);
  }
}

const EMPTY = Buffer.alloc(0);

// parser states
const S_HEAD = 0, S_LENGTH = 1, S_CLOSE = 2, S_CHUNK_SIZE = 3, S_CHUNK_EXT = 4, S_CHUNK_SIZE_LF = 5,
  S_CHUNK_DATA = 6, S_CHUNK_DATA_CR = 7, S_CHUNK_DATA_LF = 8, S_TRAILERS = 9, S_DEAD = 10;

const EXT_NAME_START = 0, EXT_NAME = 1, EXT_VALUE_START = 2, EXT_VALUE = 3, EXT_QUOTED = 4, EXT_ESCAPE = 5, EXT_AFTER_VALUE = 6;

/** Result of parseHead: bytes consumed, or one of these */
const NEED_MORE = -1, FAILED = -2;

const MAX_SAFE = Number.MAX_SAFE_INTEGER;

/**
 * Chunks smaller than this are gathered (copied) and handed on together, one piece per read or
 * per GATHER's worth: an app streaming a byte per chunk made one client write — one send() —
 * per byte, some 40,000 for one 256 KiB read, and one tenant could keep the proxy's thread busy
 * for everyone. 4 KiB, not less: chunks just past a smaller bound (513 bytes) still made some 500
 * sends per read; copying 4 KiB costs less than one send. Larger chunks go on as views of the
 * read buffer (at most 64 sends per 256 KiB read). One buffer for the thread: it is always
 * emptied before execute() returns.
 */
const SMALL_CHUNK = 4096;
const GATHER = Buffer.allocUnsafe(CORKED_WRITE_MAX);
let gathered = 0;

function parserError(code: string, message: string): ParserError {
  const e = new Error(message) as ParserError;
  e.code = code;
  e.name = 'HTTPParserError';
  return e;
}

export class ResponseParser {
  private state = S_HEAD;
  private readonly head = new ResponseHead();
  /** a head that spanned reads, kept until it is complete */
  private carry: Buffer | null = null;
  private carryLen = 0;
  /** body bytes left in a Content-Length body or the current chunk */
  private remaining = 0;
  private sizeDigits = 0;
  /** trailers: bytes of the current trailer line so far (0 = at a line start), and of all trailers */
  private lineLen = 0;
  private trailerBytes = 0;
  private sawCR = false;
  /** where in a chunk extension (EXT_*) */
  private ext = 0;
  /** how much of a trailer field's name matched `content-length` (-1: not it) */
  private trailerCL = 0;

  constructor(private readonly sink: ResponseSink) {}

  /** Parse buf[start, end). */
  execute(buf: Buffer, start: number, end: number): void {
    // (nothing left over from a read that threw half-way: those bytes were another connection's)
    gathered = 0;
    this.run(buf, start, end);
    if (gathered > 0) this.flushGathered();
  }

  /** Hand on the small chunks gathered so far (not once the parser is dead: nothing goes on after that). */
  private flushGathered(): void {
    const n = gathered;
    gathered = 0;
    if (this.state !== S_DEAD) this.sink.parsedBody(new Uint8Array(GATHER.buffer, GATHER.byteOffset, n));
  }

  private run(buf: Buffer, start: number, end: number): void {
    // body views are made on the ArrayBuffer (a plain Uint8Array costs a third of Buffer#subarray)
    const ab = buf.buffer;
    const base = buf.byteOffset;
    let p = start;
    while (p < end) {
      const s = this.state;
      if (s === S_HEAD) {
        if (this.carry !== null) {
          p = this.continueHead(buf, p, end);
          if (p < 0) return;
          continue;
        }
        const n = this.parseHead(buf, p, end);
        if (n === NEED_MORE) {
          this.keep(buf, p, end);
          return;
        }
        if (n === FAILED) return;
        p = n;
      } else if (s === S_LENGTH) {
        p = this.body(ab, base, p, end, S_HEAD);
        if (p < 0 || this.state === S_DEAD) return;
        this.sink.parsedEnd();
      } else if (s === S_CLOSE) {
        this.sink.parsedBody(new Uint8Array(ab, base + p, end - p));
        return;
      } else if (s === S_CHUNK_DATA) {
        const avail = end - p;
        const n = avail < this.remaining ? avail : this.remaining;
        if (n < SMALL_CHUNK) {
          if (gathered + n > GATHER.length) {
            this.flushGathered();
            if (this.state === S_DEAD) return; // (the sink stopped the parser)
          }
          buf.copy(GATHER, gathered, p, p + n);
          gathered += n;
          p += n;
          if ((this.remaining -= n) === 0) this.state = S_CHUNK_DATA_CR;
          continue;
        }
        if (gathered > 0) {
          this.flushGathered();
          if (this.state === S_DEAD) return;
        }
        p = this.body(ab, base, p, end, S_CHUNK_DATA_CR);
        if (p < 0) return;
      } else if (s === S_DEAD) {
        return;
      } else {
        p = this.chunkFraming(buf, p, end);
      }
    }
  }

  /**
   * Hand on up to `remaining` body bytes from p (a Content-Length body or a chunk). Returns where
   * parsing goes on, in state `after`, or -1 when the read ended first.
   */
  private body(ab: ArrayBufferLike, base: number, p: number, end: number, after: number): number {
    const avail = end - p;
    if (avail < this.remaining) {
      this.remaining -= avail;
      this.sink.parsedBody(new Uint8Array(ab, base + p, avail));
      return -1;
    }
    const stop = p + this.remaining;
    this.remaining = 0;
    this.state = after;
    this.sink.parsedBody(new Uint8Array(ab, base + p, stop - p));
    return stop;
  }

  /** The peer closed the connection. */
  finish(): ParserError | null {
    const s = this.state;
    if (s === S_DEAD) return null;
    if (s === S_CLOSE) {
      this.state = S_HEAD;
      this.sink.parsedEnd();
      return null;
    }
    if (this.idle) return null;
    this.state = S_DEAD;
    return parserError('HPE_INVALID_EOF_STATE', 'upstream closed the connection in the middle of a response');
  }

  /** Between messages, holding nothing (no partial head). */
  get idle(): boolean {
    return this.state === S_HEAD && this.carry === null;
  }

  /** Ignore everything from now on (the connection is being closed). */
  stop(): void {
    this.state = S_DEAD;
    this.carry = null;
  }

  // ---- head ------------------------------------------------------------------------------

  /** A head that started in an earlier read: append, and parse the whole once it is complete. */
  private continueHead(buf: Buffer, p: number, end: number): number {
    const room = MAX_HEAD_BYTES + 4 - this.carryLen;
    const take = Math.min(end - p, room);
    let c = this.carry!;
    if (c.length < this.carryLen + take) {
      const bigger = Buffer.allocUnsafe(Math.min(MAX_HEAD_BYTES + 4, Math.max(c.length * 2, this.carryLen + take)));
      c.copy(bigger, 0, 0, this.carryLen);
      c = this.carry = bigger;
    }
    buf.copy(c, this.carryLen, p, p + take);
    const before = this.carryLen;
    this.carryLen += take;
    const n = this.parseHead(c, 0, this.carryLen);
    if (n === NEED_MORE) {
      if (take < end - p) this.fail('HPE_HEADER_OVERFLOW', `response head larger than ${MAX_HEAD_BYTES} bytes`);
      return -1;
    }
    if (n === FAILED) return -1;
    this.carry = null;
    this.carryLen = 0;
    // the head ended inside this read: continue after it
    return p + (n - before);
  }

  private keep(buf: Buffer, p: number, end: number): void {
    const n = end - p;
    if (n > MAX_HEAD_BYTES) {
      this.fail('HPE_HEADER_OVERFLOW', `response head larger than ${MAX_HEAD_BYTES} bytes`);
      return;
    }
    const c = Buffer.allocUnsafe(Math.max(1024, n * 2));
    buf.copy(c, 0, p, end);
    this.carry = c;
    this.carryLen = n;
  }

  /**
   * Parse a whole head starting at p. Returns the offset after it, NEED_MORE when the head is
   * not complete in [p, end), or FAILED (the sink has heard).
   */
  private parseHead(b: Buffer, start: number, end: number): number {
    const h = this.head;
    if (end - start > MAX_HEAD_BYTES + 4) end = start + MAX_HEAD_BYTES + 4;
    // status line: HTTP/1.x SP 3DIGIT [SP reason] (CR)LF
    if (end - start < 13) return this.shortHead(b, start, end);
    if (b[start] !== 0x48 || b[start + 1] !== 0x54 || b[start + 2] !== 0x54 || b[start + 3] !== 0x50 || b[start + 4] !== 0x2f ||
      b[start + 5] !== 0x31 || b[start + 6] !== 0x2e) return this.fail('HPE_INVALID_CONSTANT', 'response does not start with HTTP/1.');
    const minor = b[start + 7] - 0x30;
    if ((minor !== 0 && minor !== 1) || b[start + 8] !== SP) return this.fail('HPE_INVALID_VERSION', 'unsupported HTTP version in the status line');
    const d0 = b[start + 9] - 0x30, d1 = b[start + 10] - 0x30, d2 = b[start + 11] - 0x30;
    if (d0 < 1 || d0 > 9 || d1 < 0 || d1 > 9 || d2 < 0 || d2 > 9) return this.fail('HPE_INVALID_STATUS', 'invalid status code');
    const status = d0 * 100 + d1 * 10 + d2;
    let p = start + 12;
    let c = b[p];
    let reasonStart = p, reasonEnd = p;
    if (c === SP) {
      p++;
      reasonStart = p;
      while (p < end && VCHAR[(c = b[p])] === 1) p++;
      if (p === end) return NEED_MORE;
      reasonEnd = p;
    } else if (c !== CR && c !== LF) return this.fail('HPE_INVALID_STATUS', 'invalid status line');
    // a bare LF ends a line too (lenient, as curl and nginx are)
    if (c === CR) {
      if (++p === end) return NEED_MORE;
      if (b[p] !== LF) return this.fail('HPE_STRICT', 'CR not followed by LF in the status line');
    } else if (c !== LF) return this.fail('HPE_INVALID_STATUS', 'invalid byte in the reason phrase');
    p++;

    // header fields
    let count = 0;
    let contentLength = -1;
    let teSeen = false, chunked = false, connClose = false, connKeepAlive = false, connTokens = false, otherCodings = false;
    const off = h.offsets;
    for (;;) {
      if (p >= end) return NEED_MORE;
      c = b[p];
      if (c === CR) {
        if (p + 1 >= end) return NEED_MORE;
        if (b[p + 1] !== LF) return this.fail('HPE_STRICT', 'CR not followed by LF after the header fields');
        p += 2;
        break;
      }
      if (c === LF) {
        p++;
        break;
      }
      if (c === SP || c === HTAB) return this.fail('HPE_INVALID_HEADER_TOKEN', 'obsolete line folding in a response header');
      if (count === MAX_FIELDS) return this.fail('HPE_HEADER_OVERFLOW', `more than ${MAX_FIELDS} response header fields`);
      // name
      const nameStart = p;
      while (p < end && TCHAR[b[p]] === 1) p++;
      if (p === end) return NEED_MORE;
      if (b[p] !== COLON || p === nameStart) return this.fail('HPE_INVALID_HEADER_TOKEN', 'invalid response header name');
      const nameEnd = p;
      p++;
      // value: OWS value OWS
      while (p < end && ((c = b[p]) === SP || c === HTAB)) p++;
      const valueStart = p;
      while (p < end && VCHAR[b[p]] === 1) p++;
      if (p === end) return NEED_MORE;
      let valueEnd = p;
      while (valueEnd > valueStart && ((c = b[valueEnd - 1]) === SP || c === HTAB)) valueEnd--;
      c = b[p];
      if (c === CR) {
        if (++p === end) return NEED_MORE;
        if (b[p] !== LF) return this.fail('HPE_STRICT', 'CR not followed by LF in a response header');
      } else if (c !== LF) return this.fail('HPE_INVALID_HEADER_TOKEN', 'control byte in a response header value');
      p++;
      const i5 = count * 5;
      off[i5] = nameStart;
      off[i5 + 1] = nameEnd;
      off[i5 + 2] = valueStart;
      off[i5 + 3] = valueEnd;
      off[i5 + 4] = p;
      const kind = framingKind(b, nameStart, nameEnd);
      count++;
      if (kind === K_OTHER) continue;
      if (kind === K_CONTENT_LENGTH) {
        if (contentLength !== -1) return this.fail('HPE_UNEXPECTED_CONTENT_LENGTH', 'duplicate Content-Length');
        contentLength = digits(b, valueStart, valueEnd);
        if (contentLength < 0) return this.fail('HPE_INVALID_CONTENT_LENGTH', 'invalid Content-Length');
      } else if (kind === K_TRANSFER_ENCODING) {
        teSeen = true;
        // the last coding decides: chunked or read to close (empty list elements do not count)
        const last = lastCoding(b, valueStart, valueEnd);
        if (last !== -1) chunked = last === 1;
        if (valueEnd - valueStart !== 7 || !eqLower(b, valueStart, CHUNKED)) otherCodings = true;
      } else {
        // Connection: close / keep-alive / names of headers to drop
        let t = valueStart;
        while (t < valueEnd) {
          while (t < valueEnd && ((c = b[t]) === SP || c === HTAB || c === 0x2c)) t++;
          const ts = t;
          while (t < valueEnd && b[t] !== 0x2c) t++;
          let te = t;
          while (te > ts && ((c = b[te - 1]) === SP || c === HTAB)) te--;
          const len = te - ts;
          if (len === 5 && eqLower(b, ts, CLOSE)) connClose = true;
          else if (len === 10 && eqLower(b, ts, KEEP_ALIVE)) connKeepAlive = true;
          else if (len > 0) connTokens = true;
        }
      }
    }
    if (teSeen && contentLength !== -1) return this.fail('HPE_UNEXPECTED_CONTENT_LENGTH', 'Content-Length with Transfer-Encoding');

    h.buf = b;
    h.status = status;
    h.versionMinor = minor;
    h.count = count;
    h.reasonStart = reasonStart;
    h.reasonEnd = reasonEnd;
    h.contentLength = contentLength;
    h.chunked = teSeen && chunked;
    h.connectionTokens = connTokens;
    h.otherCodings = otherCodings;
    let keepAlive = minor === 1 ? !connClose : connKeepAlive && !connClose;
    // a body that only the connection's end delimits
    const closeDelimited = (teSeen && !chunked) || (!teSeen && contentLength === -1);
    const noBodyStatus = status < 200 || status === 204 || status === 304;
    if (closeDelimited && !noBodyStatus) keepAlive = false;
    h.keepAlive = keepAlive;

    const skipBody = this.sink.parsedHead(h);
    if (this.state === S_DEAD) return FAILED;
    if (skipBody || noBodyStatus || contentLength === 0) {
      this.sink.parsedEnd();
    } else if (teSeen && chunked) {
      this.state = S_CHUNK_SIZE;
      this.sizeDigits = 0;
      this.remaining = 0;
    } else if (contentLength > 0) {
      this.state = S_LENGTH;
      this.remaining = contentLength;
    } else {
      this.state = S_CLOSE;
    }
    return p;
  }

  /** Fewer than 13 bytes: enough to tell junk early, else wait. */
  private shortHead(b: Buffer, start: number, end: number): number {
    for (let i = start, j = 0; i < end && j < HTTP1.length; i++, j++) {
      if (b[i] !== HTTP1[j]) return this.fail('HPE_INVALID_CONSTANT', 'response does not start with HTTP/1.');
    }
    return NEED_MORE;
  }

  // ---- chunked framing -------------------------------------------------------------------

  /** Sizes, extensions, line ends and trailers: byte by byte (a few bytes per chunk). */
  private chunkFraming(b: Buffer, p: number, end: number): number {
    while (p < end) {
      const c = b[p];
      const s = this.state;
      if (s === S_CHUNK_SIZE) {
        const v = HEX[c];
        if (v !== 255) {
          if (++this.sizeDigits > 14) return this.dead('HPE_INVALID_CHUNK_SIZE', 'chunk size too large');
          this.remaining = this.remaining * 16 + v;
          if (this.remaining > MAX_SAFE) return this.dead('HPE_INVALID_CHUNK_SIZE', 'chunk size too large');
          p++;
          continue;
        }
        if (this.sizeDigits === 0) return this.dead('HPE_INVALID_CHUNK_SIZE', 'invalid chunk size');
        // the size line ends in CRLF (as llhttp insists, even where it lets a bare LF end a header line)
        if (c === SEMI) {
          this.state = S_CHUNK_EXT;
          this.ext = EXT_NAME_START;
          p++;
        } else if (c === CR) {
          this.state = S_CHUNK_SIZE_LF;
          p++;
        } else return this.dead('HPE_INVALID_CHUNK_SIZE', 'invalid chunk size');
      } else if (s === S_CHUNK_EXT) {
        // chunk-ext = *( ";" token [ "=" ( token / quoted-string ) ] ), no whitespace: ignored, but well-formed
        const x = this.ext;
        if (x === EXT_QUOTED) {
          if (c === 0x22) this.ext = EXT_AFTER_VALUE;
          else if (c === 0x5c) this.ext = EXT_ESCAPE;
          else if (c !== HTAB && (c < 0x20 || c > 0x7e)) return this.dead('HPE_STRICT', 'invalid byte in a chunk extension');
        } else if (x === EXT_ESCAPE) {
          if (c !== HTAB && (c < 0x20 || c > 0x7e)) return this.dead('HPE_STRICT', 'invalid byte in a chunk extension');
          this.ext = EXT_QUOTED;
        } else if (TCHAR[c] === 1 && x !== EXT_AFTER_VALUE) {
          this.ext = x === EXT_NAME_START || x === EXT_NAME ? EXT_NAME : EXT_VALUE;
        } else if (c === 0x22 && x === EXT_VALUE_START) {
          this.ext = EXT_QUOTED;
        } else if (c === 0x3d && x === EXT_NAME) {
          this.ext = EXT_VALUE_START;
        } else if (c === SEMI && (x === EXT_NAME || x === EXT_VALUE || x === EXT_AFTER_VALUE)) {
          this.ext = EXT_NAME_START;
        } else if (c === CR && x !== EXT_NAME_START) {
          this.state = S_CHUNK_SIZE_LF;
        } else if (c === LF && x !== EXT_NAME_START) {
          // llhttp lets a bare LF end a size line with an extension (not one without)
          p++;
          this.sizeLineDone();
          return p;
        } else return this.dead('HPE_STRICT', 'invalid chunk extension');
        p++;
      } else if (s === S_CHUNK_SIZE_LF) {
        if (c !== LF) return this.dead('HPE_STRICT', 'CR not followed by LF after a chunk size');
        p++;
        this.sizeLineDone();
        return p;
      } else if (s === S_CHUNK_DATA_CR) {
        if (c === CR) {
          this.state = S_CHUNK_DATA_LF;
          p++;
        } else if (c === LF) {
          this.state = S_CHUNK_SIZE;
          this.sizeDigits = 0;
          p++;
        } else return this.dead('HPE_STRICT', 'chunk data not followed by a line end');
      } else if (s === S_CHUNK_DATA_LF) {
        if (c !== LF) return this.dead('HPE_STRICT', 'CR not followed by LF after chunk data');
        this.state = S_CHUNK_SIZE;
        this.sizeDigits = 0;
        this.remaining = 0;
        p++;
      } else if (s === S_TRAILERS) {
        // trailer fields: validated loosely as header lines (token, colon, value bytes), not kept
        if (++this.trailerBytes > MAX_HEAD_BYTES) return this.dead('HPE_HEADER_OVERFLOW', 'response trailers too large');
        if (this.sawCR) {
          if (c !== LF) return this.dead('HPE_STRICT', 'CR not followed by LF in the trailers');
          this.sawCR = false;
        }
        if (c === CR) {
          this.sawCR = true;
        } else if (c === LF) {
          p++;
          if (this.lineLen > 0) return this.dead('HPE_INVALID_HEADER_TOKEN', 'trailer field without a colon');
          if (this.lineLen === 0) {
            // the empty line: the message is complete
            if (gathered > 0) {
              this.flushGathered();
              if (this.state === S_DEAD) return end;
            }
            this.state = S_HEAD;
            this.sink.parsedEnd();
            return p;
          }
          this.lineLen = 0;
          this.trailerCL = 0;
          continue;
        } else if (this.lineLen === 0 && (c === SP || c === HTAB || c === COLON)) {
          return this.dead('HPE_INVALID_HEADER_TOKEN', 'invalid trailer field');
        } else if (VCHAR[c] !== 1) {
          return this.dead('HPE_INVALID_HEADER_TOKEN', 'control byte in a trailer field');
        } else {
          // a name must be tokens up to the colon
          if (this.lineLen >= 0) {
            if (c === COLON) {
              // a Content-Length among the trailers is refused (llhttp does; it can only confuse)
              if (this.trailerCL === 14) return this.dead('HPE_INVALID_CONTENT_LENGTH', 'Content-Length in the trailers');
              this.lineLen = -1;
            } else if (TCHAR[c] !== 1) return this.dead('HPE_INVALID_HEADER_TOKEN', 'invalid trailer field name');
            else {
              const t = this.trailerCL;
              this.trailerCL = t >= 0 && t < 14 && (c | 0x20) === CONTENT_LENGTH[t] ? t + 1 : -1;
              this.lineLen++;
            }
          }
        }
        p++;
      } else {
        return end;
      }
    }
    return p;
  }

  private sizeLineDone(): void {
    if (this.remaining === 0) {
      this.state = S_TRAILERS;
      this.lineLen = 0;
          this.trailerCL = 0;
      this.trailerBytes = 0;
      this.sawCR = false;
    } else {
      this.state = S_CHUNK_DATA;
    }
  }

  // ---- errors ----------------------------------------------------------------------------

  private fail(code: string, message: string): number {
    this.dead(code, message);
    return FAILED;
  }

  private dead(code: string, message: string): number {
    if (this.state !== S_DEAD) {
      // (what was parsed before the error goes on first, in order; unless that stopped the parser)
      if (gathered > 0) {
        this.flushGathered();
        if (this.state === S_DEAD) return Number.MAX_SAFE_INTEGER;
      }
      this.state = S_DEAD;
      this.carry = null;
      this.sink.parsedError(parserError(code, message));
    }
    return Number.MAX_SAFE_INTEGER;
  }
}

const HTTP1 = Buffer.from('HTTP/1.', 'latin1');
const CHUNKED = Buffer.from('chunked', 'latin1');
const CLOSE = Buffer.from('close', 'latin1');
const KEEP_ALIVE = Buffer.from('keep-alive', 'latin1');
const CONTENT_LENGTH = Buffer.from('content-length', 'latin1');
const TRANSFER_ENCODING = Buffer.from('transfer-encoding', 'latin1');
const CONNECTION = Buffer.from('connection', 'latin1');

/** Case-insensitive compare of b[at…] with a lower-case ASCII name. */
export function eqLower(b: Uint8Array, at: number, name: Uint8Array): boolean {
  for (let i = 0; i < name.length; i++) {
    let c = b[at + i];
    if (c >= 65 && c <= 90) c |= 0x20;
    if (c !== name[i]) return false;
  }
  return true;
}

function framingKind(b: Buffer, s: number, e: number): number {
  const n = e - s;
  if (n === 14) return eqLower(b, s, CONTENT_LENGTH) ? K_CONTENT_LENGTH : K_OTHER;
  if (n === 10) return eqLower(b, s, CONNECTION) ? K_CONNECTION : K_OTHER;
  if (n === 17) return eqLower(b, s, TRANSFER_ENCODING) ? K_TRANSFER_ENCODING : K_OTHER;
  return K_OTHER;
}

/** 1*DIGIT within 2^53, else -1 */
function digits(b: Buffer, s: number, e: number): number {
  if (s === e || e - s > 16) return -1;
  let n = 0;
  for (let i = s; i < e; i++) {
    const d = b[i] - 48;
    if (d < 0 || d > 9) return -1;
    n = n * 10 + d;
  }
  return n > MAX_SAFE ? -1 : n;
}

/**
 * The last element of the list b[s, e) (trimmed): 1 = `chunked`, 0 = anything else (`chunked,`
 * included, as llhttp reads it), -1 = an empty field (ignored, as llhttp does).
 */
function lastCoding(b: Buffer, s: number, e: number): number {
  if (s === e) return -1;
  let t0 = e;
  while (t0 > s && b[t0 - 1] !== 0x2c) t0--;
  while (t0 < e && (b[t0] === SP || b[t0] === HTAB)) t0++;
  return e - t0 === 7 && eqLower(b, t0, CHUNKED) ? 1 : 0;
}
