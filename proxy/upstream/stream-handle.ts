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
 * - `readStop()` / `readStart()` pause and resume a socket's reads (response backpressure).
 */
import type { Socket } from 'node:net';

interface Handle {
  writeLatin1String(req: WriteReq, data: string): number;
  readStop(): number;
  readStart(): number;
  reading: boolean;
}
interface WriteReq {
  handle: Handle;
  oncomplete: (status: number) => void;
  async: boolean;
  bytes: number;
  buffer: null;
}

const binding = (process as unknown as { binding(name: string): { WriteWrap: new () => WriteReq } }).binding('stream_wrap');
const WriteWrap = binding.WriteWrap;
if (typeof WriteWrap !== 'function') throw new Error(`this Node.js (${process.version}) has no stream_wrap.WriteWrap; berth's upstream client needs Node 20`);

function handleOf(socket: Socket): Handle | null {
  return (socket as unknown as { _handle: Handle | null })._handle;
}

/** An asynchronous completion needs nothing from us: failures close the socket. */
function written(): void {}

/** Write a Latin-1 string on the socket's handle. Returns 0, or a negative libuv error code. */
export function writeHead(socket: Socket, data: string): number {
  const h = handleOf(socket);
  if (h === null) return -9; // EBADF: the socket is already closed
  const req = new WriteWrap();
  req.handle = h;
  req.oncomplete = written;
  req.async = false;
  req.bytes = 0;
  req.buffer = null;
  return h.writeLatin1String(req, data);
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
