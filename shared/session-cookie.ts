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
  const eq = setCookie.indexOf('=');
  return eq !== -1 && setCookie.slice(0, eq).trim() === name;
}

/** A Cookie header without the pairs named `name` ('' when nothing is left). */
export function withoutCookie(header: string, name: string): string {
  if (!header.includes(name)) return header;
  const kept: string[] = [];
  for (const pair of header.split(';')) {
    const eq = pair.indexOf('=');
    if ((eq === -1 ? pair : pair.slice(0, eq)).trim() !== name) kept.push(pair.trim());
  }
  return kept.filter((p) => p !== '').join('; ');
}

/** How many pairs named `name` a Cookie header holds (more than one: a second one was planted). */
export function cookieCount(header: string | undefined, name: string): number {
  if (header === undefined || !header.includes(name)) return 0;
  let n = 0;
  for (const pair of header.split(';')) {
    const eq = pair.indexOf('=');
    if ((eq === -1 ? pair : pair.slice(0, eq)).trim() === name) n++;
  }
  return n;
}
