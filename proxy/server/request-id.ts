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
