/**
 * Building blocks of response schemas (`schema.response` of a route).
 *
 * A response schema documents the answer in the OpenAPI document (/docs/json) and is what
 * Fastify serializes with (fast-json-stringify): only the properties it declares are sent, so a
 * column added to a row later, or a hash a handler should not have passed on, does not reach
 * clients. So declare every property a handler sends (an undeclared one is silently dropped) and
 * nothing it does not; `required` only for what is always there (fast-json-stringify fails the
 * answer when a required property is missing). No `finite` keyword here (http/schemas.ts): that
 * is for what clients send.
 */

/** An ISO 8601 timestamp (handlers send `toISOString()`). */
export const dateTime = { type: 'string', format: 'date-time' } as const;
export const nullableDateTime = { type: ['string', 'null'], format: 'date-time' } as const;
export const nullableString = { type: ['string', 'null'] } as const;
export const nullableInteger = { type: ['integer', 'null'] } as const;
/** A row id as a JSON number (bigint columns, exact up to 2^53). */
export const idSchema = { type: 'integer', minimum: 1 } as const;

/** What every error answers: `{"error":{"code","message","requestId"}}` (http/errors.ts, `sendError`). */
export const errorSchema = {
  type: 'object',
  description: 'An error: a stable snake_case code, a message for people, and the request id (also in x-request-id)',
  required: ['error'],
  properties: {
    error: {
      type: 'object',
      required: ['code', 'message', 'requestId'],
      properties: {
        code: { type: 'string', description: 'e.g. invalid_request, unauthorized, not_found, conflict, too_many_requests' },
        message: { type: 'string' },
        requestId: { type: 'string' },
      },
    },
  },
} as const;

/** `4xx`: the error shape (validation errors, ApiError, auth failures all go through the error handler). */
export const errorResponses = { '4xx': errorSchema } as const;

/** `204` with no body. */
export const noContent = { 204: { type: 'null', description: 'Done; no body' } } as const;

/**
 * `{ type: 'object', required: <every key>, properties }`: an answer whose properties are always
 * all there. `optional` names the ones a handler may leave out.
 */
export function object<P extends Record<string, unknown>>(properties: P, optional: readonly (keyof P & string)[] = [], extra: Record<string, unknown> = {}) {
  return {
    type: 'object',
    required: Object.keys(properties).filter((k) => !optional.includes(k)),
    properties,
    ...extra,
  } as const;
}
