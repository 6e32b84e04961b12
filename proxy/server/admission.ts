/**
 * Admission: what the proxy refuses before it picks an endpoint, shared by HTTP and WebSocket.
 *
 * A request is forwarded only when the upstream will see exactly what the client sent. Anything
 * ambiguous (two Content-Lengths, a Transfer-Encoding we would have to interpret, two Hosts, a
 * Host with userinfo or a path) is a 400 with `x-berth-error`, answered by the proxy, so it can
 * never reach an endpoint, never count against its circuit breaker and never be smuggled.
 *
 * Byte fidelity: uWebSockets.js hands header values, the URL and the query to JS as strings
 * decoded from UTF-8, while the upstream client writes strings as Latin-1 (one char, one byte).
 * Values that are plain printable ASCII (all real traffic) pass untouched after one scan; any
 * other value is re-encoded to the bytes the client sent (`Buffer.from(v, 'utf8')` read back as
 * Latin-1), or refused when that is impossible: a U+FFFD means the client's bytes were not UTF-8
 * and uWS has already replaced them; control characters and DEL are never forwardable.
 *
 * Hot path cost: one regex test per header value and one for the path; no allocation unless a
 * value is non-ASCII.
 */

/** Anything but TAB and printable ASCII (SP..~) needs a closer look. */
const NOT_PLAIN_VALUE = /[^\t\x20-\x7e]/;
/** Control characters (but TAB) and DEL can never be forwarded. */
const CONTROL = /[\x00-\x08\x0a-\x1f\x7f]/;
/** Outside visible ASCII in a request target (no SP, no controls, no DEL). */
const NOT_PLAIN_TARGET = /[^\x21-\x7e]/;
const CONTROL_OR_SPACE = /[\x00-\x20\x7f]/;

/**
 * A header value as the Latin-1 string whose bytes are what the client sent, or null when it
 * cannot be forwarded faithfully.
 */
export function forwardableValue(v: string): string | null {
  if (!NOT_PLAIN_VALUE.test(v)) return v;
  return reencode(v, CONTROL);
}

/** The request target (path and query) as Latin-1 bytes as sent, or null when impossible. */
export function forwardableTarget(t: string): string | null {
  if (!NOT_PLAIN_TARGET.test(t)) return t;
  return reencode(t, CONTROL_OR_SPACE);
}

function reencode(v: string, forbidden: RegExp): string | null {
  if (forbidden.test(v) || v.includes('\ufffd')) return null;
  return Buffer.from(v, 'utf8').toString('latin1');
}

/** Content-Length: 1–15 decimal digits (what the upstream client and every server parse alike). */
export function validContentLength(v: string): boolean {
  const n = v.length;
  if (n === 0 || n > 15) return false;
  for (let i = 0; i < n; i++) {
    const c = v.charCodeAt(i);
    if (c < 48 || c > 57) return false;
  }
  return true;
}

/** The only request Transfer-Encoding the proxy forwards: `chunked` (any case, optional spaces). */
export function validTransferEncoding(v: string): boolean {
  return v.length >= 7 && v.trim().toLowerCase() === 'chunked';
}

/**
 * Is this a Host (or `/apps/{host}` segment) of the form `host[:port]`? Host is a DNS name
 * (letters, digits, `-`, `_`, `.`) or a bracketed IPv6/IPvFuture literal; port is 1–5 digits.
 * Userinfo, paths, `#`, `?`, schemes, spaces and non-ASCII bytes are refused (browsers send IDNs
 * as punycode).
 */
export function validHost(raw: string): boolean {
  const n = raw.length;
  if (n === 0 || n > 261) return false;
  let i = 0;
  if (raw.charCodeAt(0) === 91 /* [ */) {
    const close = raw.indexOf(']');
    if (close < 3) return false;
    for (i = 1; i < close; i++) {
      const c = raw.charCodeAt(i);
      const hex = (c >= 48 && c <= 58) || (c >= 97 && c <= 102) || (c >= 65 && c <= 70) || c === 46;
      if (!hex) return false;
    }
    i = close + 1;
    if (i === n) return true;
  } else {
    for (; i < n; i++) {
      const c = raw.charCodeAt(i);
      if (c === 58 /* : */) break;
      const ok = (c >= 97 && c <= 122) || (c >= 65 && c <= 90) || (c >= 48 && c <= 57) || c === 45 || c === 46 || c === 95;
      if (!ok) return false;
    }
    if (i === 0) return false;
    if (i === n) return true;
  }
  // ":" port
  if (raw.charCodeAt(i) !== 58) return false;
  const digits = n - i - 1;
  if (digits < 1 || digits > 5) return false;
  for (i++; i < n; i++) {
    const c = raw.charCodeAt(i);
    if (c < 48 || c > 57) return false;
  }
  return true;
}

/** Why a request was refused at admission: the `x-berth-error` code and a message. */
export const REFUSALS = {
  bad_host: 'the Host must be host[:port] (no userinfo, path, scheme or fragment)',
  duplicate_host: 'the request has more than one Host header',
  bad_content_length: 'Content-Length must be one decimal number, sent once',
  bad_transfer_encoding: 'only "Transfer-Encoding: chunked" is accepted, without Content-Length',
  bad_header_value: 'a header value has bytes the proxy cannot forward as sent (control characters, DEL or invalid UTF-8)',
  bad_request_target: 'the request target has bytes the proxy cannot forward as sent (control characters, DEL or invalid UTF-8)',
} as const;
export type Refusal = keyof typeof REFUSALS;
