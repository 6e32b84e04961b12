import type { AnySchemaObject, FuncKeywordDefinition, Options, SchemaValidateFunction } from 'ajv';
import type { FastifyInstance } from 'fastify';

/**
 * Numbers in request schemas. JavaScript numbers are not the database's integers:
 * `1e400` and `"Infinity"` are numbers to JS (and ajv's coercion of query strings, path params
 * and multipart fields turns "1e400" into Infinity *after* its own type check, so `minimum` /
 * `maximum` are then skipped), ids past 2^53 are not exact, and an INTEGER column stops at
 * 2^31 − 1. Every integer a client sends therefore goes through `int(min, max)` (or `ID`) with
 * explicit bounds, and every integer or number in every route schema also gets the `finite`
 * keyword (added by `hardenNumberSchemas`, so a route written without the helpers is covered
 * too): not finite, or not a safe integer where an integer is expected → 400.
 */

/** Largest id a client may send: bigint columns hold more, but JS numbers are exact only up to here. */
export const MAX_ID = Number.MAX_SAFE_INTEGER;
/** Postgres INTEGER (int4). */
export const INT4_MAX = 2_147_483_647;

/** An integer between `min` and `max` (both inclusive), finite and exact. */
export const int = (min: number, max: number, extra: Record<string, unknown> = {}) =>
  ({ type: 'integer', minimum: min, maximum: max, finite: true, ...extra }) as const;

/** A row id (bigint, 1 … 2^53 − 1). */
export const ID = int(1, MAX_ID);

/** `{ params: { <name>: ID } }` for `/:id` style routes. */
export const idParams = (name = 'id') =>
  ({ type: 'object', required: [name], properties: { [name]: ID } }) as const;

/**
 * The ajv keyword `finite: true`: the (possibly coerced) value is a finite number, and a safe
 * integer when the schema's type is `integer`. Non-numbers are left to `type`.
 */
const finite: SchemaValidateFunction = (on: boolean, data: unknown, parent?: AnySchemaObject) => {
  if (!on || typeof data !== 'number') return true;
  const t: unknown = parent?.type;
  const wantsInt = t === 'integer' || (Array.isArray(t) && t.includes('integer') && !t.includes('number'));
  if (wantsInt ? Number.isSafeInteger(data) : Number.isFinite(data)) return true;
  finite.errors = [{ keyword: 'finite', message: wantsInt ? `must be a whole number between -${MAX_ID} and ${MAX_ID}` : 'must be a finite number', params: {} }];
  return false;
};
export const finiteKeyword: FuncKeywordDefinition = { keyword: 'finite', schemaType: 'boolean', errors: true, validate: finite };

/** The ajv options every validator of the control plane uses on top of its own. */
export const numberAjvOptions: Pick<Options, 'strictNumbers' | 'keywords'> = { strictNumbers: true, keywords: [finiteKeyword] };

const isNumeric = (t: unknown) => t === 'integer' || t === 'number' || (Array.isArray(t) && (t.includes('integer') || t.includes('number')));

/** A copy of `schema` with `finite: true` on every integer or number in it. */
export function hardenNumbers<T>(schema: T): T {
  if (Array.isArray(schema)) return schema.map((s) => hardenNumbers(s)) as T;
  if (!schema || typeof schema !== 'object') return schema;
  const out: Record<string, unknown> = {};
  for (const [k, v] of Object.entries(schema as Record<string, unknown>)) {
    // `enum`/`const`/`default`/`examples` hold data, not schemas
    out[k] = k === 'enum' || k === 'const' || k === 'default' || k === 'examples' ? v : hardenNumbers(v);
  }
  if (isNumeric(out.type) && out.finite === undefined) out.finite = true;
  return out as T;
}

/** Every route registered after this gets `hardenNumbers` applied to its params, query, body and headers. */
export function hardenNumberSchemas(app: FastifyInstance): void {
  app.addHook('onRoute', (route) => {
    const s = route.schema as Record<string, unknown> | undefined;
    if (!s) return;
    const next: Record<string, unknown> = { ...s };
    for (const part of ['params', 'querystring', 'query', 'body', 'headers']) if (s[part]) next[part] = hardenNumbers(s[part]);
    route.schema = next;
  });
}

/** `:host` path parameter of the app routes (normalised by the handler). */
export const hostParams = {
  type: 'object', required: ['host'], additionalProperties: false,
  properties: { host: { type: 'string', minLength: 1, maxLength: 300 } },
} as const;
