/**
 * Not a proxy: the floor. The least a uWebSockets.js 20.30 + Node 20 process can do to relay a
 * request: the uWS handler reads the method, URL, headers and the peer's address, writes one head
 * string on a pooled keep-alive socket (berth's own `upstream/stream-handle.ts` primitives, the
 * cheapest write and read Node has), finds the answer's head in one read, and hands it to uWS in
 * one corked call. No checks, no request id, no metrics, no timeouts, no breaker, no retries.
 *
 * It is in the bench to say what berth's runtime costs by itself on this machine: berth's CPU per
 * request minus the floor's is what berth's own work (validation, routing, books) costs, and the
 * floor's ratio to nginx and to the Node peers is the most any proxy built on this runtime can
 * reach here. Enough to serve the bench's scenarios correctly (Content-Length answers of any size
 * with backpressure, request bodies with a Content-Length); anything else (chunked answers, a
 * chunked request, a head split across reads) is answered 502 rather than relayed wrong.
 */
import { connect, type Socket } from 'node:net';
import { createRequire } from 'node:module';
import type { HttpRequest, HttpResponse, TemplatedApp } from 'uWebSockets.js';
import { readStart, readStop, takeReads, writeHead, writeParts, type ReadSink } from '../../../proxy/upstream/stream-handle.js';
import { peerConfig, router } from './common.js';

const uWS = createRequire(import.meta.url)('uWebSockets.js') as typeof import('uWebSockets.js');
const cfg = peerConfig();
const pick = router(cfg);

/** every upstream read lands here (one connection's read is handled before the next read) */
const READ = Buffer.allocUnsafe(64 * 1024);
const OUT = new Uint8Array(32 * 1024);
const idle = new Map<string, Upstream[]>();

const CRLFCRLF = Buffer.from('\r\n\r\n');

class Upstream implements ReadSink {
  readonly sock: Socket;
  ready = false;
  ex: Exchange | null = null;
  /** a head written before the socket connected */
  queued: Array<string | Buffer> | null = null;

  constructor(readonly address: string) {
    const [host, port] = address.split(':');
    this.sock = connect({ host, port: Number(port), onread: { buffer: READ, callback: () => true } });
    this.sock.setNoDelay(true);
    this.sock.once('connect', () => {
      takeReads(this.sock, this);
      this.ready = true;
      if (this.queued !== null) {
        const q = this.queued;
        this.queued = null;
        this.write(q);
      }
    });
    this.sock.on('error', () => this.ex?.fail());
    this.sock.on('close', () => {
      this.ready = false;
      const list = idle.get(this.address);
      if (list) {
        const i = list.indexOf(this);
        if (i >= 0) list.splice(i, 1);
      }
      this.ex?.fail();
    });
  }

  write(parts: Array<string | Buffer>): void {
    if (!this.ready) this.queued = parts;
    else if (parts.length === 2) writeHead(this.sock, parts[0] as string);
    else writeParts(this.sock, parts);
  }

  onRead(n: number): void {
    const ex = this.ex;
    if (ex === null) return;
    ex.read(n);
  }

  release(): void {
    this.ex = null;
    let list = idle.get(this.address);
    if (!list) idle.set(this.address, (list = []));
    list.push(this);
  }
}

let cur: Exchange;
let curChunk: Uint8Array;
let curHeadLen = 0;
function corkedFirst(): void { cur.writeFirst(curChunk, curHeadLen); }
function corkedBody(): void { cur.writeBody(curChunk); }
function corked502(): void {
  if (cur.aborted || cur.done) return;
  cur.done = true;
  cur.res.writeStatus('502 Bad Gateway').end('floor: upstream answer not relayed\n');
}

class Exchange {
  aborted = false;
  done = false;
  up: Upstream | null = null;
  length = -1;
  sent = 0;
  /** what uWS did not take of the last body piece (a copy) */
  rest: Uint8Array | null = null;
  body: Buffer[] = [];

  constructor(readonly res: HttpResponse) {}

  read(n: number): void {
    if (this.length < 0) {
      const end = READ.indexOf(CRLFCRLF, 0);
      if (end < 0 || end + 4 > n) return this.fail();
      const headEnd = end + 2;
      // status line: "HTTP/1.1 200 OK\r\n"
      let p = READ.indexOf(13, 0);
      let len = 0;
      for (let i = 9; i < p; i++) OUT[len++] = READ[i];
      let length = -1;
      p += 2;
      while (p < headEnd) {
        const eol = READ.indexOf(13, p);
        const c = READ[p] | 0x20;
        // framing, hop-by-hop lines and Date are uWS's to write (as berth drops them): content-length,
        // transfer-encoding (not relayed), connection, keep-alive, date
        if (c === 0x63 && (READ[p + 8] | 0x20) === 0x6c && READ[p + 14] === 58) {
          length = 0;
          for (let i = p + 15; i < eol; i++) if (READ[i] !== 32) length = length * 10 + READ[i] - 48;
        } else if (c === 0x74 && READ[p + 17] === 58) {
          return this.fail();
        } else if (!(c === 0x63 && READ[p + 10] === 58) && !(c === 0x6b && READ[p + 10] === 58) && !(c === 0x64 && READ[p + 4] === 58)) {
          OUT[len++] = 13;
          OUT[len++] = 10;
          for (let i = p; i < eol; i++) OUT[len++] = READ[i];
        }
        p = eol + 2;
      }
      if (length < 0) return this.fail();
      this.length = length;
      if (this.aborted) return;
      cur = this;
      curChunk = new Uint8Array(READ.buffer, READ.byteOffset + end + 4, n - end - 4);
      curHeadLen = len;
      this.res.cork(corkedFirst);
    } else {
      if (this.aborted) {
        this.sent += n;
        if (this.sent >= this.length) this.finish();
        return;
      }
      cur = this;
      curChunk = new Uint8Array(READ.buffer, READ.byteOffset, n);
      this.res.cork(corkedBody);
    }
  }

  writeFirst(chunk: Uint8Array, headLen: number): void {
    const res = this.res;
    res.writeStatus(new Uint8Array(OUT.buffer, 0, headLen));
    if (chunk.length === this.length) {
      this.done = true;
      res.end(chunk);
      this.finish();
    } else this.writeBody(chunk);
  }

  writeBody(chunk: Uint8Array): void {
    const res = this.res;
    const [ok, done] = res.tryEnd(chunk, this.length);
    if (done) {
      this.done = true;
      this.finish();
      return;
    }
    if (ok) {
      this.sent += chunk.length;
      return;
    }
    const taken = res.getWriteOffset() - this.sent;
    this.sent += taken;
    this.rest = chunk.slice(taken);
    readStop(this.up!.sock);
    res.onWritable(() => this.writable());
  }

  writable(): boolean {
    const rest = this.rest!;
    const [ok, done] = this.res.tryEnd(rest, this.length);
    if (done) {
      this.done = true;
      this.finish();
      return true;
    }
    const taken = this.res.getWriteOffset() - this.sent;
    this.sent += taken;
    if (!ok) {
      this.rest = rest.slice(taken);
      return false;
    }
    this.rest = null;
    readStart(this.up!.sock);
    return true;
  }

  finish(): void {
    const up = this.up;
    this.up = null;
    up?.release();
  }

  fail(): void {
    const up = this.up;
    this.up = null;
    if (up !== null) {
      up.ex = null;
      up.sock.destroy();
    }
    if (!this.aborted && !this.done) {
      cur = this;
      this.res.cork(corked502);
    }
  }
}

function onAborted(this: Exchange): void {
  this.aborted = true;
  // an answer still coming on the connection would be read as the next request's: close it
  if (this.up !== null && this.length >= 0 && !this.done) {
    const up = this.up;
    this.up = null;
    up.ex = null;
    up.sock.destroy();
  } else if (this.up !== null && this.length < 0) this.fail();
}

let headers = '';
let contentLength = 0;
function eachHeader(k: string, v: string): void {
  if (k === 'connection' || k === 'keep-alive') return;
  if (k === 'content-length') contentLength = Number(v);
  headers += k + ': ' + v + '\r\n';
}

function handle(res: HttpResponse, req: HttpRequest): void {
  const ip = new Uint8Array(res.getRemoteAddress());
  const xff = ip.length === 4 ? `${ip[0]}.${ip[1]}.${ip[2]}.${ip[3]}` : `${ip[12]}.${ip[13]}.${ip[14]}.${ip[15]}`;
  const q = req.getQuery();
  headers = '';
  contentLength = 0;
  req.forEach(eachHeader);
  if (req.getHeader('transfer-encoding') !== '') {
    res.writeStatus('501 Not Implemented').end('floor: chunked requests are not relayed\n');
    return;
  }
  const head = req.getCaseSensitiveMethod() + ' ' + req.getUrl() + (q ? '?' + q : '') + ' HTTP/1.1\r\n' + headers + 'x-forwarded-for: ' + xff + '\r\n\r\n';
  const address = pick(req.getHeader('host'));
  const ex = new Exchange(res);
  res.onAborted(onAborted.bind(ex));
  const up = idle.get(address)?.pop() ?? new Upstream(address);
  up.ex = ex;
  ex.up = up;
  if (contentLength === 0) {
    up.write([head, 'latin1']);
    return;
  }
  let got = 0;
  res.onData((ab, last) => {
    ex.body.push(Buffer.from(new Uint8Array(ab)));
    got += ab.byteLength;
    if (!last) return;
    if (ex.up === null) return;
    const parts: Array<string | Buffer> = [head, 'latin1'];
    for (const b of ex.body) parts.push(b, 'buffer');
    ex.body = [];
    if (got !== contentLength) ex.fail();
    else up.write(parts);
  });
}

const app: TemplatedApp = uWS.App();
app.any('/*', handle);
app.listen('127.0.0.1', cfg.port, (token) => {
  if (!token) {
    process.stderr.write(`uws-floor: cannot listen on ${cfg.port}\n`);
    process.exit(1);
  }
  process.stdout.write(`uws-floor listening on ${cfg.port}\n`);
});
