/**
 * Answers the proxy makes itself: errors (with `x-berth-error` and the request id, so every
 * error says who made it and which request it was), admission refusals, and the last-resort
 * 500 when a bug escapes. Safe inside or outside a uWS callback.
 */
import { reportInternalError } from '../resilience/internal-errors.js';
import type { HttpResponse } from 'uWebSockets.js';
import { globalStats } from '../metrics/route-stats.js';
import { REFUSALS, type Refusal } from './admission.js';
import { statusLine } from './headers.js';
import { newRequestId } from './request-id.js';
import { runtime } from './state.js';

let errRes: HttpResponse;
let errStatus = 0, errCode = '', errId = '', errMsg = '', errHead = false, errClose = false;
function corkedError(): void {
  errRes.writeStatus(statusLine(errStatus));
  errRes.writeHeader('content-type', 'text/plain; charset=utf-8');
  errRes.writeHeader('x-berth-error', errCode);
  errRes.writeHeader('x-request-id', errId);
  errRes.writeHeader('cache-control', 'no-store');
  if (errStatus === 401) errRes.writeHeader('www-authenticate', 'Bearer realm="berth"');
  // HEAD: `endWithoutBody(0, close)`, nothing else. In this uWS build, inside a request handler
  // without an abort handler, `endWithoutBody(undefined, close)` and `endWithoutBody(n > 0)` do
  // not count as an answer: uWS then aborts the whole process (any client could, with HEAD to an
  // unknown host). test/proxy/head-errors.test.ts pins it.
  if (errHead) errRes.endWithoutBody(0, errClose);
  else errRes.end(`${errStatus} ${errCode}: ${errMsg}\nrequest-id: ${errId}\n`, errClose);
}

/**
 * Answer with a proxy-generated error. Safe inside or outside a uWS callback. `close`: the
 * connection is closed after it (the rest of the client's byte stream cannot be trusted: where
 * this request ends is ambiguous, so whatever follows must not be read as another request).
 */
export function sendError(res: HttpResponse, status: number, code: string, requestId: string, message: string, head = false, close = false): void {
  errRes = res; errStatus = status; errCode = code; errId = requestId; errMsg = message; errHead = head; errClose = close;
  res.cork(corkedError);
}

let redirRes: HttpResponse;
let redirLocation = '', redirId = '', redirHead = false, redirClose = false;
function corkedRedirect(): void {
  redirRes.writeStatus('308 Permanent Redirect');
  redirRes.writeHeader('location', redirLocation);
  redirRes.writeHeader('x-request-id', redirId);
  // HEAD: see corkedError
  if (redirHead) redirRes.endWithoutBody(0, redirClose);
  else redirRes.end(`see ${redirLocation}\n`, redirClose);
}

/**
 * 308 to the same URL on HTTPS (`--https-redirect`), as Cloud Run sends plain HTTP to HTTPS.
 * `close`: the request has a body the proxy does not read, so the connection ends with it.
 */
export function redirect(res: HttpResponse, location: string, requestId: string, head: boolean, close: boolean): void {
  redirRes = res; redirLocation = location; redirId = requestId; redirHead = head; redirClose = close;
  res.cork(corkedRedirect);
}

export function logRejected(requestId: string, method: string, host: string, path: string, status: number, reason: string): void {
  const log = runtime.accessLog;
  if (log !== null && log.sample()) log.write(requestId, method, host, path, status, '', '', 0, reason);
}

export function internalError(res: HttpResponse | null, e: Error): void {
  reportInternalError('handling a request', e);
  if (res === null) return;
  try {
    sendError(res, 500, 'internal_error', newRequestId(), 'the proxy failed to handle this request');
  } catch { /* response already gone */ }
}

/** Answer a request admission refused (400), before any endpoint is picked. */
export function refuse(res: HttpResponse, why: Refusal, requestId: string, method: string, host: string, path: string): void {
  globalStats.badRequest++;
  logRejected(requestId, method, host, path, 400, why);
  // After a request the proxy will not forward, where the next one starts is not something to
  // guess: the 400 closes the connection (as nginx does). It is sent on the next turn, not now:
  // while this response is pending, uWS treats any bytes already read after this request as a
  // pipelined request and closes the connection instead of handing them to berth as a new
  // request (that is how `Content-Length: 0` + `Content-Length: 41` + a hidden request would
  // otherwise reach an app). Error path only: closures are fine here.
  const r: Refusing = { res, why, requestId, head: method === 'HEAD', aborted: false };
  res.onAborted(() => { r.aborted = true; });
  refusing.push(r);
  if (refusing.length === 1) setImmediate(flushRefusals);
}

interface Refusing { res: HttpResponse; why: Refusal; requestId: string; head: boolean; aborted: boolean }
const refusing: Refusing[] = [];
function flushRefusals(): void {
  const all = refusing.splice(0);
  for (const r of all) {
    if (!r.aborted) sendError(r.res, 400, r.why, r.requestId, REFUSALS[r.why], r.head, true);
  }
}
