/**
 * What an upstream error means, as one pure decision: whose fault it was (does it count against
 * the endpoint's circuit breaker?), whether another endpoint may be tried, and what the client is
 * told. The breaker must only ever see the endpoint's own failures — a client must not be able to
 * open a circuit (and take an app offline) with requests the upstream client refuses to send.
 *
 * Endpoint faults: connect refused/reset/timeout, response-header timeout, a reset before the
 * response, a malformed response (llhttp parse error). Client faults: anything the upstream
 * client refused to send (the WebSocket path's undici: invalid header bytes, body length mismatch).
 * Codes are berth's upstream client's (upstream/connection.ts) and undici's (WebSocket path). Protocol faults: a response
 * the upstream client cannot relay (an unsolicited 100 or 101); the app may have been provoked by
 * the request, so they are reported as 502 but not counted. Everything else is neutral.
 */

export const FAULT_ENDPOINT = 0;
export const FAULT_CLIENT = 1;
export const FAULT_PROTOCOL = 2;
export const FAULT_NEUTRAL = 3;
export type Fault = 0 | 1 | 2 | 3;

export interface Verdict {
  fault: Fault;
  /** may another endpoint be tried (nothing reached the upstream, or it is safe to repeat) */
  retry: boolean;
  status: number;
  code: string;
  message: string;
}

const CONNECT_CODES = new Set(['ECONNREFUSED', 'UPSTREAM_CONNECT_TIMEOUT', 'UND_ERR_CONNECT_TIMEOUT', 'EHOSTUNREACH', 'ENETUNREACH', 'EADDRNOTAVAIL', 'ENOTFOUND', 'EAI_AGAIN']);

/** Errors that mean no byte reached the upstream: worth another endpoint. */
export function isConnectError(code: string | undefined): boolean {
  return code !== undefined && CONNECT_CODES.has(code);
}

const IDEMPOTENT = new Set(['GET', 'HEAD', 'OPTIONS', 'TRACE', 'PUT', 'DELETE']);

export interface UpstreamError {
  code?: string;
  name?: string;
  message: string;
}

/** a request is sent again after connections closed under it (stale, or before it went out) at most this often; then judged as the error says */
export const MAX_STALE_RESENDS = 8;

/**
 * A request that went out on a reused keep-alive connection the upstream closed before a byte of
 * answer (the keep-alive race, UPSTREAM_STALE_CONNECTION): send it again on another connection —
 * not a retry, not the endpoint's fault — when that is safe: no body, a safe method, and not
 * already `resends` times (each try uses up one stale connection).
 */
export function resendsStale(method: string, hasBody: boolean, resends: number): boolean {
  return !hasBody && resends < MAX_STALE_RESENDS && (method === 'GET' || method === 'HEAD' || method === 'OPTIONS');
}

/**
 * A request given a connection that closed before its head went out (UPSTREAM_NOT_SENT): nothing
 * of it reached the upstream, so any method, with its body, is sent again — up to the same cap
 * (an upstream that closes every connection the moment it is used must not hold a request for
 * ever); then the endpoint's failure, another endpoint tried for a bodiless request (see
 * judgeBeforeHeaders).
 */
export function resendsUnsent(resends: number): boolean {
  return resends < MAX_STALE_RESENDS;
}

/** Judge an upstream error that happened before any response header reached the proxy. */
export function judgeBeforeHeaders(err: UpstreamError, method: string): Verdict {
  const code = err.code;
  if (isConnectError(code)) {
    return code === 'UPSTREAM_CONNECT_TIMEOUT' || code === 'UND_ERR_CONNECT_TIMEOUT'
      ? { fault: FAULT_ENDPOINT, retry: true, status: 504, code: 'upstream_timeout', message: 'upstream did not accept the connection in time' }
      : { fault: FAULT_ENDPOINT, retry: true, status: 502, code: 'upstream_connect_failed', message: `could not connect to upstream (${code})` };
  }
  if (code === 'UPSTREAM_HEADERS_TIMEOUT' || code === 'UND_ERR_HEADERS_TIMEOUT') {
    return { fault: FAULT_ENDPOINT, retry: false, status: 504, code: 'upstream_timeout', message: 'upstream did not answer in time' };
  }
  if (code === 'UPSTREAM_REQUEST_TIMEOUT') {
    // a slow client, or an upstream that stopped reading the body: which one, the connection
    // cannot tell, so the breaker does not count it (a client must not open it by trickling)
    return { fault: FAULT_NEUTRAL, retry: false, status: 408, code: 'request_timeout', message: 'the request body did not reach the upstream in time (16 KiB at least every request timeout, up to 60 s; all of it within the request timeout, at least 5 min)' };
  }
  if (code === 'UND_ERR_INVALID_ARG' || code === 'UND_ERR_NOT_SUPPORTED') {
    return { fault: FAULT_CLIENT, retry: false, status: 400, code: 'bad_request', message: `the request cannot be forwarded: ${err.message}` };
  }
  if (code === 'UND_ERR_REQ_CONTENT_LENGTH_MISMATCH') {
    return { fault: FAULT_CLIENT, retry: false, status: 400, code: 'bad_request_body', message: 'request body length does not match Content-Length' };
  }
  if (code === 'UPSTREAM_POOL_FULL') {
    return { fault: FAULT_NEUTRAL, retry: false, status: 503, code: 'overloaded', message: err.message };
  }
  if (code === 'UPSTREAM_UNSOLICITED_1XX' || (code === 'UND_ERR_SOCKET' && (err.message === 'bad response' || err.message === 'bad upgrade'))) {
    // undici's words for a 1xx it did not ask for (100 without Expect, 101 without Upgrade)
    return { fault: FAULT_PROTOCOL, retry: false, status: 502, code: 'upstream_protocol_error', message: 'upstream sent an informational (1xx) response the proxy did not ask for' };
  }
  if (err.name === 'HTTPParserError' || (code !== undefined && code.startsWith('HPE_'))) {
    return { fault: FAULT_ENDPOINT, retry: false, status: 502, code: 'upstream_protocol_error', message: `upstream sent a malformed response: ${err.message}` };
  }
  if (code === 'UPSTREAM_NOT_SENT') {
    // (after MAX_STALE_RESENDS of them: an endpoint that closes its connections as they are used)
    return { fault: FAULT_ENDPOINT, retry: true, status: 502, code: 'upstream_error', message: `upstream closed the connection before the request went out (${code})` };
  }
  if (code === 'UPSTREAM_CLOSED' || code === 'UPSTREAM_STALE_CONNECTION' || code === 'UND_ERR_SOCKET' || code === 'ECONNRESET' || code === 'EPIPE') {
    return { fault: FAULT_ENDPOINT, retry: IDEMPOTENT.has(method), status: 502, code: 'upstream_error', message: `upstream closed the connection (${code})` };
  }
  return { fault: FAULT_NEUTRAL, retry: false, status: 502, code: 'upstream_error', message: `upstream failed: ${code ?? err.message}` };
}

/** Does an error after the response started count against the endpoint? (Body timeouts and resets do.) */
export function faultAfterHeaders(err: UpstreamError): Fault {
  const code = err.code;
  if (code === 'UND_ERR_ABORTED') return FAULT_NEUTRAL;
  if (code === 'UPSTREAM_BODY_TIMEOUT' || code === 'UPSTREAM_CLOSED' || code === 'UND_ERR_BODY_TIMEOUT' || code === 'UND_ERR_SOCKET' || code === 'ECONNRESET' || err.name === 'HTTPParserError') return FAULT_ENDPOINT;
  return FAULT_NEUTRAL;
}
