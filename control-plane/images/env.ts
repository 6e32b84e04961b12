import { envNameProblem, envSetProblem } from '../../shared/env-vars.js';
import { badRequest } from '../http/errors.js';

/**
 * An app's environment variables, per revision (Cloud Run's `--update-env-vars`,
 * `--remove-env-vars`, `--clear-env-vars`). A new revision starts from the previous revision's
 * set, unless the upload clears it, then applies the upload's changes:
 *
 * - `env`: a JSON object of names to values, set or replaced;
 * - `env_unset`: a JSON array of names to remove;
 * - `env_clear`: `true` to start from nothing instead of the previous revision's set.
 *
 * The values reach the app's containers only; the API shows names (`env_names`), never values,
 * and events never carry them. Names berth sets itself are refused.
 */

export type Env = Record<string, string>;

function parseJson(field: string, raw: string): unknown {
  try {
    return JSON.parse(raw);
  } catch {
    throw badRequest(`field "${field}" is not valid JSON`);
  }
}

/**
 * The new revision's environment: `previous` (the last revision's, unless `env_clear`) with the
 * upload's `env_unset` removed and `env` set. Throws a 400 naming the field and the variable.
 */
export function nextEnv(previous: Env, fields: { env?: string; env_unset?: string; env_clear?: boolean }): Env {
  // a Map: a name like "__proto__" is a name like any other
  const out = new Map<string, string>(fields.env_clear ? [] : Object.entries(previous));
  if (fields.env_unset !== undefined) {
    const names = parseJson('env_unset', fields.env_unset);
    if (!Array.isArray(names) || names.some((n) => typeof n !== 'string')) throw badRequest('field "env_unset" must be a JSON array of names');
    for (const n of names as string[]) out.delete(n);
  }
  if (fields.env !== undefined) {
    const set = parseJson('env', fields.env);
    if (set === null || typeof set !== 'object' || Array.isArray(set)) throw badRequest('field "env" must be a JSON object of names to string values');
    for (const [name, value] of Object.entries(set as Record<string, unknown>)) {
      const problem = envNameProblem(name);
      if (problem) throw badRequest(`field "env": the name "${name.slice(0, 80)}" ${problem}`);
      if (typeof value !== 'string') throw badRequest(`field "env": the value of ${name} must be a string`);
      out.set(name, value);
    }
  }
  const problem = envSetProblem(out);
  if (problem !== null) throw badRequest(`field "env": ${problem}`);
  const names = [...out.keys()].sort();
  // stored as JSONB and spread into the container's environment: own keys only, no prototype
  const env: Env = Object.create(null) as Env;
  for (const k of names) env[k] = out.get(k)!;
  return env;
}

/** A container's environment: the revision's own variables, then what berth sets. */
export function containerEnv(img: { env: Env | null; container_port: number; app_hostname: string | null; revision: number | null }): Env {
  const service = img.app_hostname ?? '';
  return {
    ...(img.env ?? {}),
    PORT: String(img.container_port),
    K_SERVICE: service,
    K_CONFIGURATION: service,
    K_REVISION: `${service}-${String(img.revision ?? 0).padStart(5, '0')}`,
  };
}
