import type { HttpRequest, HttpResponse } from 'uWebSockets.js';
import { runtime } from './state.js';

const PREFIX = '/.well-known/acme-challenge/';

/**
 * An ACME HTTP-01 validation request for a token this proxy is proving (acme/manager.ts): the
 * key authorization, as text. Looked at only while an order is under way (`runtime.acmeChallenges`
 * is null otherwise: the request path pays one comparison), on the plain listener, before routing
 * — the name being proven may be the proxy's own, with no app behind it. Any other path, or a
 * token not ours, goes on to routing (an app may answer its own challenges).
 */
export function answerChallenge(res: HttpResponse, req: HttpRequest, method: string, tokens: Map<string, string>): boolean {
  if (method !== 'GET' && method !== 'HEAD') return false;
  const url = req.getUrl();
  if (!url.startsWith(PREFIX)) return false;
  // (a body would be left unread in the connection: such a request is routed as any other;
  // `Content-Length: 0` is no body)
  const length = req.getHeader('content-length');
  if ((length !== '' && length !== '0') || req.getHeader('transfer-encoding') !== '') return false;
  const answer = tokens.get(url.slice(PREFIX.length));
  if (answer === undefined) return false;
  ansRes = res; ansBody = answer; ansHead = method === 'HEAD';
  res.cork(corkedAnswer);
  return true;
}

let ansRes: HttpResponse;
let ansBody = '', ansHead = false;
function corkedAnswer(): void {
  ansRes.writeStatus('200 OK').writeHeader('content-type', 'text/plain').writeHeader('cache-control', 'no-store');
  // (HEAD: endWithoutBody(0) — with a length this uWS build does not count it as an answer and
  // aborts the process; see server/respond.ts)
  if (ansHead) ansRes.endWithoutBody(0);
  else ansRes.end(ansBody);
}

/** Set (or, with null, drop) the answer for `token` on this thread. */
export function setChallenge(token: string, answer: string | null): void {
  const m = runtime.acmeChallenges ?? new Map<string, string>();
  if (answer === null) m.delete(token);
  else m.set(token, answer);
  runtime.acmeChallenges = m.size === 0 ? null : m;
}
