import type { HttpRequest } from 'uWebSockets.js';
import { newRequestId, validRequestId } from './request-id.js';

/**
 * Where a request is going, for HTTP and WebSocket alike: `/apps/{host}/{path}` (access without
 * DNS) or the Host header, plus the request id (kept when sane, else created).
 * One reused object filled by readTarget(): nothing allocated per request beyond the strings.
 *
 * `/apps/{host}/` is read from the path only on the proxy's own address (an IP address,
 * `localhost`, `--apps-path-hosts`): on any other Host the path is that Host's (admission.ts
 * `pathFormHost` decides and puts `hostHeader` and `fullPath` back). Otherwise any app could be
 * served in another app's origin — `https://victim.example.com/apps/evil.example.com/` would run
 * evil's script as victim's — or in the origin of a name an app claims later.
 */
export const target = { path: '', rawHost: '', requestId: '', hostHeader: '', fullPath: '', viaPath: false };

export function readTarget(req: HttpRequest): void {
  let path = req.getUrl();
  let rawHost = req.getHeader('host');
  target.hostHeader = '';
  target.viaPath = false;
  if (path.length > 6 && path.charCodeAt(1) === 97 && path.startsWith('/apps/')) {
    target.hostHeader = rawHost;
    target.fullPath = path;
    target.viaPath = true;
    const slash = path.indexOf('/', 6);
    rawHost = slash === -1 ? path.slice(6) : path.slice(6, slash);
    path = slash === -1 ? '/' : path.slice(slash);
  }
  target.path = path;
  target.rawHost = rawHost;
  const ridIn = req.getHeader('x-request-id');
  target.requestId = ridIn !== '' && validRequestId(ridIn) ? ridIn : newRequestId();
}

/** The request came as `/apps/{host}/…` with a Host that names an app: the Host and the whole path are the target after all. */
export function keepHostHeader(): void {
  target.rawHost = target.hostHeader;
  target.path = target.fullPath;
  target.hostHeader = '';
  target.viaPath = false;
}
