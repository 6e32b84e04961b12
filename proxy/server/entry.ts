/**
 * The uWS entry point for HTTP, in request order: admission (admission.ts: table, Host, target,
 * route) → the client's headers (request-headers.ts: framing and byte checks, hop-by-hop rules,
 * forwarding headers) → the exchange (exchange.ts: endpoint, upstream connection, response).
 */
import type { HttpRequest, HttpResponse } from 'uWebSockets.js';
import { globalStats } from '../metrics/route-stats.js';
import { admit, admitted } from './admission.js';
import { PIPELINE_SMALL_ANSWERS } from '../upstream/connection.js';
import { clock } from '../upstream/timers.js';
import { Exchange } from './exchange.js';
import { peerAddress } from './peer.js';
import { readRequestHeaders, requestHead } from './request-headers.js';
import { internalError, logRejected, redirect, refuse } from './respond.js';
import { runtime } from './state.js';
import { answerChallenge } from './acme-challenge.js';

/** `https://` + the Host without its port + the HTTPS listener's (none for 443) + the same path. */
function toHttps(res: HttpResponse, req: HttpRequest, method: string): void {
  const raw = admitted.rawHost;
  const end = raw.startsWith('[') ? raw.indexOf(']') + 1 : raw.indexOf(':');
  const location = 'https://' + (end > 0 ? raw.slice(0, end) : raw) + runtime.httpsRedirect + admitted.path;
  const body = req.getHeader('transfer-encoding') !== '' || (req.getHeader('content-length') !== '' && req.getHeader('content-length') !== '0');
  redirect(res, location, admitted.requestId, method === 'HEAD', body);
  logRejected(admitted.requestId, method, admitted.host, admitted.logPath, 308, 'https_redirect');
}

export function handleRequest(res: HttpResponse, req: HttpRequest): void {
  try {
    route(res, req, false);
  } catch (e) {
    // A bug must cost one request, not the process. (try/catch is free in optimised code.)
    internalError(res, e as Error);
  }
}

/** The same for the HTTPS listener (X-Forwarded-Proto: https). */
export function handleTlsRequest(res: HttpResponse, req: HttpRequest): void {
  try {
    route(res, req, true);
  } catch (e) {
    internalError(res, e as Error);
  }
}

function route(res: HttpResponse, req: HttpRequest, tls: boolean): void {
  globalStats.requests++;
  const method = req.getCaseSensitiveMethod();
  // (only while a certificate is being ordered: null otherwise)
  const acme = runtime.acmeChallenges;
  if (acme !== null && !tls && answerChallenge(res, req, method, acme)) return;
  if (!admit(res, req, method)) return;
  if (!tls && runtime.httpsRedirect !== null) {
    toHttps(res, req, method);
    return;
  }
  const route = admitted.route!;
  const host = admitted.host;
  const requestId = admitted.requestId;
  // CONNECT would make the upstream connection a tunnel (an app server typically resets it, which
  // the breaker counts: three CONNECTs took a healthy route down): refused before anything is made
  if (method === 'CONNECT') {
    route.stats.refused++;
    refuse(res, 'connect_method', requestId, method, host, admitted.logPath);
    return;
  }
  const ex = new Exchange(res, route, method, admitted.path, host, requestId);
  if (route.byKey !== null) ex.affinity = admitted.affinity;
  ex.secure = tls;
  ex.authDigest = admitted.authDigest;
  ex.viaPath = admitted.viaPath;
  // (normalizeHost gives back the very string when it is in normal form)
  ex.canonicalHost = admitted.rawHost === host;
  const refusal = readRequestHeaders(req, ex, admitted.rawHost, peerAddress(res), requestId, tls, admitted.authHeader === 'authorization');
  if (refusal !== null) {
    route.stats.refused++;
    refuse(res, refusal, requestId, method, host, admitted.logPath);
    return;
  }
  route.stats.requests++;
  route.stats.inflight++;
  globalStats.inflight++;
  res.onAborted(() => {
    try {
      ex.onClientAborted();
    } catch (e) {
      internalError(null, e as Error);
    }
  });
  ex.hasBody = ex.chunkedIn || (ex.contentLengthIn !== '' && ex.contentLengthIn !== '0');
  // GET only: a HEAD answer is where apps most often get framing wrong (a body anyway); and
  // only while the route's answers are small and prompt (behind large or slow ones requests
  // would only wait)
  if (route.pipeline > 1 && method === 'GET' && !ex.hasBody && route.stats.answerBytes <= PIPELINE_SMALL_ANSWERS &&
    clock.now >= route.stats.pipelinePausedUntil) ex.pipeline = route.pipeline;
  ex.upstreamHead = requestHead(method, ex.path, ex.headers, ex.proxyLines, ex.chunkedIn, ex.contentLengthIn);
  if (ex.hasBody) {
    res.onData((ab, isLast) => {
      try {
        ex.onChunk(ab, isLast);
      } catch (e) {
        internalError(null, e as Error);
      }
    });
  }
  ex.attempt();
}
