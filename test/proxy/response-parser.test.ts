/**
 * Pins proxy/upstream/response-parser.ts, the proxy's hand-written HTTP/1.1 response parser:
 * status line, line endings (bare LF accepted in the head, a lone CR never), header-field
 * validation, Content-Length / Transfer-Encoding framing, bodiless statuses and HEAD, chunked
 * bodies and trailers, several messages per read, the 16 KiB head limit and finish(). Every case
 * is parsed whole, byte by byte, at random splits and through one reused read buffer, and must
 * come out the same each time. Finally a seeded differential run against Node 20's llhttp (the
 * parser it replaces): whatever we accept, llhttp accepts the same way; where we are stricter it
 * must be one of the deliberate strictnesses.
 */
import { createRequire } from 'node:module';
import { describe, expect, it } from 'vitest';
import { ResponseParser, type ParserError, type ResponseHead, type ResponseSink } from '../../proxy/upstream/response-parser.js';

// ---- recording our parser ----------------------------------------------------------------------

interface Msg {
  status: number;
  minor: number;
  reason: string;
  keepAlive: boolean;
  contentLength: number;
  chunked: boolean;
  headers: Array<[string, string]>;
  body: string;
  complete: boolean;
}

interface Run {
  msgs: Msg[];
  /** code of the error sent to parsedError, or returned by finish() */
  error: string | null;
  errorFrom: 'execute' | 'finish' | null;
  /** index of the execute() piece during which parsedError came (byte offset when fed byte by byte) */
  errorPiece: number;
  /** sink-protocol breaches: callbacks out of order, after an error, … */
  violations: string[];
}

type HeadPolicy = boolean | ((status: number) => boolean);

function readHead(h: ResponseHead): Msg {
  const headers: Array<[string, string]> = [];
  for (let i = 0; i < h.count; i++) headers.push([h.name(i), h.value(i)]);
  return {
    status: h.status, minor: h.versionMinor, reason: h.reason(), keepAlive: h.keepAlive,
    contentLength: h.contentLength, chunked: h.chunked, headers, body: '', complete: false,
  };
}

/** A sink recording what it hears into `run`; `piece()` tells it which execute() call is running. */
function recorder(run: Run, head: HeadPolicy, piece: () => number): ResponseSink {
  let current: Msg | null = null;
  let parts: Buffer[] = [];
  const dead = (what: string): boolean => {
    if (run.error !== null) run.violations.push(`${what} after parsedError`);
    return run.error !== null;
  };
  return {
    parsedHead(h) {
      if (dead('parsedHead')) return false;
      if (current !== null) run.violations.push('parsedHead before the previous parsedEnd');
      current = readHead(h);
      parts = [];
      run.msgs.push(current);
      return typeof head === 'function' ? head(h.status) : head;
    },
    parsedBody(chunk) {
      if (dead('parsedBody')) return;
      if (current === null) {
        run.violations.push('parsedBody outside a message');
        return;
      }
      parts.push(Buffer.from(chunk)); // a view of the caller's buffer: copy it
      current.body = Buffer.concat(parts).toString('latin1');
    },
    parsedEnd() {
      if (dead('parsedEnd')) return;
      if (current === null) {
        run.violations.push('parsedEnd outside a message');
        return;
      }
      current.complete = true;
      current = null;
    },
    parsedError(err: ParserError) {
      if (run.error !== null) {
        run.violations.push('parsedError twice');
        return;
      }
      if (!(err instanceof Error) || !/^HPE_/.test(err.code)) run.violations.push(`error without an HPE_ code: ${String(err.code)}`);
      run.error = err.code;
      run.errorFrom = 'execute';
      run.errorPiece = piece();
    },
  };
}

interface FeedOptions {
  head?: HeadPolicy;
  /** call finish() after the input (default true) */
  finish?: boolean;
  /** copy every piece into one read buffer, overwritten (with garbage first) before each execute() */
  reuse?: boolean;
}

/** Parse `input` cut at `cuts` (sorted offsets strictly inside it). */
function parseOurs(input: Buffer, cuts: number[], opts: FeedOptions = {}): Run {
  const run: Run = { msgs: [], error: null, errorFrom: null, errorPiece: -1, violations: [] };
  let pieceNo = 0;
  const parser = new ResponseParser(recorder(run, opts.head ?? false, () => pieceNo));
  const bounds = [0, ...cuts, input.length];
  const PAD = 7;
  const shared = opts.reuse ? Buffer.alloc(input.length + 2 * PAD) : null;
  for (let i = 0; i + 1 < bounds.length; i++, pieceNo++) {
    const s = bounds[i], e = bounds[i + 1];
    if (s === e) continue;
    if (shared !== null) {
      shared.fill(0xee); // whatever the parser kept a view of is gone now
      input.copy(shared, PAD + i % 3, s, e);
      parser.execute(shared, PAD + i % 3, PAD + i % 3 + (e - s));
    } else {
      // a piece inside a larger buffer, so start/end are honoured rather than 0/length
      const b = Buffer.alloc(e - s + 2 * PAD, 0xee);
      input.copy(b, PAD, s, e);
      parser.execute(b, PAD, PAD + (e - s));
    }
  }
  if ((opts.finish ?? true) && run.error === null) {
    const before = run.msgs.filter((m) => m.complete).length;
    const err = parser.finish();
    if (err !== null) {
      if (!(err instanceof Error) || !/^HPE_/.test(err.code)) run.violations.push(`finish() error without an HPE_ code: ${String(err.code)}`);
      if (run.msgs.filter((m) => m.complete).length !== before) run.violations.push('finish() both ended a message and failed');
      run.error = err.code;
      run.errorFrom = 'finish';
    }
  }
  return run;
}

// ---- splitting --------------------------------------------------------------------------------

/** mulberry32: a small deterministic PRNG */
function prng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}
type Rng = () => number;
const int = (rng: Rng, n: number): number => Math.floor(rng() * n);
const pick = <T>(rng: Rng, xs: readonly T[]): T => xs[int(rng, xs.length)];

function everyByte(len: number): number[] {
  return Array.from({ length: Math.max(0, len - 1) }, (_, i) => i + 1);
}
function randomCuts(rng: Rng, len: number): number[] {
  const n = int(rng, Math.min(len, 8));
  const set = new Set<number>();
  for (let i = 0; i < n; i++) set.add(1 + int(rng, Math.max(1, len - 1)));
  return [...set].filter((c) => c > 0 && c < len).sort((a, b) => a - b);
}

/** What must not depend on how the input was split (the error's piece index obviously does). */
function comparable(r: Run): Omit<Run, 'errorPiece'> {
  return { msgs: r.msgs, error: r.error, errorFrom: r.errorFrom, violations: r.violations };
}

/**
 * Parse whole, byte by byte (unless long), at random splits and through a reused buffer; all
 * must agree and no sink-protocol breach may happen. Returns the whole-buffer run.
 */
function parseEverywhere(input: string | Buffer, opts: FeedOptions = {}, seed = 1): Run {
  const buf = typeof input === 'string' ? Buffer.from(input, 'latin1') : input;
  const whole = parseOurs(buf, [], opts);
  expect(whole.violations).toEqual([]);
  const rng = prng(seed);
  const variants: Array<[string, number[], boolean]> = [];
  if (buf.length <= 4096) variants.push(['byte by byte', everyByte(buf.length), false], ['byte by byte, reused buffer', everyByte(buf.length), true]);
  for (let i = 0; i < 4; i++) variants.push([`random split ${i}`, randomCuts(rng, buf.length), i % 2 === 1]);
  for (const [label, cuts, reuse] of variants) {
    const r = parseOurs(buf, cuts, { ...opts, reuse });
    expect(comparable(r), `${label} (cuts ${JSON.stringify(cuts.length > 40 ? cuts.length : cuts)}) of ${JSON.stringify(buf.toString('latin1').slice(0, 300))}`).toEqual(comparable(whole));
  }
  return whole;
}

/** Parse (everywhere), expect no error, and return the messages. */
function ok(input: string, opts: FeedOptions = {}): Msg[] {
  const r = parseEverywhere(input, opts);
  expect(r.error, `error for ${JSON.stringify(input)}`).toBeNull();
  return r.msgs;
}

/** Parse (everywhere) and expect a parse error from execute() with no complete message before it than `before`. */
function bad(input: string, before = 0, code?: string): Run {
  const r = parseEverywhere(input);
  expect(r.error ?? 'accepted', `no error for ${JSON.stringify(input)}`).toMatch(/^HPE_/);
  expect(r.errorFrom, `${JSON.stringify(input)} failed only at finish()`).toBe('execute');
  expect(r.msgs.filter((m) => m.complete).length).toBe(before);
  if (code !== undefined) expect(r.error).toBe(code);
  return r;
}

const HEAD_OK = 'HTTP/1.1 200 OK\r\n';
const CHUNKED = 'HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n';
const withCL = (body: string, extra = ''): string => `HTTP/1.1 200 OK\r\n${extra}Content-Length: ${body.length}\r\n\r\n${body}`;

// ---- unit cases ----------------------------------------------------------------------------------

describe('status line', () => {
  it('HTTP/1.1 with a reason and Content-Length', () => {
    const [m] = ok('HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 5\r\n\r\nhello');
    expect(m).toEqual({
      status: 200, minor: 1, reason: 'OK', keepAlive: true, contentLength: 5, chunked: false,
      headers: [['Content-Type', 'text/plain'], ['Content-Length', '5']], body: 'hello', complete: true,
    });
  });

  it('HTTP/1.0: not kept alive unless Connection: keep-alive', () => {
    const [a] = ok('HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\nok');
    expect([a.minor, a.keepAlive, a.body]).toEqual([0, false, 'ok']);
    const [b] = ok('HTTP/1.0 200 OK\r\nConnection: Keep-Alive\r\nContent-Length: 2\r\n\r\nok');
    expect([b.minor, b.keepAlive]).toEqual([0, true]);
    const [c] = ok('HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 2\r\n\r\nok');
    expect([c.minor, c.keepAlive]).toEqual([1, false]);
    const [d] = ok('HTTP/1.1 200 OK\r\nConnection: foo, CLOSE\r\nContent-Length: 2\r\n\r\nok');
    expect(d.keepAlive).toBe(false);
  });

  it('the reason phrase is optional', () => {
    expect(ok('HTTP/1.1 200\r\nContent-Length: 0\r\n\r\n')[0].reason).toBe('');
    expect(ok('HTTP/1.1 200 \r\nContent-Length: 0\r\n\r\n')[0].reason).toBe('');
    expect(ok('HTTP/1.1 404\nContent-Length: 0\n\n')[0].status).toBe(404);
  });

  it('the reason phrase keeps spaces, HTAB and obs-text (Latin-1)', () => {
    const [m] = ok('HTTP/1.1 599 Caf\xe9  au\tlait\r\nContent-Length: 0\r\n\r\n');
    expect([m.status, m.reason]).toEqual([599, 'Caf\xe9  au\tlait']);
  });

  for (const line of [
    'HTTP/2.0 200 OK', 'HTTP/1.2 200 OK', 'HTTP/0.9 200 OK', 'HTTP/1.1 20 OK', 'HTTP/1.1 2000 OK', 'HTTP/1.1 20x OK',
    'HTTP/1.1 200OK', 'HTTP/1.1  200 OK', 'HTTP/1.1 -20 OK', 'http/1.1 200 OK', 'HTTP/1.1', 'HTTP/11 200 OK', 'ICY 200 OK', 'NOT HTTP',
    'HTTP/1.1 200 O\x01K', 'HTTP/1.1 200 O\x7fK', '\r\nHTTP/1.1 200 OK',
  ]) {
    it(`rejects the status line ${JSON.stringify(line)}`, () => {
      const r = bad(`${line}\r\nContent-Length: 0\r\n\r\n`);
      expect(r.msgs).toEqual([]);
    });
  }

  it('junk is refused as soon as it is seen, without waiting for more bytes', () => {
    for (const junk of ['NOT HTTP', 'X', 'HTTP/2', '<html>']) {
      const r = parseOurs(Buffer.from(junk, 'latin1'), [], { finish: false });
      expect(r.error, JSON.stringify(junk)).toMatch(/^HPE_/);
    }
  });
});

describe('line endings', () => {
  it('a bare LF ends the status line, header lines and the head', () => {
    const crlf = ok('HTTP/1.1 200 OK\r\nA: 1\r\nContent-Length: 2\r\n\r\nok');
    expect(ok('HTTP/1.1 200 OK\nA: 1\nContent-Length: 2\n\nok')).toEqual(crlf);
    expect(ok('HTTP/1.1 200 OK\nA: 1\r\nContent-Length: 2\n\r\nok')).toEqual(crlf);
    expect(ok('HTTP/1.1 200 OK\r\nA: 1\nContent-Length: 2\r\n\nok')).toEqual(crlf);
  });

  it('busybox httpd CGI style head', () => {
    const [m] = ok('HTTP/1.1 200 OK\nContent-Type: text/plain\nContent-Length: 3\n\nhi\n');
    expect([m.status, m.body, m.headers[0]]).toEqual([200, 'hi\n', ['Content-Type', 'text/plain']]);
  });

  for (const input of [
    'HTTP/1.1 200 OK\rContent-Length: 0\r\n\r\n',
    'HTTP/1.1 200\rContent-Length: 0\r\n\r\n',
    'HTTP/1.1 200 OK\r\nA: b\rc\r\nContent-Length: 0\r\n\r\n',
    'HTTP/1.1 200 OK\r\nA: b\r\rContent-Length: 0\r\n\r\n',
    'HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\r\n',
    'HTTP/1.1 200 OK\r\nContent-Length: 0\r\rx',
    'HTTP/1.1 200 OK\r\nA\r: b\r\nContent-Length: 0\r\n\r\n',
    'HTTP/1.1 200 OK\r\n\rA: b\r\nContent-Length: 0\r\n\r\n',
  ]) {
    it(`a CR not followed by LF is an error: ${JSON.stringify(input)}`, () => { bad(input); });
  }
});

describe('header fields', () => {
  it('names keep their case, values are trimmed of SP/HTAB, obs-text is Latin-1', () => {
    const [m] = ok('HTTP/1.1 200 OK\r\nX-MiXeD: a\r\nx-pad: \t  two  words \t \r\nX-Empty:\r\nX-Blank:   \r\nX-Tab:\ta\tb\t\r\nX-Latin: caf\xe9 \xff\r\nContent-Length: 0\r\n\r\n');
    expect(m.headers).toEqual([
      ['X-MiXeD', 'a'], ['x-pad', 'two  words'], ['X-Empty', ''], ['X-Blank', ''], ['X-Tab', 'a\tb'],
      ['X-Latin', 'caf\xe9 \xff'], ['Content-Length', '0'],
    ]);
  });

  it('every tchar is allowed in a name; values may hold colons, quotes and any VCHAR', () => {
    const name = "!#$%&'*+-.^_`|~09AZaz";
    const value = '"q:u=o;t,e" \\ / ( ) < > @ [ ] ? { } ~';
    const [m] = ok(`HTTP/1.1 200 OK\r\n${name}: ${value}\r\nContent-Length: 0\r\n\r\n`);
    expect(m.headers[0]).toEqual([name, value]);
  });

  it('repeated fields are all delivered, in order', () => {
    const [m] = ok('HTTP/1.1 200 OK\r\nSet-Cookie: a=1\r\nSet-Cookie: b=2\r\nContent-Length: 0\r\n\r\n');
    expect(m.headers).toEqual([['Set-Cookie', 'a=1'], ['Set-Cookie', 'b=2'], ['Content-Length', '0']]);
  });

  it('100 fields (more than llhttp hands over at once)', () => {
    const lines = Array.from({ length: 99 }, (_, i) => `X-H${i}: v${i}\r\n`).join('');
    const [m] = ok(`HTTP/1.1 200 OK\r\n${lines}Content-Length: 1\r\n\r\n!`);
    expect(m.headers.length).toBe(100);
    expect(m.headers[57]).toEqual(['X-H57', 'v57']);
    expect(m.body).toBe('!');
  });

  const badLines: Array<[string, string]> = [
    ['whitespace before the colon', 'Foo : bar'],
    ['HTAB before the colon', 'Foo\t: bar'],
    ['an empty name', ': bar'],
    ['a space in the name', 'Fo o: bar'],
    ['a quote in the name', 'Fo"o: bar'],
    ['a parenthesis in the name', 'Foo(: bar'],
    ['a slash in the name', 'Foo/x: bar'],
    ['obs-text in the name', 'F\xe9e: bar'],
    ['a NUL in the name', 'Fo\x00o: bar'],
    ['no colon', 'Foo'],
    ['obs-fold (SP)', 'X-A: a\r\n folded'],
    ['obs-fold (HTAB)', 'X-A: a\r\n\tfolded'],
    ['obs-fold on the first field', ' X-A: a'],
    ['NUL in a value', 'X-A: a\x00b'],
    ['0x01 in a value', 'X-A: a\x01b'],
    ['0x08 in a value', 'X-A: \x08'],
    ['VT in a value', 'X-A: a\x0bb'],
    ['FF in a value', 'X-A: a\x0cb'],
    ['0x1f in a value', 'X-A: a\x1fb'],
    ['DEL in a value', 'X-A: a\x7fb'],
    ['ESC in a value', 'X-A: \x1b[31m'],
  ];
  for (const [what, line] of badLines) {
    it(`rejects ${what}`, () => { bad(`HTTP/1.1 200 OK\r\n${line}\r\nContent-Length: 0\r\n\r\n`); });
  }
});

describe('Content-Length', () => {
  it('0: the message ends with the head', () => {
    const [m] = ok('HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n');
    expect([m.contentLength, m.body, m.complete, m.keepAlive]).toEqual([0, '', true, true]);
  });

  it('the body is exactly that many bytes; the next message follows', () => {
    const ms = ok(withCL('hello\r\nworld') + withCL('') + withCL('x'));
    expect(ms.map((m) => [m.contentLength, m.body])).toEqual([[12, 'hello\r\nworld'], [0, ''], [1, 'x']]);
  });

  it('binary bodies pass unchanged', () => {
    const body = Array.from({ length: 256 }, (_, i) => String.fromCharCode(i)).join('');
    expect(ok(withCL(body))[0].body).toBe(body);
  });

  it('leading zeros, surrounding whitespace and any header-name case', () => {
    expect(ok('HTTP/1.1 200 OK\r\ncontent-length:007\r\n\r\n1234567')[0].body).toBe('1234567');
    // (llhttp refuses a trailing HTAB here; OWS is SP / HTAB)
    expect(ok('HTTP/1.1 200 OK\r\nCONTENT-LENGTH: \t3 \t\r\n\r\nabc')[0].contentLength).toBe(3);
  });

  it('the largest accepted value is 2^53-1 (and finish() mid-body is an error)', () => {
    const r = parseEverywhere('HTTP/1.1 200 OK\r\nContent-Length: 9007199254740991\r\n\r\nabc');
    expect(r.msgs[0].contentLength).toBe(9007199254740991);
    expect(r.msgs[0].body).toBe('abc');
    expect(r.errorFrom).toBe('finish');
  });

  for (const [what, fields] of [
    ['two different values', 'Content-Length: 5\r\nContent-Length: 6'],
    ['two equal values', 'Content-Length: 5\r\nContent-Length: 5'],
    ['equal values in different case', 'Content-Length: 5\r\ncontent-length: 5'],
    ['a comma list', 'Content-Length: 5, 5'],
    ['a comma list without space', 'Content-Length: 5,5'],
    ['a sign (+)', 'Content-Length: +5'],
    ['a sign (-)', 'Content-Length: -5'],
    ['hex', 'Content-Length: 0x5'],
    ['a suffix', 'Content-Length: 5a'],
    ['a decimal point', 'Content-Length: 5.0'],
    ['inner whitespace', 'Content-Length: 1 2'],
    ['an empty value', 'Content-Length:'],
    ['a blank value', 'Content-Length:  '],
    ['2^53 + 1', 'Content-Length: 9007199254740993'],
    ['20 digits', 'Content-Length: 99999999999999999999'],
    ['with Transfer-Encoding: chunked', 'Content-Length: 5\r\nTransfer-Encoding: chunked'],
    ['after Transfer-Encoding: chunked', 'Transfer-Encoding: chunked\r\nContent-Length: 5'],
    ['with Transfer-Encoding: gzip', 'Transfer-Encoding: gzip\r\nContent-Length: 5'],
    ['0 with Transfer-Encoding', 'Content-Length: 0\r\nTransfer-Encoding: chunked'],
  ] as const) {
    it(`rejects ${what}`, () => { bad(`HTTP/1.1 200 OK\r\n${fields}\r\n\r\nhello\r\n0\r\n\r\n`); });
  }
});

describe('Transfer-Encoding', () => {
  for (const te of ['chunked', 'Chunked', 'CHUNKED', 'gzip, chunked', 'gzip,chunked', 'gzip ,  chunked', 'gzip, deflate, chunked']) {
    it(`${JSON.stringify(te)} is chunked`, () => {
      const [m] = ok(`HTTP/1.1 200 OK\r\nTransfer-Encoding: ${te}\r\n\r\n3\r\nabc\r\n0\r\n\r\n`);
      expect([m.chunked, m.contentLength, m.body, m.keepAlive, m.complete]).toEqual([true, -1, 'abc', true, true]);
    });
  }

  for (const te of ['gzip', 'identity', 'chunked, gzip', 'chunked,', 'chunkedx', 'xchunked', '']) {
    it(`${JSON.stringify(te)} is read to the connection's close`, () => {
      const r = parseEverywhere(`HTTP/1.1 200 OK\r\nTransfer-Encoding: ${te}\r\n\r\n3\r\nabc\r\n0\r\n\r\n`);
      expect(r.error).toBeNull();
      const [m] = r.msgs;
      expect([m.chunked, m.keepAlive, m.body, m.complete]).toEqual([false, false, '3\r\nabc\r\n0\r\n\r\n', true]);
    });
  }

  it('OWS after the coding is not part of it (llhttp reads "chunked<HTAB>" to the close; RFC 9110 trims OWS)', () => {
    for (const te of ['chunked ', 'chunked\t', 'gzip, chunked \t']) {
      const [m] = ok(`HTTP/1.1 200 OK\r\nTransfer-Encoding: ${te}\r\n\r\n3\r\nabc\r\n0\r\n\r\n`);
      expect([m.chunked, m.body], JSON.stringify(te)).toEqual([true, 'abc']);
    }
  });

  it('an empty Transfer-Encoding field after "chunked" is chunked (as llhttp) or refused, never read to the close', () => {
    const r = parseEverywhere('HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding:\r\n\r\n2\r\nok\r\n0\r\n\r\n');
    if (r.error === null) expect(r.msgs.map((m) => [m.chunked, m.body])).toEqual([[true, 'ok']]);
    else expect(r.errorFrom).toBe('execute');
  });

  it('otherCodings says when Transfer-Encoding is anything but exactly "chunked" (the proxy refuses to forward those)', () => {
    const seen: boolean[] = [];
    const p = new ResponseParser({ parsedHead: (h) => { seen.push(h.otherCodings); return true; }, parsedBody: () => {}, parsedEnd: () => {}, parsedError: (e) => { throw e; } });
    for (const te of ['chunked', 'Chunked', 'chunked ', 'gzip, chunked', 'chunked, gzip', 'gzip']) {
      const b = Buffer.from(`HTTP/1.1 200 OK\r\nTransfer-Encoding: ${te}\r\n\r\n`, 'latin1');
      p.execute(b, 0, b.length);
    }
    expect(seen).toEqual([false, false, false, true, true, true]);
  });

  it('with two fields the last coding of the last one decides', () => {
    const [a] = ok('HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\nTransfer-Encoding: chunked\r\n\r\n1\r\nx\r\n0\r\n\r\n');
    expect([a.chunked, a.body]).toEqual([true, 'x']);
    const [b] = ok('HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: gzip\r\n\r\n1\r\nx\r\n0\r\n\r\n');
    expect([b.chunked, b.keepAlive, b.body]).toEqual([false, false, '1\r\nx\r\n0\r\n\r\n']);
  });
});

describe('bodies delimited by the connection closing', () => {
  it('no Content-Length and no Transfer-Encoding: everything until finish()', () => {
    const input = 'HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\nuntil HTTP/1.1 200 OK\r\n\r\n the end';
    const [m, ...rest] = ok(input);
    expect(rest).toEqual([]);
    expect([m.keepAlive, m.contentLength, m.chunked, m.body, m.complete]).toEqual([false, -1, false, 'until HTTP/1.1 200 OK\r\n\r\n the end', true]);
  });

  it('even with Connection: keep-alive the connection cannot be reused', () => {
    expect(ok('HTTP/1.1 200 OK\r\nConnection: keep-alive\r\n\r\nx')[0].keepAlive).toBe(false);
    expect(ok('HTTP/1.0 200 OK\r\nConnection: keep-alive\r\n\r\nx')[0].keepAlive).toBe(false);
  });

  it('an empty body ends at finish()', () => {
    const withoutFinish = parseOurs(Buffer.from('HTTP/1.1 200 OK\r\n\r\n', 'latin1'), [], { finish: false });
    expect(withoutFinish.msgs[0].complete).toBe(false);
    const [m] = ok('HTTP/1.1 200 OK\r\n\r\n');
    expect([m.body, m.complete]).toEqual(['', true]);
  });
});

describe('responses without a body', () => {
  it('204 and 304 end with the head even with Content-Length or Transfer-Encoding', () => {
    const ms = ok('HTTP/1.1 204 No Content\r\nContent-Length: 5\r\n\r\nHTTP/1.1 304 Not Modified\r\nContent-Length: 7\r\n\r\n'
      + 'HTTP/1.1 304 Not Modified\r\nTransfer-Encoding: chunked\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok');
    expect(ms.map((m) => [m.status, m.body, m.complete])).toEqual([[204, '', true], [304, '', true], [304, '', true], [200, 'ok', true]]);
  });

  it('204 and 304 without Content-Length keep the connection', () => {
    expect(ok('HTTP/1.1 204 No Content\r\n\r\n')[0].keepAlive).toBe(true);
    expect(ok('HTTP/1.1 304 Not Modified\r\n\r\n')[0].keepAlive).toBe(true);
  });

  it('1xx responses are messages of their own: head then end', () => {
    const ms = ok('HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nLink: </a.css>; rel=preload\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok');
    expect(ms.map((m) => [m.status, m.body, m.complete])).toEqual([[100, '', true], [103, '', true], [200, 'ok', true]]);
    expect(ms[1].headers).toEqual([['Link', '</a.css>; rel=preload']]);
  });

  it('a 1xx never has a body, whatever its headers say', () => {
    const ms = ok('HTTP/1.1 103 Early Hints\r\nContent-Length: 5\r\n\r\nHTTP/1.1 199 Whatever\r\nTransfer-Encoding: chunked\r\n\r\nHTTP/1.1 204 No Content\r\n\r\n');
    expect(ms.map((m) => [m.status, m.body, m.complete])).toEqual([[103, '', true], [199, '', true], [204, '', true]]);
  });

  it('103 then 204 in one buffer: head, end, head, end', () => {
    const events: string[] = [];
    const p = new ResponseParser({
      parsedHead(h) { events.push(`head ${h.status}`); return false; },
      parsedBody() { events.push('body'); },
      parsedEnd() { events.push('end'); },
      parsedError(e) { events.push(`error ${e.code}`); },
    });
    const b = Buffer.from('HTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\nHTTP/1.1 204 No Content\r\n\r\n', 'latin1');
    p.execute(b, 0, b.length);
    expect(events).toEqual(['head 103', 'end', 'head 204', 'end']);
    expect(p.finish()).toBeNull();
  });

  it('HEAD: parsedHead returning true means no body, even with Content-Length: 100 or chunked', () => {
    const ms = ok('HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nHTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n', { head: true });
    expect(ms.map((m) => [m.status, m.body, m.complete, m.contentLength])).toEqual([[200, '', true, 100], [200, '', true, -1], [200, '', true, 0]]);
  });

  it('HEAD without Content-Length ends at the head, and finish() then ends nothing more', () => {
    const r = parseEverywhere('HTTP/1.1 200 OK\r\n\r\n', { head: true });
    expect(r.error).toBeNull();
    expect(r.msgs.map((m) => [m.body, m.complete])).toEqual([['', true]]);
  });

  it('HEAD only where the sink says so (a 100 Continue, then the real head)', () => {
    const ms = ok('HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\n', { head: (s) => s >= 200 });
    expect(ms.map((m) => [m.status, m.complete])).toEqual([[100, true], [200, true]]);
  });
});

describe('chunked bodies', () => {
  it('sizes in upper and lower case hex, the body reassembled', () => {
    const a = 'a'.repeat(10), b = 'b'.repeat(0x1f), c = 'c'.repeat(0xab);
    const [m] = ok(`${CHUNKED}A\r\n${a}\r\n1f\r\n${b}\r\n1F\r\n${b}\r\naB\r\n${c}\r\n000\r\n\r\n`);
    expect(m.body).toBe(a + b + b + c);
    expect(m.chunked).toBe(true);
    expect(m.contentLength).toBe(-1);
  });

  it('leading zeros in a size', () => {
    expect(ok(`${CHUNKED}0005\r\nhello\r\n0\r\n\r\n`)[0].body).toBe('hello');
  });

  it('chunk data may hold CR, LF and anything else', () => {
    expect(ok(`${CHUNKED}6\r\n\r\n0\r\n\r\r\n0\r\n\r\n`)[0].body).toBe('\r\n0\r\n\r');
  });

  for (const ext of [';a=b', ';a', ';a=b;c=d', ';name="quoted value"', ';a=', ';A-B=C.D']) {
    it(`chunk extension ${JSON.stringify(ext)} is ignored`, () => {
      expect(ok(`${CHUNKED}5${ext}\r\nhello\r\n0${ext}\r\n\r\n`)[0].body).toBe('hello');
    });
  }

  it('trailers are validated and not delivered', () => {
    const [m, n] = ok(`${CHUNKED}5\r\nhello\r\n0\r\nX-Checksum: abc\r\nX-Other:\tdef \r\n\r\n${withCL('x')}`);
    expect(m.headers).toEqual([['Transfer-Encoding', 'chunked']]);
    expect([m.body, m.complete, n.body]).toEqual(['hello', true, 'x']);
  });

  it('trailer lines may end in a bare LF like header lines', () => {
    expect(ok(`${CHUNKED}5\r\nhello\r\n0\r\nA: b\nC: d\r\n\n`)[0].body).toBe('hello');
  });

  it('a zero-length body', () => {
    const [m] = ok(`${CHUNKED}0\r\n\r\n`);
    expect([m.body, m.complete]).toEqual(['', true]);
  });

  it('keep-alive: the next response follows the last chunk', () => {
    const ms = ok(`${CHUNKED}2\r\nok\r\n0\r\n\r\n${CHUNKED}0\r\n\r\nHTTP/1.1 204 No Content\r\n\r\n`);
    expect(ms.map((m) => [m.status, m.body, m.keepAlive])).toEqual([[200, 'ok', true], [200, '', true], [204, '', true]]);
  });

  it('the largest size accepted is 2^53-1 (finish() mid-chunk is an error)', () => {
    const r = parseEverywhere(`${CHUNKED}1fffffffffffff\r\nabc`);
    expect([r.msgs[0].body, r.errorFrom]).toEqual(['abc', 'finish']);
  });

  const badChunks: Array<[string, string]> = [
    ['a non-hex size', 'g\r\nhello\r\n0\r\n\r\n'],
    ['a 0x prefix', '0x5\r\nhello\r\n0\r\n\r\n'],
    ['a negative size', '-5\r\nhello\r\n0\r\n\r\n'],
    ['an empty size line', '\r\nhello\r\n0\r\n\r\n'],
    ['a leading space', ' 5\r\nhello\r\n0\r\n\r\n'],
    ['a size of 2^53', '20000000000000\r\nhello\r\n0\r\n\r\n'],
    ['an absurdly long size', 'ffffffffffffffffffffffff\r\nhello\r\n0\r\n\r\n'],
    ['data longer than the size', '5\r\nhello!\r\n0\r\n\r\n'],
    ['data shorter than the size', '5\r\nhel\r\n0\r\n\r\n'],
    ['data followed by CR then not LF', '5\r\nhello\rX0\r\n\r\n'],
    ['a CR not followed by LF after the size', '5\rhello\r\n0\r\n\r\n'],
    ['a lone CR ending the trailers', '5\r\nhello\r\n0\r\n\r\r\n'],
    ['a trailer with whitespace before the colon', '5\r\nhello\r\n0\r\nX-T : 1\r\n\r\n'],
    ['a trailer with an empty name', '5\r\nhello\r\n0\r\n: 1\r\n\r\n'],
    ['an obs-folded trailer', '5\r\nhello\r\n0\r\nX-T: 1\r\n 2\r\n\r\n'],
    ['a control byte in a trailer value', '5\r\nhello\r\n0\r\nX-T: \x01\r\n\r\n'],
    ['a NUL in a trailer name', '5\r\nhello\r\n0\r\nX\x00: 1\r\n\r\n'],
    ['a trailer line without a colon', '5\r\nhello\r\n0\r\nX-T\r\n\r\n'],
    // a framing field where it cannot frame anything; llhttp refuses it
    ['a Content-Length trailer', '5\r\nhello\r\n0\r\nContent-Length: 5\r\n\r\n'],
    ['an invalid Content-Length trailer', '5\r\nhello\r\n0\r\nContent-Length: +5\r\n\r\n'],
    // llhttp refuses these too: accepting them would make us the more lenient parser
    ['a space between the size and an extension', '5 ;a=b\r\nhello\r\n0\r\n\r\n'],
    ['a space after the size', '5 \r\nhello\r\n0\r\n\r\n'],
    ['junk after the size and a space', '5 junk\r\nhello\r\n0\r\n\r\n'],
    ['an HTAB after the size', '5\t\r\nhello\r\n0\r\n\r\n'],
    ['an empty extension', '5;\r\nhello\r\n0\r\n\r\n'],
    ['a space inside an extension', '5;a b\r\nhello\r\n0\r\n\r\n'],
    ['a space after the extension semicolon', '5; a=b\r\nhello\r\n0\r\n\r\n'],
    ['obs-text in an extension', '5;a=\xe9\r\nhello\r\n0\r\n\r\n'],
    ['an unterminated quoted extension value', '5;a="b c\r\nhello\r\n0\r\n\r\n'],
    ['a bare LF after a chunk size', '5\nhello\r\n0\r\n\r\n'],
    ['a bare LF after the last-chunk size', '5\r\nhello\r\n0\n\r\n'],
  ];
  for (const [what, body] of badChunks) {
    it(`rejects ${what}`, () => {
      const r = parseEverywhere(CHUNKED + body);
      expect(r.error ?? 'accepted', JSON.stringify(CHUNKED + body)).toMatch(/^HPE_/);
      expect(r.errorFrom).toBe('execute');
      expect(r.msgs.filter((m) => m.complete)).toEqual([]);
    });
  }

  it('data not followed by a line end', () => {
    bad(`${CHUNKED}5\r\nhelloX\r\n0\r\n\r\n`);
    bad(`${CHUNKED}5\r\nhello0\r\n\r\n`);
  });
});

describe('head size', () => {
  const fields = (bytes: number): string => {
    let s = '';
    for (let i = 0; s.length < bytes; i++) s += `X-Filler-${i}: ${'v'.repeat(200)}\r\n`; // < 128 fields
    return s;
  };

  it('a 15 KiB head is accepted', () => {
    const f = fields(15 * 1024);
    const [m] = ok(`HTTP/1.1 200 OK\r\n${f}Content-Length: 2\r\n\r\nok`);
    expect(m.body).toBe('ok');
    expect(m.headers.length).toBe(f.split('\r\n').length);
  });

  it('a head over 16 KiB is HPE_HEADER_OVERFLOW', () => {
    bad(`HTTP/1.1 200 OK\r\n${fields(17 * 1024)}Content-Length: 2\r\n\r\nok`, 0, 'HPE_HEADER_OVERFLOW');
  });

  it('a single huge field, and a head that never ends, fail without waiting for finish()', () => {
    bad(`HTTP/1.1 200 OK\r\nX-Big: ${'b'.repeat(20 * 1024)}\r\n\r\n`, 0, 'HPE_HEADER_OVERFLOW');
    const endless = Buffer.from(`HTTP/1.1 200 OK\r\n${fields(40 * 1024)}`, 'latin1');
    const cuts = Array.from({ length: Math.floor(endless.length / 1000) }, (_, i) => (i + 1) * 1000).filter((c) => c < endless.length);
    const r = parseOurs(endless, cuts, { finish: false });
    expect([r.error, r.errorFrom]).toEqual(['HPE_HEADER_OVERFLOW', 'execute']);
  });

  it('a large body after a small head is no overflow', () => {
    const body = 'z'.repeat(100 * 1024);
    expect(ok(withCL(body))[0].body.length).toBe(body.length);
  });
});

describe('finish()', () => {
  const cases: Array<[string, string]> = [
    ['in the status line', 'HTTP/1.1 20'],
    ['after the status line', 'HTTP/1.1 200 OK\r\n'],
    ['in a header line', 'HTTP/1.1 200 OK\r\nContent-Len'],
    ['before the blank line', 'HTTP/1.1 200 OK\r\nContent-Length: 5\r\n'],
    ['between CR and LF of the blank line', 'HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r'],
    ['in a Content-Length body', 'HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhel'],
    ['before a Content-Length body', 'HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n'],
    ['before the first chunk', CHUNKED],
    ['in a chunk size', `${CHUNKED}1`],
    ['in chunk data', `${CHUNKED}5\r\nhel`],
    ['after chunk data', `${CHUNKED}5\r\nhello`],
    ['before the last chunk', `${CHUNKED}5\r\nhello\r\n`],
    ['after the last chunk', `${CHUNKED}5\r\nhello\r\n0\r\n`],
    ['in a trailer', `${CHUNKED}5\r\nhello\r\n0\r\nX-T: 1\r\n`],
    ['in the second message', `${withCL('ok')}HTTP/1.1 200 OK\r\n`],
  ];
  for (const [where, input] of cases) {
    it(`${where}: a ParserError returned, not sent to the sink`, () => {
      const r = parseEverywhere(input);
      expect([r.errorFrom, r.error?.startsWith('HPE_')], JSON.stringify(input)).toEqual(['finish', true]);
      expect(r.msgs.filter((m) => !m.complete).length).toBeLessThanOrEqual(1);
    });
  }

  it('after complete messages, or nothing at all: null', () => {
    expect(parseEverywhere(withCL('ok') + `${CHUNKED}0\r\n\r\n`).error).toBeNull();
    const p = new ResponseParser({ parsedHead: () => false, parsedBody: () => {}, parsedEnd: () => {}, parsedError: () => {} });
    expect(p.finish()).toBeNull();
  });

  it('ends a body delimited by the close exactly once', () => {
    let ends = 0;
    const p = new ResponseParser({ parsedHead: () => false, parsedBody: () => {}, parsedEnd: () => { ends++; }, parsedError: () => {} });
    const b = Buffer.from('HTTP/1.1 200 OK\r\n\r\nbody', 'latin1');
    p.execute(b, 0, b.length);
    expect(ends).toBe(0);
    expect(p.finish()).toBeNull();
    expect(ends).toBe(1);
  });
});

describe('errors are final', () => {
  it('after parsedError the parser ignores further input', () => {
    const events: string[] = [];
    const p = new ResponseParser({
      parsedHead(h) { events.push(`head ${h.status}`); return false; },
      parsedBody() { events.push('body'); },
      parsedEnd() { events.push('end'); },
      parsedError(e) { events.push(`error ${e.code.slice(0, 4)}`); },
    });
    const feed = (s: string): void => { const b = Buffer.from(s, 'latin1'); p.execute(b, 0, b.length); };
    feed('HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nokHTTP/1.1 200 OK\r\nBad Name: x\r\n\r\n');
    feed('HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n');
    feed('garbage');
    expect(events).toEqual(['head 200', 'body', 'end', 'error HPE_']);
  });

  it('an error in the body of a later message leaves the earlier ones complete', () => {
    const r = bad(`${withCL('ok')}${CHUNKED}5\r\nhelloX`, 1);
    expect(r.msgs.map((m) => [m.body, m.complete])).toEqual([['ok', true], ['hello', false]]);
  });
});

// ---- splitting and buffer reuse -----------------------------------------------------------------

/** A random valid response stream from a small grammar (also the differential test's seed corpus). */
function validStream(rng: Rng): string {
  let out = '';
  const n = 1 + int(rng, 3);
  for (let i = 0; i < n; i++) {
    if (rng() < 0.2) out += `HTTP/1.1 ${pick(rng, [100, 103])} ${pick(rng, ['Continue', 'Early Hints', ''])}${eol(rng)}${rng() < 0.5 ? `Link: </x>${eol(rng)}` : ''}${eol(rng)}`;
    out += finalResponse(rng, i === n - 1);
  }
  return out;
}

function eol(rng: Rng): string {
  return rng() < 0.15 ? '\n' : '\r\n';
}

const HEADER_POOL: ReadonlyArray<() => [string, string]> = [
  () => ['Content-Type', 'text/html; charset=utf-8'],
  () => ['Server', 'busybox'],
  () => ['Date', 'Mon, 30 Nov 2026 20:00:00 GMT'],
  () => ['Set-Cookie', 'id=a3fWa; Max-Age=2592000; Path=/'],
  () => ['cache-control', 'no-cache'],
  () => ['X-Latin', 'caf\xe9'],
  () => ['X-Empty', ''],
  () => ['ETag', '"33a64df5"'],
  () => ['Vary', 'Accept-Encoding, Origin'],
  () => ['Link', '</style.css>; rel=preload; as=style'],
];

function finalResponse(rng: Rng, last: boolean): string {
  const status = pick(rng, [200, 200, 200, 201, 204, 206, 301, 304, 404, 500, 503]);
  const line = `HTTP/1.1 ${status}${pick(rng, [' OK', ' Not Found', '', ' ', ' Caf\xe9 \t!'])}${eol(rng)}`;
  const headers: Array<[string, string]> = [];
  const nh = int(rng, 7);
  for (let i = 0; i < nh; i++) headers.push(pick(rng, HEADER_POOL)());
  const bodiless = status === 204 || status === 304;
  const kind = bodiless ? 'none' : pick(rng, last ? ['cl', 'cl', 'chunked', 'chunked', 'close'] : ['cl', 'chunked']);
  let body = '';
  if (kind === 'cl') {
    const b = randomBody(rng, int(rng, 60));
    headers.push([pick(rng, ['Content-Length', 'content-length']), String(b.length)]);
    body = b;
  } else if (kind === 'chunked') {
    headers.push(['Transfer-Encoding', pick(rng, ['chunked', 'Chunked', 'gzip, chunked'])]);
    const chunks = int(rng, 4);
    for (let i = 0; i < chunks; i++) {
      const c = randomBody(rng, 1 + int(rng, 40));
      const hex = c.length.toString(16);
      body += `${rng() < 0.5 ? hex.toUpperCase() : hex}${rng() < 0.2 ? pick(rng, [';a=b', ';ext', ';q="x y"']) : ''}\r\n${c}\r\n`;
    }
    body += '0\r\n';
    if (rng() < 0.3) body += `X-Trailer: ${int(rng, 1000)}\r\n`;
    body += '\r\n';
  } else if (kind === 'close') {
    body = randomBody(rng, int(rng, 60));
  } else if (rng() < 0.3) {
    headers.push(['Content-Length', String(int(rng, 20))]);
  }
  if (rng() < 0.3) headers.splice(int(rng, headers.length + 1), 0, ['Connection', last ? pick(rng, ['keep-alive', 'close']) : 'keep-alive']);
  const ows = (): string => pick(rng, ['', ' ', ' ', '\t', '  ']);
  // trailing OWS: spaces only (llhttp reads "chunked<HTAB>" as not chunked; a differential case of its own below)
  const fields = headers.map(([n, v]) => `${n}:${ows()}${v}${rng() < 0.1 ? pick(rng, [' ', '  ']) : ''}${eol(rng)}`).join('');
  return line + fields + eol(rng) + body;
}

function randomBody(rng: Rng, len: number): string {
  let s = '';
  for (let i = 0; i < len; i++) s += rng() < 0.9 ? String.fromCharCode(0x20 + int(rng, 95)) : pick(rng, ['\r', '\n', '\r\n', '\x00', '\xff', 'HTTP/1.1 ']);
  return s.slice(0, len);
}

describe('splitting', () => {
  it('400 random valid streams parse identically whole, byte by byte, at random splits and via one reused buffer', () => {
    const rng = prng(20261130);
    let messages = 0;
    for (let i = 0; i < 400; i++) {
      const input = validStream(rng);
      const r = parseEverywhere(input, {}, i);
      expect(r.error, JSON.stringify(input)).toBeNull();
      expect(r.msgs.every((m) => m.complete)).toBe(true);
      messages += r.msgs.length;
    }
    expect(messages).toBeGreaterThan(400);
  });

  it('a head kept across reads survives the caller overwriting its read buffer', () => {
    const input = Buffer.from(`HTTP/1.1 200 Fine\r\nX-First: one\r\nX-Second: two\r\nContent-Length: 4\r\n\r\nbody${CHUNKED}3\r\nabc\r\n0\r\n\r\n`, 'latin1');
    // cut inside the reason, inside a name, inside a value, in the blank line, in the body, in the second head
    const cuts = [14, 22, 40, 75, 79, 90, 100];
    const whole = parseOurs(input, []);
    const reused = parseOurs(input, cuts, { reuse: true });
    expect(reused).toEqual(whole);
    expect(reused.msgs.map((m) => [m.reason, m.headers, m.body])).toEqual([
      ['Fine', [['X-First', 'one'], ['X-Second', 'two'], ['Content-Length', '4']], 'body'],
      ['OK', [['Transfer-Encoding', 'chunked']], 'abc'],
    ]);
  });

  it('body chunks are delivered as they arrive, before the message is complete', () => {
    const bodies: string[] = [];
    const p = new ResponseParser({ parsedHead: () => false, parsedBody: (c) => { bodies.push(Buffer.from(c).toString('latin1')); }, parsedEnd: () => { bodies.push('<end>'); }, parsedError: () => {} });
    const feed = (s: string): void => { const b = Buffer.from(s, 'latin1'); p.execute(b, 0, b.length); };
    feed('HTTP/1.1 200 OK\r\nContent-Length: 6\r\n\r\nab');
    expect(bodies).toEqual(['ab']);
    feed('cd');
    feed(`ef${CHUNKED}3\r\nxy`);
    expect(bodies.join('|')).toBe('ab|cd|ef|<end>|xy');
  });
});

// ---- differential against llhttp ----------------------------------------------------------------

interface NativeParser {
  initialize(type: number, resource: object, maxHeaderSize: number, lenient: number): void;
  execute(b: Buffer): number | Error;
  finish(): Error | undefined;
  close(): void;
  [slot: number]: unknown;
}
interface ParserClass {
  new (): NativeParser;
  RESPONSE: number;
  kOnHeaders: number;
  kOnHeadersComplete: number;
  kOnBody: number;
  kOnMessageComplete: number;
  kLenientOptionalCRBeforeLF: number;
}
const HTTPParser = (createRequire(import.meta.url)('_http_common') as { HTTPParser: ParserClass }).HTTPParser;

interface OracleRun {
  msgs: Array<{ status: number; major: number; minor: number; reason: string; keepAlive: boolean; headers: Array<[string, string]>; body: string; complete: boolean }>;
  error: string | null;
  /** stopped after a 101 (the rest is another protocol) */
  upgraded: boolean;
}

function pairs(flat: string[]): Array<[string, string]> {
  const out: Array<[string, string]> = [];
  for (let i = 0; i + 1 < flat.length; i += 2) out.push([flat[i], flat[i + 1]]);
  return out;
}

function parseLlhttp(input: Buffer, head: boolean): OracleRun {
  const run: OracleRun = { msgs: [], error: null, upgraded: false };
  const p = new HTTPParser();
  p.initialize(HTTPParser.RESPONSE, {}, 16 * 1024, HTTPParser.kLenientOptionalCRBeforeLF);
  let early: string[] = [];
  let inBody = false;
  let parts: Buffer[] = [];
  p[HTTPParser.kOnHeaders] = (h: string[]) => {
    if (inBody) return; // trailers
    early = early.concat(h);
  };
  p[HTTPParser.kOnHeadersComplete] = (major: number, minor: number, h: string[] | undefined, _m: unknown, _u: unknown,
    status: number, reason: string, _upgrade: boolean, keepAlive: boolean): number => {
    run.msgs.push({ status, major, minor, reason, keepAlive, headers: pairs(early.concat(h ?? [])), body: '', complete: false });
    early = [];
    parts = [];
    inBody = true;
    return head ? 1 : 0;
  };
  p[HTTPParser.kOnBody] = (b: Buffer) => {
    parts.push(Buffer.from(b));
    run.msgs[run.msgs.length - 1].body = Buffer.concat(parts).toString('latin1');
  };
  p[HTTPParser.kOnMessageComplete] = () => {
    run.msgs[run.msgs.length - 1].complete = true;
    inBody = false;
  };
  const r = p.execute(input);
  if (r instanceof Error) run.error = (r as ParserError).code ?? 'HPE_UNKNOWN';
  else if (r < input.length) run.upgraded = true;
  else {
    const f = p.finish();
    if (f instanceof Error) run.error = (f as ParserError).code ?? 'HPE_UNKNOWN';
  }
  p.close();
  return run;
}

/** A response stream mutated the ways that tend to matter for framing. */
function mutate(rng: Rng, s: string): string {
  const lines = (): number[] => {
    const at: number[] = [];
    for (let i = s.indexOf('\n'); i !== -1 && i + 1 < s.length; i = s.indexOf('\n', i + 1)) at.push(i + 1);
    return at.length ? at : [0];
  };
  const bytes = ['\r', '\n', ' ', '\t', ':', ';', ',', '0', '5', 'a', 'F', 'x', '"', '\x00', '\x01', '\x7f', '\xff', '\xe9', '+', '-'];
  const inserts = [
    'Content-Length: 5\r\n', 'Content-Length: 0\r\n', 'Content-Length: 5, 5\r\n', 'Content-Length: +5\r\n', 'Content-Length:  7 \r\n',
    'Transfer-Encoding: chunked\r\n', 'Transfer-Encoding: gzip\r\n', 'Transfer-Encoding: gzip, chunked\r\n', 'Transfer-Encoding: chunked, gzip\r\n',
    'transfer-encoding: CHUNKED\r\n', 'Transfer-Encoding:\r\n', ' folded\r\n', '\tfolded\r\n', 'Foo : bar\r\n', 'Foo\t: bar\r\n', ': empty\r\n',
    'Connection: close\r\n', 'Connection: keep-alive\r\n', 'X-Ctl: a\x01b\r\n', 'X-Del: a\x7f\r\n', 'Bad\x00Name: x\r\n', 'X-Lf: a\nb\r\n',
    '\r\n', '\n', '0\r\n\r\n', 'ff\r\n', '5;ext=1\r\n', '5 \r\n', '000000000000000005\r\n', 'fffffffffffffff\r\n', 'HTTP/1.1 200 OK\r\n',
    'HTTP/1.1 101 Switching Protocols\r\n\r\n', 'HTTP/1.1 199 Odd\r\nContent-Length: 3\r\n\r\nabc',
  ];
  const n = 1 + int(rng, 3);
  for (let k = 0; k < n; k++) {
    const op = int(rng, 10);
    const at = int(rng, s.length + 1);
    if (op === 0) s = s.slice(0, at) + pick(rng, bytes) + s.slice(at);
    else if (op === 1) s = s.slice(0, at) + s.slice(at + 1);
    else if (op === 2) s = s.slice(0, at) + pick(rng, bytes) + s.slice(at + 1);
    else if (op <= 4) {
      const l = pick(rng, lines());
      s = s.slice(0, l) + pick(rng, inserts) + s.slice(l);
    } else if (op === 5) {
      // duplicate a whole line
      const l = pick(rng, lines());
      const e = s.indexOf('\n', l);
      if (e !== -1) s = s.slice(0, l) + s.slice(l, e + 1) + s.slice(l);
    } else if (op === 6) {
      // CRLF → LF, CR, or LF → CRLF somewhere
      const crlf = [...s.matchAll(/\r?\n/g)];
      if (crlf.length) {
        const m = pick(rng, crlf);
        const idx = m.index ?? 0;
        s = s.slice(0, idx) + pick(rng, ['\n', '\r', '\r\r\n', '\n\r', '\r\n']) + s.slice(idx + m[0].length);
      }
    } else if (op === 7) {
      // rewrite a chunk-size-looking line
      const sizes = [...s.matchAll(/\n([0-9a-fA-F]+)(;[^\r\n]*)?\r?\n/g)];
      if (sizes.length) {
        const m = pick(rng, sizes);
        const idx = (m.index ?? 0) + 1;
        const repl = pick(rng, ['0x5', ' 5', '5 ', '-1', '+5', '0005', '00000000000000000005', 'fffffffffffffffffffff', '1fffffffffffff', '20000000000000', 'g', '', '5;', '5; a', '5;a="b"', '5;a=\xff']);
        s = s.slice(0, idx) + repl + s.slice(idx + m[1].length + (m[2]?.length ?? 0));
      }
    } else if (op === 8) {
      // change a status or version
      const sl = [...s.matchAll(/HTTP\/1\.[01] \d\d\d/g)];
      if (sl.length) {
        const m = pick(rng, sl);
        const idx = m.index ?? 0;
        s = s.slice(0, idx) + pick(rng, ['HTTP/1.0 200', 'HTTP/1.1 204', 'HTTP/1.1 304', 'HTTP/1.1 100', 'HTTP/1.1 103', 'HTTP/1.1 099', 'HTTP/1.1 999', 'HTTP/2.0 200', 'HTTP/0.9 200', 'HTTP/1.1 20']) + s.slice(idx + m[0].length);
      }
    } else {
      // truncate
      s = s.slice(0, at);
    }
  }
  return s;
}

/** Where exactly our parser failed: fed byte by byte, the index of the byte that made it fail. */
function failingByte(input: Buffer, head: boolean): number {
  return parseOurs(input, everyByte(input.length), { head, finish: false }).errorPiece;
}

/**
 * Ours refused input llhttp accepted: name the deliberate strictness it is, or null. `from` is the
 * start of the message ours failed in (so the status line is known), `at` the failing byte.
 */
function strictness(s: string, from: number, at: number, code: string | null): string | null {
  if (code === 'HPE_HEADER_OVERFLOW') return 'head over 16 KiB / 128 fields';
  if (at < 0) return null;
  const lineStart = s.lastIndexOf('\n', at - 1) + 1;
  const line = s.slice(lineStart, at + 1);
  const msg = s.slice(from);
  if (/^[\r\n]/.test(msg) && at <= from + 2) return 'a stray CR / LF between messages';
  const status = /^HTTP\/(\d)\.(\d) (\d\d\d)/.exec(msg);
  if (lineStart <= from) {
    if (status !== null && !/^HTTP\/1\.[01] $/.test(`HTTP/${status[1]}.${status[2]} `)) return 'an HTTP version other than 1.0 / 1.1';
    if (status !== null && Number(status[3]) < 100) return 'a status below 100';
    if (/[\x00-\x08\x0a-\x1f\x7f]/.test(line.replace(/\r?\n$/, '').replace(/\r$/, ''))) return 'a control byte in the reason phrase';
  }
  if (/^[0-9a-fA-F]{15,}/.test(line)) return 'a chunk size of more than 14 hex digits';
  if (/^[ \t]/.test(line)) return 'obs-fold';
  if (/^[^:\r\n]*[ \t]+:/.test(line)) return 'whitespace before a colon';
  if ((code === 'HPE_UNEXPECTED_CONTENT_LENGTH' || code === 'HPE_INVALID_CONTENT_LENGTH') && /content-length/i.test(s.slice(from, at + 1))) {
    return 'Content-Length duplicated / with Transfer-Encoding / not 1*DIGIT';
  }
  return null;
}

interface Disagreement { kind: string; input: string; detail: string }

function sameMessage(a: Msg, b: OracleRun['msgs'][number]): string | null {
  if (b.major !== 1 || a.minor !== b.minor) return `version 1.${a.minor} vs ${b.major}.${b.minor}`;
  if (a.status !== b.status) return `status ${a.status} vs ${b.status}`;
  if (a.reason !== b.reason) return `reason ${JSON.stringify(a.reason)} vs ${JSON.stringify(b.reason)}`;
  if (JSON.stringify(a.headers) !== JSON.stringify(b.headers)) return `headers ${JSON.stringify(a.headers)} vs ${JSON.stringify(b.headers)}`;
  if (a.complete && b.complete && a.body !== b.body) return `body ${JSON.stringify(a.body)} vs ${JSON.stringify(b.body)}`;
  if (a.complete !== b.complete) return `complete ${a.complete} vs ${b.complete}`;
  // ours may refuse to reuse a connection llhttp would (e.g. HTTP/1.0 "keep-alive, close"), never the reverse
  if (a.keepAlive && !b.keepAlive) return 'keepAlive true vs false';
  return null;
}

/** llhttp reads "Transfer-Encoding: chunked<HTAB>" as not chunked and refuses "Content-Length: 5<HTAB>"; OWS is SP or HTAB. */
const TRAILING_HTAB_QUIRK = /\n(transfer-encoding|content-length):[^\n]*\t\r?\n/i;

const isAllowed = (kind: string): boolean => kind.startsWith('allowed:') || kind.startsWith('llhttp quirk:');

/** Compare one input; returns the disagreements (kind 'allowed: …' / 'llhttp quirk: …' for accepted ones). */
function differential(input: string, head: boolean, rng: Rng): Disagreement[] {
  const ds = compareWithLlhttp(input, head, rng);
  if (ds.some((d) => !isAllowed(d.kind)) && TRAILING_HTAB_QUIRK.test(input)) {
    return ds.map((d) => ({ ...d, kind: 'llhttp quirk: HTAB after a Transfer-Encoding / Content-Length value', detail: `${d.kind}: ${d.detail}` }));
  }
  return ds;
}

function compareWithLlhttp(input: string, head: boolean, rng: Rng): Disagreement[] {
  const buf = Buffer.from(input, 'latin1');
  const ours = parseOurs(buf, randomCuts(rng, buf.length), { head });
  const ll = parseLlhttp(buf, head);
  const out: Disagreement[] = [];
  const say = (kind: string, detail: string): Disagreement[] => {
    out.push({ kind, input, detail });
    return out;
  };
  if (ours.violations.length) return say('sink protocol', ours.violations.join('; '));
  const ourDone = ours.msgs.filter((m) => m.complete);
  for (let i = 0; i < ourDone.length; i++) {
    const a = ourDone[i];
    const b = ll.msgs[i];
    // deliberate: every 1xx is bodiless here; llhttp reads a body for 1xx other than 100/102/103
    const oddInformational = a.status >= 104 && a.status < 200 && a.headers.some(([n]) => /^(content-length|transfer-encoding)$/i.test(n));
    if (b === undefined) {
      if (oddInformational) return say('allowed: a 1xx never has a body', 'llhttp read a body');
      if (ll.upgraded) return say('ours lenient: accepted a message llhttp did not reach', 'llhttp stopped at an upgrade earlier');
      return say('ours lenient: accepted a message llhttp refused', `message ${i}: ${JSON.stringify(a)}; llhttp error ${ll.error}`);
    }
    const diff = sameMessage(a, b);
    if (diff !== null) {
      if (oddInformational) return say('allowed: a 1xx never has a body', diff);
      // llhttp fails message i after the head: ours completing it is lenient
      if (!b.complete && ll.error !== null && diff.startsWith('complete')) return say('ours lenient: completed a message llhttp refused', `message ${i}; llhttp error ${ll.error}`);
      return say('different parse', `message ${i}: ${diff}`);
    }
    if (a.status === 101) return out; // both stop understanding the stream here (the rest is another protocol)
    if (!a.keepAlive && i + 1 < ourDone.length && ll.error === 'HPE_CLOSED_CONNECTION' && ll.msgs.length === i + 1) {
      return say('allowed: llhttp refuses bytes after a non-keep-alive message', `message ${i}`);
    }
  }
  if (ours.error === null) {
    if (ll.error !== null || ll.msgs.filter((m) => m.complete).length !== ourDone.length) {
      return say('ours lenient: accepted a stream llhttp refused', `llhttp error ${ll.error}, ${ll.msgs.length} messages vs ours ${ourDone.length}`);
    }
    return out;
  }
  // ours failed after ourDone.length messages; llhttp going further is ours being stricter
  const llDone = ll.msgs.filter((m) => m.complete).length;
  const llFurther = ll.upgraded ? false : ll.error === null || llDone > ourDone.length;
  if (!llFurther) return out;
  if (ours.errorFrom === 'finish') return say('ours stricter: at finish()', `ours ${ours.error}`);
  const at = failingByte(buf, head);
  // the start of the message ours failed in: where the last complete message ended
  let from = 0;
  if (ourDone.length > 0) {
    const prefix = parseOurs(buf, everyByte(buf.length), { head, finish: false });
    from = endOffset(buf, prefix.msgs.filter((m) => m.complete).length, head);
  }
  const why = strictness(input, from, at, ours.error);
  if (why !== null) return say(`allowed: ${why}`, `ours ${ours.error} at byte ${at}`);
  return say('ours stricter: unclassified', `ours ${ours.error} at byte ${at} (${JSON.stringify(input.slice(Math.max(0, at - 20), at + 10))}); llhttp ${ll.error}`);
}

/** Byte offset at which our parser completed its n-th message (fed byte by byte). */
function endOffset(buf: Buffer, n: number, head: boolean): number {
  let done = 0;
  let at = 0;
  let i = 0;
  const p = new ResponseParser({
    parsedHead: () => head,
    parsedBody: () => {},
    parsedEnd: () => { if (++done === n) at = i + 1; },
    parsedError: () => {},
  });
  for (; i < buf.length && done < n; i++) p.execute(buf, i, i + 1);
  return at;
}

describe('differential against llhttp (Node 20)', () => {
  it('llhttp oracle sanity: it parses what we parse for a plain response', () => {
    const b = Buffer.from(`${CHUNKED}5\r\nhello\r\n0\r\n\r\n`, 'latin1');
    const ll = parseLlhttp(b, false);
    expect(ll.error).toBeNull();
    expect(ll.msgs.map((m) => [m.status, m.body, m.complete])).toEqual([[200, 'hello', true]]);
  });

  it('4000 generated responses (valid and mutated): never more lenient, stricter only deliberately', () => {
    const rng = prng(0xbe47);
    const counts = new Map<string, number>();
    const failures: Disagreement[] = [];
    let accepted = 0;
    let agreedRejected = 0;
    const N = 4000;
    for (let i = 0; i < N; i++) {
      const valid = validStream(rng);
      const input = rng() < 0.25 ? valid : mutate(rng, valid);
      const head = rng() < 0.08;
      const ds = differential(input, head, rng);
      if (ds.length === 0) {
        const r = parseOurs(Buffer.from(input, 'latin1'), [], { head });
        if (r.error === null) accepted++;
        else agreedRejected++;
      }
      for (const d of ds) {
        counts.set(d.kind, (counts.get(d.kind) ?? 0) + 1);
        if (!isAllowed(d.kind)) failures.push(d);
      }
    }
    const summary = [...counts].sort((a, b) => b[1] - a[1]).map(([k, n]) => `  ${String(n).padStart(5)}  ${k}`).join('\n');
    console.log(`differential: ${N} inputs, ${accepted} accepted by both alike, ${agreedRejected} refused by both (or equally far)\n${summary}`);
    // one example per failing kind, input JSON-escaped
    const examples = new Map<string, Disagreement>();
    for (const f of failures) if (!examples.has(f.kind + f.detail.slice(0, 30))) examples.set(f.kind + f.detail.slice(0, 30), f);
    for (const f of [...examples.values()].slice(0, 25)) console.log(`${f.kind}: ${f.detail}\n  input ${JSON.stringify(f.input)}`);
    expect(accepted).toBeGreaterThan(N / 4);
    expect(failures.map((f) => `${f.kind}: ${f.detail} — ${JSON.stringify(f.input)}`)).toEqual([]);
  });
});

describe('tiny chunks', () => {
  /** Every piece handed on, and the order of what happened. */
  function run(input: string): { pieces: number[]; body: string; log: string[] } {
    const pieces: number[] = [];
    const log: string[] = [];
    let body = '';
    const p = new ResponseParser({
      parsedHead: () => { log.push('head'); return false; },
      parsedBody: (c) => { pieces.push(c.length); body += Buffer.from(c).toString('latin1'); log.push('body'); },
      parsedEnd: () => { log.push('end'); },
      parsedError: (e) => { log.push(`error ${e.code}`); },
    });
    const b = Buffer.from(input, 'latin1');
    p.execute(b, 0, b.length);
    return { pieces, body, log };
  }
  const chunks = (text: string) => [...text].map((ch) => `1\r\n${ch}\r\n`).join('');

  it('a byte per chunk is handed on gathered: one piece per read (or per 16 KiB), not one per chunk — one client write, not 40,000', () => {
    const text = 'abcdefghij'.repeat(4000); // 40,000 one-byte chunks in one read
    const r = run(`${CHUNKED}${chunks(text)}0\r\n\r\n`);
    expect(r.body).toBe(text);
    expect(r.pieces.length).toBeLessThanOrEqual(3);
    expect(r.log.at(-1)).toBe('end');
    expect(r.log.filter((x) => x === 'end')).toHaveLength(1);
  });

  it('chunks just past a small size are gathered too: 100 chunks of 513 bytes are a few pieces, not 100 sends', () => {
    const piece = 'q'.repeat(513);
    const r = run(`${CHUNKED}${`201\r\n${piece}\r\n`.repeat(100)}0\r\n\r\n`);
    expect(r.body).toBe(piece.repeat(100));
    expect(r.pieces.length).toBeLessThanOrEqual(4);
  });

  it('keeps the order around large chunks, the end and an error; a read that ends mid-stream hands on what it has', () => {
    const big = 'B'.repeat(5000); // (larger than what is gathered)
    const r = run(`${CHUNKED}${chunks('xy')}${big.length.toString(16)}\r\n${big}\r\n${chunks('z')}0\r\n\r\n`);
    expect(r.body).toBe(`xy${big}z`);
    expect(r.pieces).toEqual([2, 5000, 1]);
    expect(r.log).toEqual(['head', 'body', 'body', 'body', 'end']);
    // small chunks then bad framing: what came before the error first
    const bad = run(`${CHUNKED}${chunks('ab')}zz\r\n`);
    expect(bad.log).toEqual(['head', 'body', expect.stringMatching(/^error /)]);
    expect(bad.body).toBe('ab');
    // no end yet: the read's small chunks are not held back for the next one
    const open = run(`${CHUNKED}${chunks('abc')}`);
    expect([open.body, open.log]).toEqual(['abc', ['head', 'body']]);
  });
});
