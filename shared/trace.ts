/**
 * W3C Trace Context (https://www.w3.org/TR/trace-context/): the proxy keeps or starts a
 * `traceparent` on every request and forwards it; both sides log its trace id.
 */

const TRACEPARENT = /^00-[0-9a-f]{32}-[0-9a-f]{16}-[0-9a-f]{2}$/;
const ZERO32 = '00000000000000000000000000000000';
const ZERO16 = '0000000000000000';

/** A client's `traceparent` worth keeping: version 00 shape, lowercase hex, ids not all zero. */
export function validTraceparent(v: string): boolean {
  return v.length === 55 && TRACEPARENT.test(v) && !v.startsWith(ZERO32, 3) && !v.startsWith(ZERO16, 36);
}

/** The trace id of a valid `traceparent`, else undefined. */
export function traceIdOf(v: string | string[] | undefined): string | undefined {
  return typeof v === 'string' && validTraceparent(v) ? v.slice(3, 35) : undefined;
}
