/**
 * Request headers of a workload that may carry credentials for the tenant's app are never shown
 * back: the API's answers (and the stored config) and the reports of `berth load` keep their names
 * with the value "[redacted]"; only the run itself sends the real values.
 */

export const REDACTED = '[redacted]';

/**
 * Authorization, Proxy-Authorization, Cookie, Set-Cookie, and any name containing auth, token,
 * secret, key, cookie, passw(ord), session or credential (X-Api-Key, X-Auth-Token, X-Session-Id…).
 * Migration 013 applies the same rule in SQL to rows stored before.
 */
export const SENSITIVE_HEADER = /auth|token|secret|key|cookie|passw|session|credential/i;

export const isSensitiveHeader = (name: string): boolean => SENSITIVE_HEADER.test(name);

/** The headers with the values of sensitive ones replaced (undefined stays undefined). */
export function redactHeaders<T extends Record<string, string> | undefined>(headers: T): T {
  if (headers === undefined || headers === null || typeof headers !== 'object') return headers;
  return Object.fromEntries(Object.entries(headers).map(([k, v]) => [k, isSensitiveHeader(k) ? REDACTED : v])) as T;
}
