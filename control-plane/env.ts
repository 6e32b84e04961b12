import { UsageError } from '../shared/cli/args.js';

/**
 * A number from the environment: the default when unset or empty, else within [min, max] (and a
 * whole number when `integer`), or a UsageError naming the variable.
 */
export function envNumber(name: string, dflt: number, min: number, max: number, integer = false): number {
  const raw = process.env[name];
  if (raw === undefined || raw === '') return dflt;
  const n = Number(raw);
  if (!Number.isFinite(n) || n < min || n > max || (integer && !Number.isInteger(n))) {
    throw new UsageError(`${name}="${raw}" must be a ${integer ? 'whole number' : 'number'} between ${min} and ${max}`);
  }
  return n;
}
