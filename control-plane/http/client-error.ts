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
    err.code === 'ERR_HTTP_REQUEST_TIMEOUT' ? [408, 'request_timeout', 'the request did not arrive in time (its head, or all of it)']
    : err.code === 'HPE_HEADER_OVERFLOW' ? [431, 'headers_too_large', 'the request head is larger than the server accepts']
    : [400, 'bad_request', 'malformed HTTP request'];
  const requestId = randomUUID();
  const body = JSON.stringify({ error: { code, message, requestId } });
  // A lingering close, as nginx makes: the answer written and our side closed; what the client
  // still sends is read and dropped (closing with unread bytes would reset the connection, and the
  // client's kernel could drop the answer with it) until it closes its side, or LINGER_MS at most —
  // a fixed deadline, not an idle timer a slowloris's bytes could reset (Node's server sockets are
  // half-open: end() alone let one keep sending for ever).
  const deadline = setTimeout(() => socket.destroy(), LINGER_MS).unref();
  socket.once('close', () => clearTimeout(deadline));
  socket.once('end', () => socket.destroy());
  socket.end(`HTTP/1.1 ${status} ${STATUS_CODES[status]}\r\ncontent-type: application/json; charset=utf-8\r\ncontent-length: ${Buffer.byteLength(body)}\r\nx-request-id: ${requestId}\r\nconnection: close\r\n\r\n${body}`);
  socket.resume();
}

/** How long a refused client's socket is read (and dropped) after the answer. */
const LINGER_MS = 1000;
