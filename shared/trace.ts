/**
 * W3C Trace Context (https://www.w3.org/TR/trace-context/): the proxy keeps or starts a
 * `traceparent` on every request and forwards it; both sides log its trace id.
 */

/** A client's `traceparent` worth keeping: version 00 shape, lowercase hex, ids not all zero. */
export function validTraceparent(v: string): boolean {
  if (v.length !== 55 || v.charCodeAt(0) !== 0x30 || v.charCodeAt(1) !== 0x30 || v[2] !== '-' || v[35] !== '-' || v[52] !== '-') return false;
  let traceZero = true;
  let spanZero = true;
  for (let i = 3; i < 55; i++) {
    if (i === 35 || i === 52) continue;
    const c = v.charCodeAt(i);
    if (!((c >= 0x30 && c <= 0x39) || (c >= 0x61 && c <= 0x66))) return false;
    if (c !== 0x30) { if (i < 35) traceZero = false; else if (i < 52) spanZero = false; }
  }
  return !traceZero && !spanZero;
}

/** The trace id of a valid `traceparent`, else undefined. */
export function traceIdOf(v: string | string[] | undefined): string | undefined {
  return typeof v === 'string' && validTraceparent(v) ? v.slice(3, 35) : undefined;
}
