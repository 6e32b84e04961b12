import { randomUUID } from 'node:crypto';
import { STATUS_CODES } from 'node:http';
import type { Socket } from 'node:net';

/**
 * What a client hears when its bytes never became a request Fastify could route: Node's HTTP
 * parser refused them, or its timeouts ran out (the head within `headersTimeout`, 60 s; the whole
 * request within `requestTimeout`, 10 minutes: a slowloris). The API's own error body, as every
 * other error has (`{"error":{"code","message","requestId"}}`, http/errors.ts), then the connection
 * is closed. Fastify's default answered these in a shape of its own.
 */
export function answerClientError(err: NodeJS.ErrnoException, socket: Socket): void {
  // a reset, or an answer already on its way on this connection: nothing can be said any more
  const inFlight = (socket as Socket & { _httpMessage?: { headersSent?: boolean } })._httpMessage;
  if (err.code === 'ECONNRESET' || !socket.writable || inFlight?.headersSent === true) {
    socket.destroy();
    return;
  }
  const [status, code, message] =
    err.code === 'ERR_HTTP_REQUEST_TIMEOUT' ? [408, 'request_timeout', 'the request did not arrive in time: its head must arrive within 60 s, all of it within 10 minutes']
    : err.code === 'HPE_HEADER_OVERFLOW' ? [431, 'headers_too_large', 'the request head is larger than 16 KiB']
    : [400, 'bad_request', 'malformed HTTP request'];
  const requestId = randomUUID();
  const body = JSON.stringify({ error: { code, message, requestId } });
  // Written, then the socket destroyed once the answer is flushed: Node's server sockets are
  // half-open, so end() alone would let a slowloris keep sending. A client that does not read the
  // answer loses the socket after a fixed delay (not an idle timer its bytes could reset).
  const deadline = setTimeout(() => socket.destroy(), 5000).unref();
  socket.once('close', () => clearTimeout(deadline));
  socket.end(`HTTP/1.1 ${status} ${STATUS_CODES[status]}\r\ncontent-type: application/json; charset=utf-8\r\ncontent-length: ${Buffer.byteLength(body)}\r\nx-request-id: ${requestId}\r\nconnection: close\r\n\r\n${body}`, () => socket.destroy());
}
