/**
 * The control plane's sign-in cookie, and what the proxy needs to keep it away from apps.
 *
 * The cookie is scoped to `/api` (control-plane/auth/plugin.ts). Where the API and the proxy's
 * `/apps/{host}/` path form share a host name (an IP address or localhost: browsers send cookies
 * whatever the port), an app reached that way must neither receive the cookie (an older one set
 * for `/`) nor set one of that name (a session of the app's choosing for the API): the proxy
 * drops both on `/apps/` requests only (proxy/server/request-headers.ts, response.ts).
 */
export const SESSION_COOKIE = 'berth_session';

/** Does this Set-Cookie value set a cookie named `name`? (names are compared as browsers do: trimmed, case-sensitive) */
export function setsCookie(setCookie: string, name: string): boolean {
  return setCookie.includes('=') && pairName(setCookie.split(';', 1)[0]) === name;
}

/** A Cookie header without the pairs named `name` ('' when nothing is left). */
export function withoutCookie(header: string, name: string): string {
  if (!header.includes(name)) return header;
  return header.split(';').filter((p) => pairName(p) !== name).map((p) => p.trim()).filter((p) => p !== '').join('; ');
}

/** How many pairs named `name` a Cookie header holds (more than one: a second one was planted). */
export function cookieCount(header: string | undefined, name: string): number {
  if (header === undefined || !header.includes(name)) return 0;
  return header.split(';').filter((p) => pairName(p) === name).length;
}

/** A cookie pair's (or Set-Cookie value's) name as browsers read it: before the first `=`, trimmed. */
function pairName(pair: string): string {
  const eq = pair.indexOf('=');
  return (eq === -1 ? pair : pair.slice(0, eq)).trim();
}
