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
/**
 * The control plane's device cookie (control-plane/auth/device.ts), scoped to `/api/auth`: an app
 * reached by `/apps/{host}/` must not set one either (a planted one, sent first for a longer path,
 * would hide the owner's).
 */
export const DEVICE_COOKIE = 'berth_device';

/**
 * The name of the cookie a Set-Cookie value sets, as browsers read it (trimmed, case-sensitive),
 * or null when it has none (no `=` before the first `;`).
 */
export function setCookieName(setCookie: string): string | null {
  const eq = setCookie.indexOf('=');
  const semi = setCookie.indexOf(';');
  return eq === -1 || (semi !== -1 && semi < eq) ? null : setCookie.slice(0, eq).trim();
}

/**
 * An app may not set this on `/apps/{host}/` (proxy/server/response.ts): a cookie of the control
 * plane's names, or a nameless one. A browser keeps `Set-Cookie: berth_session; Path=/api` and
 * `=berth_session=x` as cookies with an empty name and sends their value alone — `berth_session`,
 * `berth_session=x` — which the API reads as a second session cookie (a lockout) or a planted one.
 * A nameless cookie has no other use (RFC 6265 names are tokens).
 */
export function platformCookie(setCookie: string): boolean {
  const name = setCookieName(setCookie);
  return name === null || name === '' || name === SESSION_COOKIE || name === DEVICE_COOKIE;
}

/** A Cookie header without the pairs named `name` ('' when nothing is left). */
export function withoutCookie(header: string, name: string): string {
  if (!header.includes(name)) return header;
  return header.split(';').filter((p) => pairName(p) !== name).map((p) => p.trim()).filter((p) => p !== '').join('; ');
}

/** How many pairs named `name` a Cookie header holds (more than one: a second one was planted). */
export function cookieCount(header: string | undefined, name: string): number {
  return cookieValues(header, name).length;
}

/** The values of every pair named `name` in a Cookie header, in order. */
export function cookieValues(header: string | undefined, name: string): string[] {
  if (header === undefined || !header.includes(name)) return [];
  const out: string[] = [];
  for (const p of header.split(';')) {
    if (pairName(p) !== name) continue;
    const v = p.slice(p.indexOf('=') + 1).trim();
    out.push(v.length >= 2 && v.startsWith('"') && v.endsWith('"') ? v.slice(1, -1) : v);
  }
  return out;
}

/** A cookie pair's (or Set-Cookie value's) name as browsers read it: before the first `=`, trimmed. */
function pairName(pair: string): string {
  const eq = pair.indexOf('=');
  return (eq === -1 ? pair : pair.slice(0, eq)).trim();
}
