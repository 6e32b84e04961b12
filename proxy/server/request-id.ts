import { randomBytes } from 'node:crypto';

// Process-unique prefix + counter: unique across restarts and workers without a syscall per request.
const prefix = randomBytes(6).toString('hex') + '-';
let counter = 0;

export function newRequestId(): string {
  return prefix + (++counter).toString(36);
}

/** Accept a client-supplied id only when it is short and printable. */
export function validRequestId(v: string): boolean {
  if (v.length === 0 || v.length > 200) return false;
  for (let i = 0; i < v.length; i++) {
    const c = v.charCodeAt(i);
    if (c < 0x21 || c > 0x7e) return false;
  }
  return true;
}

// W3C Trace Context: `00-<trace-id 32 hex>-<parent-id 16 hex>-<flags 2 hex>`, lowercase.
// Made like request ids: a random per-process part and a 32-bit counter (the random part is
// renewed when it wraps), no syscall per request.
let tracePrefix = randomBytes(12).toString('hex');
const spanPrefix = randomBytes(4).toString('hex');
let traceCounter = 0;

/** A new `traceparent` (sampled flag set): this proxy starts the trace. */
export function newTraceparent(): string {
  if (++traceCounter > 0xffffffff) {
    traceCounter = 1;
    tracePrefix = randomBytes(12).toString('hex');
  }
  const n = traceCounter.toString(16);
  const c = '00000000'.slice(n.length) + n;
  return '00-' + tracePrefix + c + '-' + spanPrefix + c + '-01';
}

export { validTraceparent } from '../../shared/trace.js';
