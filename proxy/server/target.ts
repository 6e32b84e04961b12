import type { HttpRequest } from 'uWebSockets.js';
import { newRequestId, validRequestId } from './request-id.js';

/**
 * Where a request is going, for HTTP and WebSocket alike: `/apps/{host}/{path}` (access without
 * DNS) or the Host header, plus the request id (kept when sane, else created).
 * One reused object filled by readTarget(): nothing allocated per request beyond the strings.
 */
export const target = { path: '', rawHost: '', requestId: '' };

export function readTarget(req: HttpRequest): void {
  let path = req.getUrl();
  let rawHost = req.getHeader('host');
  if (path.length > 6 && path.charCodeAt(1) === 97 && path.startsWith('/apps/')) {
    const slash = path.indexOf('/', 6);
    rawHost = slash === -1 ? path.slice(6) : path.slice(6, slash);
    path = slash === -1 ? '/' : path.slice(slash);
  }
  target.path = path;
  target.rawHost = rawHost;
  const ridIn = req.getHeader('x-request-id');
  target.requestId = ridIn !== '' && validRequestId(ridIn) ? ridIn : newRequestId();
}
