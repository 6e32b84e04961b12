/**
 * The one place berth touches Node's internal HTTP parser binding (llhttp, in C++), the way
 * Node's own HTTP client and server do: `parser.consume(socket._handle)` makes libuv hand every
 * read straight to llhttp, so no JS Buffer is created per read and the header block is parsed
 * without a JS tokenizer. Callbacks are numbered slots on the parser object.
 *
 * This is internal API and Node-version specific (package.json pins Node 20): misuse does not
 * throw, it aborts the process (a C++ CHECK). Keep every call behind this module;
 * test/proxy/llhttp.test.ts pins the behaviour berth relies on.
 */
import { createRequire } from 'node:module';
import type { Socket } from 'node:net';

const require = createRequire(import.meta.url);

interface NativeParser {
  initialize(type: number, resource: object, maxHeaderSize: number, lenient: number): void;
  consume(handle: unknown): void;
  unconsume(): void;
  finish(): Error | undefined;
  remove(): void;
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
  kOnExecute: number;
  kLenientOptionalCRBeforeLF: number;
}

const HTTPParser = (require('_http_common') as { HTTPParser: ParserClass }).HTTPParser;
if (typeof HTTPParser !== 'function' || typeof HTTPParser.prototype.consume !== 'function' || HTTPParser.kOnExecute === undefined) {
  throw new Error(`this Node.js (${process.version}) has no usable internal HTTPParser; berth's upstream client needs Node 20`);
}

/** What a connection wants to hear from its parser. `this` is the parser; `owner` is set on it. */
export interface ParserOwner {
  /** headers: flat [name, value, …] as Latin-1 strings; return true to tell llhttp there is no body (HEAD) */
  parsedHead(status: number, statusText: string, headers: string[], keepAlive: boolean): boolean;
  parsedBody(chunk: Buffer): void;
  parsedEnd(): void;
  parsedError(err: ParserError): void;
}

export interface ParserError extends Error {
  code: string;
}

interface OwnedParser extends NativeParser {
  owner: ParserOwner;
  /** header fields llhttp flushed early (more than 32 fields) */
  partial: string[] | null;
}

// Module-level callbacks: no closure per connection.
function onHeaders(this: OwnedParser, headers: string[]): void {
  this.partial = this.partial === null ? headers : this.partial.concat(headers);
}
function onHeadersComplete(this: OwnedParser, _vMajor: number, _vMinor: number, headers: string[] | undefined, _method: unknown, _url: unknown,
  status: number, statusText: string, _upgrade: boolean, keepAlive: boolean): number {
  let h = headers ?? [];
  if (this.partial !== null) {
    h = this.partial.concat(h);
    this.partial = null;
  }
  return this.owner.parsedHead(status, statusText, h, keepAlive) ? 1 : 0;
}
function onBody(this: OwnedParser, chunk: Buffer): void {
  this.owner.parsedBody(chunk);
}
function onMessageComplete(this: OwnedParser): void {
  this.owner.parsedEnd();
}
function onExecute(this: OwnedParser, ret: number | ParserError): void {
  if (typeof ret !== 'number') this.owner.parsedError(asParserError(ret));
}

function asParserError(e: Error): ParserError {
  const err = e as ParserError;
  if (typeof err.code !== 'string') err.code = 'HPE_UNKNOWN';
  err.name = 'HTTPParserError';
  return err;
}

/** Largest response head accepted (Node's default). */
const MAX_HEADER_SIZE = 16 * 1024;

/**
 * A response parser consuming the socket's reads in C++. Responses whose header lines end in a
 * bare LF are accepted (curl and nginx do); everything else is strict.
 */
export class ResponseParser {
  private readonly p: OwnedParser;
  private consumed = false;

  constructor(owner: ParserOwner, socket: Socket) {
    const p = new HTTPParser() as OwnedParser;
    p.initialize(HTTPParser.RESPONSE, {}, MAX_HEADER_SIZE, HTTPParser.kLenientOptionalCRBeforeLF);
    p.owner = owner;
    p.partial = null;
    p[HTTPParser.kOnHeaders] = onHeaders;
    p[HTTPParser.kOnHeadersComplete] = onHeadersComplete;
    p[HTTPParser.kOnBody] = onBody;
    p[HTTPParser.kOnMessageComplete] = onMessageComplete;
    p[HTTPParser.kOnExecute] = onExecute;
    this.p = p;
    const handle = (socket as unknown as { _handle: unknown })._handle;
    if (handle === null || handle === undefined) throw new Error('socket has no handle to consume');
    p.consume(handle);
    this.consumed = true;
  }

  /** The peer ended the stream: completes a response delimited by the connection's end. */
  finish(): ParserError | null {
    const r = this.p.finish();
    return r instanceof Error ? asParserError(r) : null;
  }

  /** Detach from the socket and free the native parser (deferred: may be called from a callback). */
  close(): void {
    if (this.consumed) {
      this.consumed = false;
      this.p.unconsume();
    }
    setImmediate(closeParser, this.p);
  }
}

function closeParser(p: NativeParser): void {
  p.remove();
  p.close();
}

/** Stop / restart reading a socket whose reads llhttp consumes (response backpressure). */
export function readStop(socket: Socket): void {
  const h = (socket as unknown as { _handle: { readStop(): number } | null })._handle;
  if (h !== null) h.readStop();
}
export function readStart(socket: Socket): void {
  const h = (socket as unknown as { _handle: { readStart(): number } | null })._handle;
  if (h !== null) h.readStart();
}
