import type { HttpResponse } from 'uWebSockets.js';

/**
 * The client's address for X-Forwarded-For. uWS 20.30 builds a new ArrayBuffer either way; the
 * binary form skips its sprintf and the JS side formats IPv4 (and IPv4-mapped IPv6, what a
 * dual-stack listener reports) from four bytes — measured at about 0.5 µs less per request than
 * getRemoteAddressAsText(). Real IPv6 peers take the text path.
 */
export function peerAddress(res: HttpResponse): string {
  const b = new Uint8Array(res.getRemoteAddress());
  if (b.length === 4) return ipv4(b[0], b[1], b[2], b[3]);
  if (b.length === 16 && b[10] === 0xff && b[11] === 0xff && b[0] === 0 && b[1] === 0 && b[2] === 0 && b[3] === 0 &&
    b[4] === 0 && b[5] === 0 && b[6] === 0 && b[7] === 0 && b[8] === 0 && b[9] === 0) {
    return ipv4(b[12], b[13], b[14], b[15]);
  }
  return Buffer.from(res.getRemoteAddressAsText()).toString('latin1');
}

/** IPv4 text by address, so a client's address is formatted once, not per request (bounded). */
const formatted = new Map<number, string>();
const FORMATTED_MAX = 16384;

function ipv4(a: number, b: number, c: number, d: number): string {
  const key = ((a << 24) | (b << 16) | (c << 8) | d) >>> 0;
  let s = formatted.get(key);
  if (s === undefined) {
    if (formatted.size >= FORMATTED_MAX) formatted.clear();
    s = a + '.' + b + '.' + c + '.' + d;
    formatted.set(key, s);
  }
  return s;
}
