/**
 * The rules for an app's environment variables, one copy for the control plane
 * (control-plane/images/env.ts) and `berth deploy --env` (checked before anything is packed).
 */

/** Set by berth in every container (as Cloud Run sets PORT, K_SERVICE, K_REVISION, K_CONFIGURATION). */
export const RESERVED_ENV = ['PORT', 'K_SERVICE', 'K_REVISION', 'K_CONFIGURATION'] as const;

export const ENV_LIMITS = { vars: 200, nameLength: 128, valueBytes: 32 * 1024, totalBytes: 64 * 1024 } as const;

const NAME = /^[A-Za-z_][A-Za-z0-9_]*$/;

/** Why `name` cannot be an environment variable's name, or null. */
export function envNameProblem(name: string): string | null {
  if (!NAME.test(name)) return 'must be letters, digits and "_", not starting with a digit';
  if (name.length > ENV_LIMITS.nameLength) return `must be at most ${ENV_LIMITS.nameLength} characters`;
  if ((RESERVED_ENV as readonly string[]).includes(name.toUpperCase())) return 'is set by berth in every container';
  return null;
}

/**
 * Why a set of variables cannot be an app's environment (a value too long or holding NUL, too
 * many, too large in all), or null. Names are envNameProblem's.
 */
export function envSetProblem(env: ReadonlyMap<string, string>): string | null {
  let total = 0;
  for (const [name, value] of env) {
    if (value.includes('\0')) return `the value of ${name} contains a NUL byte, which no environment can hold`;
    const bytes = Buffer.byteLength(value);
    if (bytes > ENV_LIMITS.valueBytes) return `the value of ${name} is longer than ${ENV_LIMITS.valueBytes} bytes`;
    total += Buffer.byteLength(name) + bytes + 2;
  }
  if (env.size > ENV_LIMITS.vars) return `${env.size} variables; at most ${ENV_LIMITS.vars}`;
  if (total > ENV_LIMITS.totalBytes) return `the variables take ${total} bytes; at most ${ENV_LIMITS.totalBytes}`;
  return null;
}
