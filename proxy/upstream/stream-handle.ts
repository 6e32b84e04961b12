/**
 * The one place the upstream client reaches under `net.Socket` to its libuv handle (Node 20
 * internals, pinned by test/proxy/stream-handle.test.ts; `engines` pins Node 20):
 *
 * - `writeHead()` hands a request head to the handle's `writeLatin1String` — what
 *   `socket.write(str, 'latin1')` ends in — without the Writable stream machinery in between
 *   (its state, buffering decisions and callbacks cost about a microsecond per request). libuv
 *   keeps writes to one handle in order, so body chunks written later through the stream still
 *   follow the head; a write that does not complete at once is finished by libuv (the string is
 *   copied into the request), and an error surfaces as the socket's error/close like any other.
 * - `writeParts()` hands a head and a body piece (with its framing) to the handle's `writev` in one
 *   call — what a corked `socket.write()` of each ends in — for a small POST: the stream's cork,
 *   buffering and per-write callbacks cost more than the write. The body Buffer is kept by the
 *   request until libuv has written it when the write does not complete at once.
 * - `takeReads()` has a socket's reads (made with `net.connect({ onread })`, into one caller's
 *   buffer) delivered straight from the handle, without the JS stream layer's `onStreamRead` in
 *   between; end of stream and errors still go to it (the socket's 'end', 'error', 'close').
 * - `readStop()` / `readStart()` pause and resume a socket's reads (response backpressure).
 */
import type { Socket } from 'node:net';

interface Handle {
  /** bytes libuv still has to write (what did not go at once) */
  readonly writeQueueSize: number;
  writeLatin1String(req: WriteReq, data: string): number;
  /** (all_buffers false) `chunks` alternates data and its encoding: 'latin1' strings, 'buffer' Buffers */
  writev(req: WriteReq, chunks: Array<string | Buffer>, allBuffers: boolean): number;
  readStop(): number;
  readStart(): number;
  reading: boolean;
  onread: (this: Handle, arrayBuffer?: ArrayBuffer) => unknown;
  [SINK]?: ReadSink;
  [STREAM_ONREAD]?: (this: Handle, arrayBuffer?: ArrayBuffer) => unknown;
}
export interface ReadSink {
  /** `n` bytes were read into the socket's onread buffer */
  onRead(n: number): void;
}
const SINK = Symbol('berth.readSink');
const STREAM_ONREAD = Symbol('berth.streamOnread');
interface WriteReq {
  handle: Handle;
  oncomplete: (status: number) => void;
  async: boolean;
  bytes: number;
  buffer: null;
  /** what an asynchronous writev must keep alive until it completes (its Buffers are not copied) */
  _chunks?: Array<string | Buffer> | null;
}

interface StreamWrapBinding {
  WriteWrap: new () => WriteReq;
  /** shared with C++: the byte count (or error) of the read being delivered */
  streamBaseState: Int32Array;
  kReadBytesOrError: number;
  kLastWriteWasAsync: number;
}
const binding = (process as unknown as { binding(name: string): StreamWrapBinding }).binding('stream_wrap');
const WriteWrap = binding.WriteWrap;
const streamBaseState = binding.streamBaseState;
const kReadBytesOrError = binding.kReadBytesOrError;
const kLastWriteWasAsync = binding.kLastWriteWasAsync;
if (typeof WriteWrap !== 'function' || !(streamBaseState instanceof Int32Array) || typeof kReadBytesOrError !== 'number' || typeof kLastWriteWasAsync !== 'number') {
  throw new Error(`this Node.js (${process.version}) has no usable stream_wrap binding; berth's upstream client needs Node 20`);
}

function handleOf(socket: Socket): Handle | null {
  return (socket as unknown as { _handle: Handle | null })._handle;
}

/**
 * An asynchronous completion needs nothing from us. Its failure is not reported here: the peer's
 * reset or close reaches the read side (reads run until the answer's head at least), and the
 * connection's deadlines cover the rest.
 */
function written(): void {}

/**
 * The request object of the last write, when that write completed at once: nothing in C++ holds
 * it then (a write wrap is only made for what libuv could not write at once), so the next write
 * uses it again instead of instantiating another.
 */
let spare: WriteReq | null = null;

function writeReq(h: Handle): WriteReq {
  let req = spare;
  spare = null;
  if (req === null) {
    req = new WriteWrap();
    req.oncomplete = written;
    req.async = false;
    req.bytes = 0;
    req.buffer = null;
    req._chunks = null;
  }
  req.handle = h;
  return req;
}

/** Write a Latin-1 string on the socket's handle. Returns 0, or a negative libuv error code. */
export function writeHead(socket: Socket, data: string): number {
  const h = handleOf(socket);
  if (h === null) return -9; // EBADF: the socket is already closed
  const req = writeReq(h);
  const err = h.writeLatin1String(req, data);
  // an asynchronous write keeps its request until libuv is done with it
  if (err === 0 && streamBaseState[kLastWriteWasAsync] === 0) spare = req;
  return err;
}

/** Bytes written straight to the socket's handle that libuv has not written yet. */
export function queuedBytes(socket: Socket): number {
  const h = handleOf(socket);
  return h === null ? 0 : h.writeQueueSize;
}

/**
 * Write `chunks` — data and encoding, alternating: a Latin-1 string and 'latin1', a Buffer and
 * 'buffer' — on the socket's handle in one writev. Returns 0, or a negative libuv error code.
 */
export function writeParts(socket: Socket, chunks: Array<string | Buffer>): number {
  const h = handleOf(socket);
  if (h === null) return -9;
  const req = writeReq(h);
  const err = h.writev(req, chunks, false);
  if (err === 0 && streamBaseState[kLastWriteWasAsync] !== 0) req._chunks = chunks; // (libuv still reads the Buffers)
  else if (err === 0) spare = req;
  return err;
}

function onHandleRead(this: Handle, arrayBuffer?: ArrayBuffer): unknown {
  const n = streamBaseState[kReadBytesOrError];
  if (n > 0) {
    this[SINK]!.onRead(n);
    return undefined;
  }
  // end of stream, errors: the stream layer's own handling
  return this[STREAM_ONREAD]!.call(this, arrayBuffer);
}

/** Deliver the socket's reads to `sink` (call right after `net.connect({ onread })`). */
export function takeReads(socket: Socket, sink: ReadSink): void {
  const h = handleOf(socket);
  if (h === null || typeof h.onread !== 'function') throw new Error('socket has no handle to read from');
  h[SINK] = sink;
  h[STREAM_ONREAD] = h.onread;
  h.onread = onHandleRead;
}

export function readStop(socket: Socket): void {
  const h = handleOf(socket);
  if (h !== null) {
    h.reading = false;
    h.readStop();
  }
}

export function readStart(socket: Socket): void {
  const h = handleOf(socket);
  if (h !== null) {
    h.reading = true;
    h.readStart();
  }
}
